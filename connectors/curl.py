"""A batch of HTTP POSTs at once on libcurl's multi interface (pycurl): the webhook connector's batch path.

A batch runs in the calling thread: one ``CurlMulti`` drives its calls on libcurl's socket interface (its socket
callback names the sockets to watch and for what, its timer callback when to call it back; the loop waits on those
sockets in ``poll()`` until one is ready or the timer is due, then hands libcurl the ready sockets with
``socket_action`` and reads the ended calls with ``info_read``), and keeps their connections in its cache for the
next batch. Not ``select()`` (pycurl's ``CurlMulti.select``, on ``curl_multi_fdset``): it cannot watch a descriptor
numbered ``FD_SETSIZE`` (1024) or more, which a worker with that many files open (its database and Redis pools, the
connections cached for several destinations) gives its sockets; libcurl leaves those out of the set, and the loop
then sleeps on the sockets it can watch until the next timer (a second), or spins when it has none. The client
holds a few idle multis; a batch takes one under a lock and gives it back after, so batches from different threads
never share a multi, and each multi reuses its connections and its easy handles (and its watch of their sockets).

Why libcurl: for batches of 30 signed POSTs to a local uvicorn server, on a 2-core machine, aiohttp spent
340–480 µs of the worker's CPU per request, libcurl's multi interface through pycurl 120–136 µs.

Transport errors, by libcurl's code, as :func:`connectors.base.map_transport_errors` classes httpx's:

======================================================  ==========  ============================
curl error                                              class       reason
======================================================  ==========  ============================
OPERATION_TIMEDOUT (the deadline, the connect timeout)  Retryable   ``timeout (…)``
(none: the read timeout, kept by the client's loop)     Retryable   ``timeout (nothing read …)``
COULDNT_CONNECT, COULDNT_RESOLVE_HOST/PROXY,            Retryable   ``connection failed (…)``
SEND_ERROR, RECV_ERROR, GOT_NOTHING, PARTIAL_FILE,
WEIRD_SERVER_REPLY, HTTP2, PROXY, SSL_CONNECT_ERROR,
PEER_FAILED_VERIFICATION (httpx: a ConnectError)
URL_MALFORMAT, UNSUPPORTED_PROTOCOL                     Permanent   ``bad destination URL: …``
any other                                               Retryable   ``HTTP transport error (…)``
======================================================  ==========  ============================
"""

from __future__ import annotations

import contextlib
import math
import select
import threading
import time
from collections.abc import Callable, Sequence

import certifi
import pycurl

from connectors.base import DeliveryError, Permanent, Retryable

USER_AGENT = "motcua-relay/0.1"
# Idle multis kept for the next batches (each with its connections); a batch finding none makes one.
IDLE_MULTIS = 4
# The loop's own stop, this long past the deadline, should libcurl not end a call at its TIMEOUT_MS.
_GRACE_SECONDS = 1.0
# How long to wait on the sockets when libcurl names no timeout (its documentation's suggestion).
_IDLE_WAIT_SECONDS = 1.0
# What poll() is asked to watch for libcurl's socket callback's ``what`` (POLL_IN, POLL_OUT, POLL_INOUT).
_WATCH = {pycurl.POLL_IN: select.POLLIN, pycurl.POLL_OUT: select.POLLOUT,
          pycurl.POLL_INOUT: select.POLLIN | select.POLLOUT}
# What socket_action is told of a socket by poll()'s revents: readable, writable, in error (hung up, or no longer
# an open descriptor, POLLNVAL), indexed by revents' bits below 64.
_ACTION = tuple(
    (pycurl.CSELECT_IN if revents & select.POLLIN else 0) | (pycurl.CSELECT_OUT if revents & select.POLLOUT else 0)
    | (pycurl.CSELECT_ERR if revents & (select.POLLERR | select.POLLHUP | select.POLLNVAL) else 0)
    for revents in range(64))

_TIMEOUT = {pycurl.E_OPERATION_TIMEDOUT}
_CONNECTION = {
    pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_SEND_ERROR,
    pycurl.E_RECV_ERROR, pycurl.E_GOT_NOTHING, pycurl.E_PARTIAL_FILE, pycurl.E_HTTP2, pycurl.E_SSL_CONNECT_ERROR,
    pycurl.E_PEER_FAILED_VERIFICATION,
    8,  # CURLE_WEIRD_SERVER_REPLY: httpx's RemoteProtocolError
    92,  # CURLE_HTTP2_STREAM
    97,  # CURLE_PROXY (libcurl 7.73): httpx's ProxyError
}
_BAD_URL = {pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL}


class Answer:
    """An HTTP answer as it came: its status, its header lines, its body (decoded from its Content-Encoding, which
    the headers still name). The lines are read when asked for: a delivered answer needs only its Content-Type.
    Only the last answer's count: a ``100 Continue`` or a proxy's CONNECT answer comes before it."""

    __slots__ = ("body", "lines", "status")

    def __init__(self, status: int, lines: list[bytes], body: bytes) -> None:
        self.status = status
        self.lines = lines
        self.body = body

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers in order, as ``(name, value)``."""
        found: list[tuple[str, str]] = []
        for line in self.lines:
            name, colon, value = line.partition(b":")
            if line.startswith(b"HTTP/"):
                found = []
            elif colon and name[:1] not in (b" ", b"\t"):
                found.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
            elif line[:1] in (b" ", b"\t") and found:  # a folded line (obsolete) goes on the previous header
                before = found[-1]
                found[-1] = (before[0], f"{before[1]} {line.strip().decode('latin-1')}")
        return found

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (in any case; its first line only, were it folded), ``None`` without
        one. Found in the joined lines, not by a loop over them: every delivered answer asks for its Content-Type."""
        text = b"".join(self.lines)
        lowered = b"\n" + text.lower()  # a line's start is after a "\n" in it, its text one byte earlier in text
        wanted = b"\n" + name.lower().encode("latin-1") + b":"
        at = lowered.find(wanted, max(0, lowered.rfind(b"\nhttp/")))
        if at < 0:
            return None
        start = at - 1 + len(wanted)
        return text[start:text.find(b"\n", start)].strip().decode("latin-1")


# One call of a batch has ended: its index, its answer or transport error, and how long it took (ms).
CallEnded = Callable[[int, Answer | DeliveryError, float], None]


def transport_error(code: int, message: str) -> DeliveryError:
    """libcurl's error ``code`` as the class and reason words httpx's path gives the same failure."""
    what = f"curl error {code}: {message}"
    if code in _TIMEOUT:
        return Retryable(f"timeout ({what})")
    if code in _CONNECTION:
        return Retryable(f"connection failed ({what})")
    if code in _BAD_URL:
        return Permanent(f"bad destination URL: {what}")
    return Retryable(f"HTTP transport error ({what})")


class _Call:
    """One request in flight: where its answer goes, and since when nothing has moved on it."""

    __slots__ = ("chunks", "index", "lines", "moved", "quiet_since")

    def __init__(self, index: int) -> None:
        self.index = index
        self.chunks: list[bytes] = []
        self.lines: list[bytes] = []
        self.moved = 0
        self.quiet_since: float | None = None

    def stalled(self, handle: pycurl.Curl, now: float, read: float) -> bool:
        """Whether nothing has moved on the call for ``read`` seconds since its request went out (before, while its
        connection is being made or it waits for one, the connect timeout and the deadline bound it)."""
        moved = (handle.getinfo(pycurl.REQUEST_SIZE) + handle.getinfo(pycurl.SIZE_UPLOAD_T)
                 + handle.getinfo(pycurl.HEADER_SIZE) + handle.getinfo(pycurl.SIZE_DOWNLOAD_T))
        if moved != self.moved:
            self.moved, self.quiet_since = moved, now
            return False
        return self.quiet_since is not None and now - self.quiet_since >= read


class _Watch:
    """The sockets a multi's libcurl asks to have watched, and when it wants its timer's call: its socket and timer
    callbacks. Kept with its multi as long as it lives, between batches too: the connections in its cache keep
    their sockets, and libcurl may ask to watch them (or stop) at any time, in ``socket_action`` as in
    ``remove_handle`` or ``close``. Holds nothing of the multi (which holds its callbacks): no cycle.

    The ``poll`` object's registrations are ``watched``, changed together: each change registers anew, a
    ``POLL_REMOVE`` unregisters. poll(), not epoll: a poll registration is a dict entry, an epoll one an
    ``epoll_ctl`` call, and libcurl changes a socket's watch about twice a request (in for the answer, removed).
    For batches of 30 signed POSTs to the local sandbox (``WebhookConnector.post_many``, 26 rounds of 40 batches,
    interleaved), poll() measured 202 µs of CPU a request (median; 174–262), epoll 210 (179–306), the select()
    loop before 219 (181–254): about 1.1 poll() calls a request, against 0.8 epoll_wait and 2.1 epoll_ctl. And no
    kernel-side set to fall out of step with it (epoll's keeps a registration by open file, not by number)."""

    __slots__ = ("due", "poller", "watched")

    def __init__(self) -> None:
        self.poller = select.poll()
        self.watched: dict[int, int] = {}  # descriptor: what it is watched for (POLLIN, POLLOUT)
        self.due: float | None = None  # when (monotonic) libcurl wants socket_action(SOCKET_TIMEOUT); None: never

    def socket(self, what: int, fd: int, multi: object, data: object) -> None:
        """libcurl's socket callback: watch ``fd`` for ``what``, or no more (``POLL_REMOVE``). Never raises (libcurl
        would end every transfer of the multi)."""
        if what == pycurl.POLL_REMOVE:
            if self.watched.pop(fd, None) is not None:
                self.poller.unregister(fd)
            return
        events = _WATCH.get(what, 0)
        if self.watched.get(fd) != events:
            self.watched[fd] = events
            self.poller.register(fd, events)

    def timer(self, ms: int) -> None:
        """libcurl's timer callback: call it back in ``ms`` (0: at once), or never (-1)."""
        self.due = None if ms < 0 else time.monotonic() + ms / 1000.0

    def forget(self, fd: int) -> None:
        """Stop watching ``fd``, which poll() says is no open descriptor (libcurl closed it unsaid): polled, it would
        answer at once, every time."""
        if self.watched.pop(fd, None) is not None:
            self.poller.unregister(fd)


class _Multi:
    """A ``CurlMulti`` (its connection cache), the easy handles it reuses, and its watch of its sockets."""

    __slots__ = ("handles", "multi", "watch")

    def __init__(self, connections: int) -> None:
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAXCONNECTS, connections)
        self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, connections)
        self.watch = _Watch()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self.watch.socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self.watch.timer)
        self.handles: list[pycurl.Curl] = []

    def close(self) -> None:
        for handle in self.handles:
            handle.close()
        self.handles.clear()
        self.multi.close()


class CurlBatchClient:
    """POSTs a batch at once, up to ``connections`` to a host per batch (the calls beyond wait for one), each
    connection given ``connect`` seconds to open and cut when the answer stalls ``read`` seconds (``None``: only
    the batch's deadline bounds them)."""

    def __init__(self, connections: int, connect: float | None, read: float | None,
                 user_agent: str = USER_AGENT) -> None:
        self.connections = max(1, connections)
        self.connect = connect
        self.read = read
        self.user_agent = user_agent
        self._cainfo = certifi.where()  # the bundle httpx verifies against, on the single path
        self._idle: list[_Multi] = []
        self._lock = threading.Lock()
        self._closed = False

    def post_many(
        self, url: str, requests: Sequence[tuple[bytes, dict[str, str]]], deadline: float,
        on_end: CallEnded | None = None, proxy: str | None = None,
    ) -> list[tuple[Answer | DeliveryError, float]]:
        """POST every ``(body, headers)`` to ``url`` at once, through ``proxy`` (``None``: directly, whatever the
        environment says), each ending by ``deadline`` seconds from now: in order, each answer (any status; no
        redirect followed) or transport error, and how long it took (ms). ``on_end(index, answer or error, ms)``
        is called in this thread as each ends; it must not raise (the batch would end with it)."""
        started = time.perf_counter()
        ended: list[tuple[Answer | DeliveryError, float] | None] = [None] * len(requests)

        def end(index: int, outcome: Answer | DeliveryError) -> None:
            took = (time.perf_counter() - started) * 1000.0
            ended[index] = outcome, took
            if on_end is not None:
                on_end(index, outcome, took)

        multi = self._take()
        calls: dict[pycurl.Curl, _Call] = {}
        try:
            target = url.encode("utf-8")
            timeouts = _ms(deadline), _ms(deadline if self.connect is None else min(self.connect, deadline))
            for index, (body, headers) in enumerate(requests):
                lines = _header_lines(headers)
                if isinstance(lines, DeliveryError):
                    end(index, lines)
                    continue
                handle = multi.handles.pop() if multi.handles else self._new_handle()
                call = calls[handle] = _Call(index)
                self._prepare(handle, call, target, body, lines, timeouts, proxy or "")
                multi.multi.add_handle(handle)
            self._drive(multi, calls, end, deadline)
        finally:
            for handle in calls:  # what a failure left in flight
                with contextlib.suppress(pycurl.error):
                    multi.multi.remove_handle(handle)
                multi.handles.append(handle)
            self._give_back(multi)
        return [e if e is not None else (Retryable("the call was cut"), 0.0) for e in ended]

    def close(self) -> None:
        """Close the idle multis, their handles and connections; a batch running closes its multi as it ends. A
        batch after this still runs, on a multi of its own closed as it ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for multi in idle:
            multi.close()

    def _take(self) -> _Multi:
        with self._lock:
            if self._idle:
                return self._idle.pop()  # the last given back: its connections are the likeliest still open
        return _Multi(self.connections)

    def _give_back(self, multi: _Multi) -> None:
        for extra in multi.handles[self.connections:]:  # a batch larger than its connections: not worth keeping
            extra.close()
        del multi.handles[self.connections:]
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_MULTIS:
                self._idle.append(multi)
                return
        multi.close()

    def _new_handle(self) -> pycurl.Curl:
        """An easy handle with what every call of this client shares."""
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)  # threads: no SIGALRM for timeouts
        handle.setopt(pycurl.USERAGENT, self.user_agent)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)  # as httpx's client: no HTTP/2
        handle.setopt(pycurl.ACCEPT_ENCODING, "gzip, deflate")  # as httpx asks, and decoded
        handle.setopt(pycurl.CAINFO, self._cainfo)
        handle.setopt(pycurl.NOPROXY, "")  # libcurl reads no no_proxy itself: env_proxy has decided
        return handle

    @staticmethod
    def _prepare(handle: pycurl.Curl, call: _Call, url: bytes, body: bytes, headers: list[bytes],
                 timeouts: tuple[int, int], proxy: str) -> None:
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.POSTFIELDS, body)
        handle.setopt(pycurl.HTTPHEADER, headers)
        handle.setopt(pycurl.WRITEFUNCTION, call.chunks.append)
        handle.setopt(pycurl.HEADERFUNCTION, call.lines.append)
        handle.setopt(pycurl.PROXY, proxy)  # "": no proxy, and none read from the environment
        handle.setopt(pycurl.TIMEOUT_MS, timeouts[0])
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, timeouts[1])

    def _drive(self, multi: _Multi, calls: dict[pycurl.Curl, _Call],
               end: Callable[[int, Answer | DeliveryError], None], deadline: float) -> None:
        """Run the multi until every call in ``calls`` has ended (each removed from it as it ends).

        The loop waits in ``poll()`` on the sockets libcurl has asked to have watched (its socket callback, on the
        multi's :class:`_Watch`) until one is ready, libcurl's timer is due, or one of the loop's own checks below
        is: ``select()`` would not see a socket numbered 1024 or more (see the module's docstring). Each ready
        socket goes to ``socket_action`` with what it is ready for; a due timer to ``socket_action(SOCKET_TIMEOUT)``.
        The wait is rounded up to the millisecond: never a 0 ms poll() while libcurl's timer is still to come.

        libcurl has no read timeout, and its low-speed limit (under ``LOW_SPEED_LIMIT`` bytes/s for
        ``LOW_SPEED_TIME`` s) averages over the last 5 s, so a request body just sent holds the speed up for that
        long: "1 byte/s for 1 s" ends a silent answer after 7 s. The read timeout is kept here instead: a call on
        which nothing has moved for ``read`` seconds since its request went out is ended, as a timeout. httpx
        ends a single read that waits ``read`` seconds; this is looked at every quarter of ``read`` (at most every
        second), so it ends up to half of ``read`` (at most 2 s) later, and never a slow answer that keeps coming.
        """
        curl, watch = multi.multi, multi.watch
        poll, watched, action = watch.poller.poll, watch.watched, _ACTION
        read = deadline if self.read is None else min(self.read, deadline)
        every = min(1.0, max(0.05, read / 4))
        now = time.monotonic()
        stop, look = now + max(deadline, 0.0) + _GRACE_SECONDS, now + every

        def cut(handle: pycurl.Curl, reason: str) -> None:
            call = calls.pop(handle)
            curl.remove_handle(handle)  # mid-answer: libcurl closes its connection (and says POLL_REMOVE)
            multi.handles.append(handle)
            end(call.index, Retryable(reason))

        while calls:
            due = watch.due
            wait = min(_IDLE_WAIT_SECONDS if due is None else due - now, look - now, stop - now)
            for fd, revents in poll(math.ceil(wait * 1000.0) if wait > 0 else 0):
                if fd in watched:  # else a socket libcurl stopped watching (closed) since poll() answered
                    if revents & select.POLLNVAL:
                        watch.forget(fd)
                    curl.socket_action(fd, action[revents & 63])
            due = watch.due
            if due is not None and time.monotonic() >= due:
                watch.due = None  # before the call: libcurl sets its next timer in it
                curl.socket_action(pycurl.SOCKET_TIMEOUT, 0)
            while True:
                queued, succeeded, failed = curl.info_read()
                for handle in succeeded:
                    call = calls.pop(handle)
                    status = handle.getinfo(pycurl.RESPONSE_CODE)
                    curl.remove_handle(handle)
                    multi.handles.append(handle)
                    end(call.index, Answer(status, call.lines, b"".join(call.chunks)))
                for handle, code, message in failed:
                    call = calls.pop(handle)
                    curl.remove_handle(handle)
                    multi.handles.append(handle)
                    end(call.index, transport_error(code, message))
                if not queued:
                    break
            now = time.monotonic()
            if calls and now >= stop:  # libcurl did not keep TIMEOUT_MS: the batch keeps its deadline all the same
                for handle in list(calls):
                    cut(handle, "timeout (the batch's deadline passed)")
            if calls and now >= look:
                for handle in [h for h, call in calls.items() if call.stalled(h, now, read)]:
                    cut(handle, f"timeout (nothing read for {read:g} s)")
                look = now + every


def _header_lines(headers: dict[str, str]) -> list[bytes] | DeliveryError:
    """The request's header lines for libcurl, with none of its own Expect (no 100-continue wait) nor form
    Content-Type; a header that would break the request's framing refused, as httpx refuses it."""
    # "Name:" would remove the header: "Name;" sends it empty
    lines = [f"{name}: {value}" if value else f"{name};" for name, value in headers.items()]
    text = "".join(lines)
    if "\r" in text or "\n" in text:
        name = next(name for name, value in headers.items() if "\r" in name + value or "\n" in name + value)
        return Permanent(f"bad request header {name!r}: a line break in it")
    lines.append("Expect:")
    if "Content-Type" not in headers and all(name.lower() != "content-type" for name in headers):
        lines.append("Content-Type:")  # as httpx sends raw content: not libcurl's application/x-www-form-urlencoded
    return [line.encode("utf-8") for line in lines]


def _ms(seconds: float) -> int:
    """Seconds as libcurl's milliseconds, at least 1 (0 would mean no limit)."""
    return max(1, math.ceil(seconds * 1000.0))
