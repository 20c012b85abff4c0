"""The worker's heap is settled once it is ready (``tasks/heap.py``)."""

from __future__ import annotations

import gc


def test_a_ready_worker_freezes_its_start_up_heap_and_collects_young_objects_less_often() -> None:
    from tasks.heap import OLDER, YOUNG, settle

    before = gc.get_threshold()
    try:
        settle()
        assert gc.get_threshold() == (YOUNG, OLDER, OLDER)
        assert gc.get_freeze_count() > 10_000  # the modules, classes and functions a test process has loaded
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
