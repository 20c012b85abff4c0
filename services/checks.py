"""What ``motcua-relay doctor`` asks of a destination's service, and the shape of what it is told.

A deliverer's :meth:`~services.base.Deliverer.check` answers with :class:`Finding` rows: is the service reachable,
does it take the relay's credentials. A check does only what the service's contract lets a client do without
changing anything there:

- an HTTP ``HEAD`` of the configured URL (:func:`reach`): any HTTP answer proves the route, the TLS and the
  server; its ``Date`` header says how far the service's clock is from ours (:attr:`Finding.clock`);
- a log-in or a token request where the contract has one, its session or token then dropped: never cached for
  the workers, never a refresh that spends a single-use token (Zalo's);
- a read the service answers only to a caller it accepted (a look-up of an id nothing has), or its WSDL
  (:func:`wsdl`);
- never a send, a bill, an order or a message.

Each call ends within the doctor's timeout: :func:`then` runs a credential check under
:func:`connectors.base.attempt_deadline`, which bounds every connector call made inside.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from lxml import etree

from connectors.base import DeliveryError, attempt_deadline

Status = Literal["ready", "warning", "not_ready", "skipped"]
READY: Status = "ready"
WARNING: Status = "warning"  # works, but an operator should look (exit 0)
NOT_READY: Status = "not_ready"  # will fail: doctor exits 1
SKIPPED: Status = "skipped"  # cannot apply; the detail says why

# a gateway that answers, for a service behind it that does not
GATEWAY_DOWN = (502, 503, 504)
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"


@dataclass(frozen=True)
class Finding:
    """One row of the doctor's table: ``check`` (what), ``target`` (where: a URL, never with credentials),
    ``status`` and ``detail`` (what was found, or how to fix it). ``clock`` is the server's clock minus ours, in
    seconds, when its answer said its time."""

    check: str
    target: str
    status: Status
    detail: str
    clock: float | None = None

    @property
    def ready(self) -> bool:
        return self.status != NOT_READY


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def offset(said: float, sent: float, answered: float, resolution: float = 0.0) -> float:
    """How far a server's clock is from ours (seconds, + ahead), at least: it said ``said`` (cut to ``resolution``)
    at some moment between ``sent`` and ``answered`` by our clock, so the offset is within ``said - answered`` and
    ``said + resolution - sent``; the figure in that range nearest 0 (0 when the clocks may agree). A slow answer
    widens the range: it never makes a clock look off."""
    low, high = said - answered, said + resolution - sent
    return 0.0 if low <= 0 <= high else (low if low > 0 else high)


def server_clock(headers: Mapping[str, str], sent: float, answered: float) -> float | None:
    """:func:`offset` from an answer's ``Date`` header (whole seconds); ``None`` without one."""
    said = headers.get("date")
    if not said:
        return None
    try:
        when = email.utils.parsedate_to_datetime(said)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return offset(when.timestamp(), sent, answered, resolution=1.0)


def _transport_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout ({type(exc).__name__})"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


def shown(url: str) -> str:
    """``url`` as a row may show it: without a user part, the values of its query masked (a subscriber's URL may
    carry a token)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{key}=***" if value else key for key, value in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def reach(url: str, timeout: float, *, check: str = "reachable") -> Finding:
    """``HEAD url``: ready on any HTTP answer but a gateway's 502/503/504 (the service behind it is down)."""
    target = shown(url)
    sent = time.time()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.head(url)
    except httpx.HTTPError as exc:
        return Finding(check, target, NOT_READY, f"{_transport_reason(exc)}; check the URL, DNS, the firewall and "
                                                 "any proxy between this machine and the service")
    answered = time.time()
    clock = server_clock(response.headers, sent, answered)
    took = f"HTTP {response.status_code} to HEAD in {ms(answered - sent)}"
    if response.status_code in GATEWAY_DOWN:
        return Finding(check, target, NOT_READY, f"{took}: something answers, the service behind it does not",
                       clock)
    return Finding(check, target, READY, took, clock)


def then(before: Finding, check: str, target: str, timeout: float, call: Callable[[], str]) -> Finding:
    """``call()`` (a log-in, a token, a read), its every connector call ending within ``timeout`` s: ready with
    the detail it returns, not ready with the reason of the ``DeliveryError`` it raises; skipped when ``before``
    (the reachability) is not ready."""
    target = shown(target)
    if before.status == NOT_READY:
        return Finding(check, target, SKIPPED, f"not tried: {before.check} is not ready")
    started = time.monotonic()
    try:
        with attempt_deadline(timeout):
            detail = call()
    except DeliveryError as exc:
        return Finding(check, target, NOT_READY, exc.reason)
    return Finding(check, target, READY, f"{detail} ({ms(time.monotonic() - started)})")


def wsdl(url: str, operations: Collection[str], timeout: float, *, check: str = "WSDL") -> Finding:
    """``GET`` the WSDL at ``url``: ready when it is a WSDL that declares every one of ``operations`` (read with
    no DTD, no entity and nothing fetched)."""
    target = shown(url)
    sent = time.time()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        return Finding(check, target, NOT_READY, _transport_reason(exc))
    clock = server_clock(response.headers, sent, time.time())
    if response.status_code != 200:
        return Finding(check, target, NOT_READY, f"HTTP {response.status_code}: not the service's WSDL", clock)
    try:
        root = etree.fromstring(response.content, etree.XMLParser(resolve_entities=False, no_network=True,
                                                                  load_dtd=False))
    except etree.XMLSyntaxError as exc:
        return Finding(check, target, NOT_READY, f"the answer is not XML ({str(exc)[:120]})", clock)
    if root.tag != f"{{{WSDL_NS}}}definitions":
        return Finding(check, target, NOT_READY, f"the answer is not a WSDL (its root is {root.tag[:80]})", clock)
    declared = {op.get("name") for op in root.iter(f"{{{WSDL_NS}}}operation")}
    missing = [op for op in operations if op not in declared]
    if missing:
        return Finding(check, target, NOT_READY, f"the WSDL lacks {', '.join(missing)}: not the contract the "
                                              "connector speaks", clock)
    return Finding(check, target, READY, f"a WSDL with {', '.join(operations)}", clock)


def clock(findings: Sequence[Finding], max_skew: float) -> Finding:
    """This machine's clock against the servers' that said their time (:attr:`Finding.clock`), more than
    ``max_skew`` seconds apart not ready: signed events and callbacks carry their time and are refused 5 minutes off
    (Standard Webhooks' tolerance), and quiet hours, Zalo's night rule and the reconciliation go by the clock."""
    readings = [(f.check, f.target, f.clock) for f in findings if f.clock is not None]
    if not readings:
        return Finding("clock", "this machine", SKIPPED, "no server said its time (none answered, or only SQLite)")
    off = [(check, target, seconds) for check, target, seconds in readings if abs(seconds) > max_skew]
    compared = f"{len(readings)} server{'s' if len(readings) > 1 else ''}"
    if not off:
        check, _, worst = max(readings, key=lambda reading: abs(reading[2]))
        return Finding("clock", compared, READY, f"within {max_skew:g} s of every one (the most: {abs(worst):.1f} s, "
                                                 f"{check})")
    listed = "; ".join(f"{check} {abs(seconds):.0f} s {'ahead' if seconds > 0 else 'behind'}"
                       for check, _, seconds in off[:5])
    who = ("this machine's clock is off: every server disagrees with it" if len(off) == len(readings) > 1
           else "these servers' clocks differ from this machine's")
    return Finding("clock", compared, NOT_READY,
                   f"{who} by more than {max_skew:g} s ({listed}): signed events and callbacks are refused 5 min off, "
                   "quiet hours and the reconciliation go by the clock; synchronise it (chrony, systemd-timesyncd), "
                   "or tell the service's operator")
