"""One event loop per process, on a thread of its own, for connectors that send a batch's calls at once.

The delivery engine runs in worker threads; a connector that can batch (the webhook) hands its batch's
coroutine here and waits for the results, so a hundred calls in flight cost one thread, not a hundred.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """The process's connector loop, started on first use (a daemon thread: it never holds up an exit)."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            threading.Thread(target=new.run_forever, name="connector-loop", daemon=True).start()
            _loop = new
        return _loop


def run(coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coroutine`` on the connector loop and wait for its result (from any thread but the loop's)."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop()).result(timeout)
