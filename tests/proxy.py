"""A TCP proxy on loopback that a test cuts and restores: a server behind a network that fails.

Put it between a client and a real server (PostgreSQL on 127.0.0.1:5432): while it is cut, every connection
it carried is closed and every new one is closed as soon as it is accepted, as a server that went away looks
to its clients; restored, it carries new connections again. :meth:`TcpProxy.cut_after` cuts in the middle of
what a client sends (a statement half sent). Threads, one per direction of each connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` until :meth:`cut`, and again after :meth:`restore`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._budget: int | None = None  # bytes the clients may still send before the cut
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}")
        self._thread.start()

    def cut(self) -> None:
        """Close every connection carried, and refuse new ones (accepted, then closed at once)."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def cut_after(self, sent: int) -> None:
        """Cut once the clients have sent ``sent`` more bytes (on the connections carried and new ones)."""
        with self._lock:
            self._budget = sent

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            self._budget = None

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener closed
                return
            with self._lock:
                cut = self._cut
            if cut:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, outbound), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while data := source.recv(65536):
                if outbound and self._spend(len(data)):
                    sink.sendall(data[: len(data) // 2])  # half of what it sent arrives, then the line goes
                    self.cut()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((source, sink))
            _close(source)
            _close(sink)

    def _spend(self, size: int) -> bool:
        """Count bytes a client sent; whether they reach the budget of :meth:`cut_after`."""
        with self._lock:
            if self._budget is None:
                return False
            self._budget -= size
            return self._budget <= 0


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
