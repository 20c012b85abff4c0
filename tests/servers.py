"""Real servers on loopback for tests: an ASGI app under uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from schemas.webhook import SignatureError, verify


class _Server(uvicorn.Server):
    """uvicorn's server, whose loop wakes when :meth:`stop` is called instead of at its next 0.1 s tick: a test's
    servers stop at once (the suite stops hundreds of them)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # True once should_exit is set
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def stop(self) -> None:
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(wake.set)


@contextmanager
def run_asgi(app: Any, *, startup_timeout: float = 10.0, shutdown_grace: int = 1) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for the duration of the block; yield its base URL.

    The socket is bound before the server starts, so the port cannot be taken in between.
    Requests still in flight at exit (a simulator hanging on purpose) get ``shutdown_grace``
    seconds before they are cancelled.
    """
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP,
    # and without it every request stalls ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=shutdown_grace,
    )
    # uvicorn leaves signal handling alone outside the main thread, so the runner keeps its Ctrl-C.
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start within {startup_timeout} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(timeout=startup_timeout + shutdown_grace)
        sock.close()


class SignedPushReceiver:
    """A relay stand-in for a simulator's pushes to ``path``: verifies the Standard Webhooks signature
    with ``secret``, records ``(webhook-id, JSON body, content-type)`` of each one, answers ``status``."""

    def __init__(self, path: str, secret: str, status: int = 200) -> None:
        self.secret = secret
        self.status = status
        self.received: list[tuple[str, Any, str]] = []
        self.rejected = 0
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.post(path)(self.receive)

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        try:
            msg_id = verify([self.secret], request.headers, body)
        except SignatureError:
            with self.lock:
                self.rejected += 1
            return Response(status_code=401)
        with self.lock:
            self.received.append((msg_id, json.loads(body), request.headers.get("content-type", "")))
        return Response(status_code=self.status)
