"""The worker's heap once it is ready: what start-up loaded is frozen out of the cyclic collector's reach.

A worker imports a great deal (Celery, SQLAlchemy, pydantic's models, every service's connector) and then allocates
fast: each batch makes rows, models, requests and answers by the thousand. With CPython's default thresholds (700
allocations a young collection, each tenth an older one), the collector ran ~290 young, 27 middle and 2 full
collections per 3,000 deliveries, the full ones walking every object start-up made. :func:`gc.freeze` moves those
objects to a generation the collector never walks, and a young generation of :data:`YOUNG` objects lets most of a
batch's short-lived ones die by their reference counts before any collection looks at them. Measured with the engine
alone on 3,000 deliveries (see ``bench/README.md``): 1.32–1.42 ms of CPU per delivery with the defaults, 1.02–1.29 ms
frozen with these thresholds, the same peak RSS.
"""

from __future__ import annotations

import gc
from typing import Any

from celery.signals import worker_ready

YOUNG = 10_000  # allocations (less deallocations) that start a young collection; CPython's default is 700
OLDER = 10  # young collections per middle one, and middle ones per full one (CPython's defaults)


def settle() -> None:
    """Collect once, freeze what is left (start-up's objects), and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, OLDER, OLDER)


@worker_ready.connect
def _settle(**_: Any) -> None:
    settle()
