"""What a service is: the record it declares, the parts it is made of, and what the relay gives it to work with.

A service is all the relay knows of one kind of external system::

    Service                       one per kind ("portal", "postal", ...), named SERVICE in its package
    ├── deliverer                 a Deliverer subclass: adapter + connector for one destination of the kind,
    │                             and its check for `motcua-relay doctor` (services/checks.py)
    ├── options                   a ServiceOptions model: what such a destination takes in config/relay.toml
    ├── settings                  a ServiceSettings model: its MOTCUA_* variables (a beat job's interval …)
    ├── jobs                      BeatJobs: what beat runs for every destination of the kind (polls, queries)
    ├── callbacks                 a FastAPI router under /v1/callbacks: what the system pushes back
    ├── simulators                Simulators: the system on loopback, for `motcua-relay sandbox` and the demo
    └── demo                      its part of `motcua-relay demo`

The callbacks, simulators and demo are named ``Lazy("module:attribute")``: imported only by the process that uses
them, so a worker never loads FastAPI routers, simulators or the demo.

Deliverers, jobs and callbacks get the process's resources as a :class:`Context` (the ledger, Redis, the
routing, the way to queue deliveries): they fetch nothing from globals, and none of them imports Celery.
"""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

import redis
from sqlalchemy import Engine

from config.environ import EnvSettings
from config.options import OptionsError, ServiceOptions, resolve
from config.routing import Destination, RoutingConfig
from config.settings import Settings
from connectors.base import AttemptEnded, ConnectorResult, DeliveryError
from schemas.events import Event, EventBase, event_json
from store import intake
from store.streams import DestinationRules, ToEnqueue

if TYPE_CHECKING:
    from fastapi import APIRouter

    from services.checks import Finding

OptionsT = TypeVar("OptionsT", bound=ServiceOptions)
ModelT = TypeVar("ModelT", bound=ServiceOptions)
D = TypeVar("D", bound="Deliverer[Any]")
Checked = TypeVar("Checked")


class ServiceSettings(EnvSettings):
    """A service's own ``MOTCUA_*`` variables, read as the relay's own (:mod:`config.environ`), subclassed by each
    service that has any."""


@dataclass(frozen=True, slots=True)
class Hold:
    """The destination takes nothing now: its due deliveries wait until ``until`` without spending an attempt,
    saying ``why``. With ``probe_at``, the first of them comes back then instead: the one that will find out
    whether the hold has ended (a hold with no known end is probed now and then, and a probe needs a delivery
    that is due)."""

    until: datetime
    why: str
    probe_at: datetime | None = None

    def times(self) -> Callable[[], datetime]:
        """Each held delivery's time, in turn: ``probe_at`` for the first, ``until`` for the rest."""
        first = [self.probe_at] if self.probe_at is not None else []
        return lambda: first.pop() if first else self.until


@dataclass(frozen=True, slots=True)
class Probe:
    """A hold that lets one delivery through now: the engine claims one, and calls ``give_back`` when it found
    none to send, so that the next batch with one probes instead of waiting for the next turn."""

    give_back: Callable[[], None]


class Deliverer(Generic[OptionsT]):
    """Adapter + connector for one destination, built once per process from its options and the context.

    ``deliver`` turns the claimed event (the model, parsed once by the claim) into the service's call(s) and
    returns the :class:`ConnectorResult` stored as the attempt, or raises a ``DeliveryError`` (connectors/base.py)
    that decides what happens next; an event of a type the service does not take is a ``Permanent`` error.
    """

    def __init__(self, destination: Destination, options: OptionsT, context: Context) -> None:
        self.name = destination.name
        self.destination = destination
        self.options = options
        self.context = context

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        """One attempt at sending ``event``, carrying ``idempotency_key`` (or looking up first)."""
        raise NotImplementedError

    def deliver_batch(
        self, items: Sequence[tuple[Event, str]], deadline: float, on_end: AttemptEnded | None = None
    ) -> list[tuple[ConnectorResult | DeliveryError, float]] | None:
        """A batch's attempts at once, each ``(event, idempotency_key)`` ending within ``deadline`` seconds: for
        each, its result or ``DeliveryError`` and its duration in ms. ``None`` (the default): the service's calls
        do not batch, and the engine runs :meth:`deliver` for each on its attempt threads.

        ``on_end(index, result or error, ms)``, when given, is called (from any thread) as each attempt ends, so
        that the engine records the batch in waves, as its calls return; an attempt it is not called for is taken
        from the list returned."""
        return None

    def not_before(self, now: datetime) -> Hold | Probe | None:
        """Whether the destination's deliveries may go now: ``None``; a :class:`Hold` (quiet hours, a spent daily
        quota), which the engine applies before claiming, so no attempt is spent; or a :class:`Probe`, one
        delivery let through a hold to find out whether it has ended."""
        return None

    def refresh_auth(self) -> bool:
        """Renew this destination's credential after ``AuthExpired``; False when it has none to renew (the error
        then stands). The engine calls it once and tries again."""
        return False

    def check(self, timeout: float) -> Sequence[Finding] | None:
        """What ``motcua-relay doctor`` reports of this destination: whether its service answers and takes the
        relay's credentials (:mod:`services.checks`), each call ending within ``timeout`` seconds and changing
        nothing there (no send; a log-in's session or a token dropped, never a single-use token spent). ``None``
        (the default): the service declares no check, and doctor says so."""
        return None

    def close(self) -> None:
        """Release pooled clients."""


def _always(_: Any) -> bool:
    return True


T = TypeVar("T")


@dataclass(frozen=True)
class Lazy(Generic[T]):
    """A part of a service named ``"module:attribute"``, imported when first used (``tests/test_registry.py``
    loads every bundled one, so a wrong name fails the tests, not a process)."""

    target: str

    def __post_init__(self) -> None:
        module, _, attribute = self.target.partition(":")
        if not module or not attribute:
            raise ValueError(f"a lazy part is named 'module:attribute', not {self.target!r}")

    def load(self) -> T:
        module, _, attribute = self.target.partition(":")
        found: T = getattr(importlib.import_module(module), attribute)
        return found


@dataclass(frozen=True)
class BeatJob(Generic[D]):
    """A periodic job over the destinations of a service's kind, run by beat through a generated Celery task.

    ``title`` says what it does ("pulling the portal's online dossiers"); ``run(deliverer, **params)`` does one
    destination and returns a summary. The task takes a lock (one run at a time across processes), runs it for
    every destination whose options it ``applies`` to, keeps one failure from stopping the others, and logs a
    ``noteworthy`` summary as ``done`` and a failure as ``failed`` (an error, with the operator's command, when
    ``failure_hint`` gives one). The schedule is ``every`` (a field of the service's settings holding seconds) or
    ``daily_at`` (a field holding HH:MM, Vietnam time).
    """

    task: str
    entry: str
    title: str
    run: Callable[..., dict[str, Any]]
    done: str
    failed: str
    every: str | None = None
    daily_at: str | None = None
    applies: Callable[[Any], bool] = _always
    lock_seconds: float = 60.0
    noteworthy: Callable[[dict[str, Any]], bool] = bool
    failure_hint: Callable[[str, Mapping[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.daily_at is None):
            raise ValueError(f"beat job {self.task}: give exactly one of every and daily_at")


class Configured(NamedTuple):
    """A destination with its resolved options."""

    destination: Destination
    options: ServiceOptions


class NotReady(Exception):
    """A simulator that cannot start with this configuration; the message says what to set."""


@dataclass(frozen=True)
class Simulator:
    """The service on loopback, for ``motcua-relay sandbox`` (``--<option>``, default ``port``).

    ``build(configured)`` makes the ASGI app that speaks for the destinations it ``takes`` (with the secrets they
    use), or raises :class:`NotReady` saying what to set. A ``required`` one that cannot start stops the sandbox
    (the one-stop software: every other simulator reports to it). The demo serves its own, with a faster clock.
    """

    title: str
    option: str
    port: int
    build: Lazy[Callable[[list[Configured]], Any]]
    takes: Callable[[ServiceOptions], bool] = _always
    help: str = ""
    required: bool = False


class Stage(Protocol):
    """What ``motcua-relay demo`` (``cli/demo.py``) gives the services' plays: the environment the relay's processes
    will read, the demo's routing and day (its size, the share of calls that fail, the event that stops its
    threads), a way to serve a simulator on loopback, the one-stop simulator every other service reports back to;
    once the relay is up, its API's URL, its context and when the day began.

    ``secrets`` gives a destination's secrets the demo's values unless their variables are set (and returns the
    values in force); ``point`` sets the variable that overrides an option (the file's ``KEY_env``, else
    ``variable``), to aim a destination at its simulator (``keep``: only where the operator set nothing)."""

    rng: random.Random
    env: MutableMapping[str, str]
    routing: RoutingConfig
    dossiers: int
    fault_rate: float
    stop: threading.Event
    onestop: str
    api: str
    context: Context
    since: datetime

    def serve(self, app: Any, port: int) -> str: ...

    def secret(self) -> str: ...

    def secrets(self, destination: Destination, model: type[ServiceOptions], values: Mapping[str, str]
                ) -> dict[str, str]: ...

    def point(self, destination: Destination, key: str, variable: str, value: str, *, keep: bool = False) -> None: ...


@dataclass
class Measure:
    """What a play adds to the demo's summary: its simulator's view per destination (``distinct`` effects,
    ``receipts`` requests, ``faults``), its own figures under ``key`` in the summary's JSON, and the repeated
    requests it recognised by their idempotency key."""

    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    key: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    repeated: int = 0  # requests its simulator recognised as repeats of one it had applied


class DemoPlay:
    """A service's part of ``motcua-relay demo``, for its destinations ``names``. The service's ``demo`` factory
    makes it before the relay starts (setting the variables its destinations read, serving its simulator); the
    demo then calls, in order: :meth:`started` (the relay is up), :meth:`play` (before the day is sent),
    :meth:`shape` (the day is known), :meth:`settled` (until every play is), :meth:`measure`, :meth:`verdict`.
    Each returns the lines it wants printed."""

    produces: frozenset[str] = frozenset()  # event types its simulator makes come back (the day need not fake them)

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def describe(self) -> str:
        """A phrase for the line that lists the simulators."""
        return ""

    def started(self, stage: Stage) -> list[str]:
        return []

    def play(self, stage: Stage) -> list[str]:
        return []

    def shape(self, stage: Stage, events: list[dict[str, Any]]) -> list[str]:
        return []

    def settled(self, stage: Stage) -> bool:
        return True

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        return Measure()

    def verdict(self, summary: dict[str, Any]) -> tuple[str, bool] | None:
        """The line on this service after the summary table, and whether the demo went right for it."""
        return None


@dataclass(frozen=True)
class Service:
    """One kind of external system, declared once (see the module's docstring)."""

    kind: str
    title: str
    deliverer: type[Deliverer[Any]]
    options: type[ServiceOptions]
    settings: type[ServiceSettings] | None = None
    jobs: tuple[BeatJob[Any], ...] = ()
    callbacks: Lazy[APIRouter] | None = None
    simulators: tuple[Simulator, ...] = ()
    demo: Lazy[Callable[[Stage, list[str]], DemoPlay | None]] | None = None

    def read_settings(self) -> ServiceSettings | None:
        return self.settings() if self.settings is not None else None


@dataclass(frozen=True)
class Registry:
    """The services this process knows, by kind, in the order they were found; where each came from."""

    services: Mapping[str, Service]
    origins: Mapping[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services.values())

    def kind(self, destination: Destination) -> Service:
        """The service of a destination, or a ``ValueError`` naming the kinds there are."""
        try:
            return self.services[destination.kind]
        except KeyError:
            raise ValueError(f"destination {destination.name}: unknown kind {destination.kind!r} "
                             f"(known: {', '.join(self.services)})") from None

    def jobs(self) -> list[tuple[Service, BeatJob[Any]]]:
        return [(service, job) for service in self for job in service.jobs]


Enqueue = Callable[[Sequence[ToEnqueue]], None]


@dataclass(eq=False)
class Context:
    """The process's resources, handed to every deliverer, job and callback (built once by ``tasks.runtime``).

    ``enqueue`` is how deliveries that may go now reach the workers (the Celery layer's; the ledger's sweeper
    queues again whatever it fails to queue).
    """

    settings: Settings
    routing: RoutingConfig
    engine: Engine
    redis: redis.Redis | None
    rules: dict[str, DestinationRules]
    registry: Registry
    enqueue: Enqueue
    _options: dict[str, ServiceOptions | OptionsError] = field(default_factory=dict, init=False, repr=False)
    _deliverers: dict[str, Deliverer[Any]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    # ------------------------------------------------------------------ configuration

    def destination(self, name: str) -> Destination:
        return self.routing.destinations[name]

    def service(self, name: str) -> Service:
        """The service of destination ``name``."""
        return self.registry.kind(self.destination(name))

    def names(self, kind: str) -> list[str]:
        """The destinations of ``kind``, in the routing file's order."""
        return [name for name, d in self.routing.destinations.items() if d.kind == kind]

    def options(self, name: str) -> ServiceOptions:
        """Destination ``name``'s options, resolved once; :class:`OptionsError` when they cannot be used."""
        with self._lock:
            if name not in self._options:
                try:
                    self._options[name] = resolve(self.destination(name), self.service(name).options)
                except OptionsError as exc:
                    self._options[name] = exc
            found = self._options[name]
        if isinstance(found, OptionsError):
            raise found
        return found

    def options_of(self, model: type[ModelT], name: str) -> ModelT:
        """Destination ``name``'s options, checked to be ``model`` (a job or callback reads its own service's)."""
        return self._checked(self.options(name), model, name)

    def problems(self) -> list[str]:
        """What is wrong with the configuration, a line per destination (empty when every one can be used)."""
        found: list[str] = []
        for name, destination in self.routing.destinations.items():
            try:
                self.registry.kind(destination)
                self.options(name)
            except ValueError as exc:  # OptionsError too
                found.append(str(exc))
        return found

    def notices(self) -> list[str]:
        """What the usable destinations' options say is missing though they work (:meth:`ServiceOptions.notices`),
        a line each, naming the destination."""
        found: list[str] = []
        for name in self.routing.destinations:
            try:
                options = self.options(name)
            except ValueError:  # a problem, said by problems()
                continue
            found += [f"destination {name}: {notice}" for notice in options.notices()]
        return found

    # ------------------------------------------------------------------ deliverers

    def deliverer(self, name: str) -> Deliverer[Any]:
        """Destination ``name``'s deliverer (built the first time; :class:`OptionsError` if it cannot be)."""
        with self._lock:
            if name not in self._deliverers:
                service = self.service(name)
                self._deliverers[name] = service.deliverer(self.destination(name), self.options(name), self)
            return self._deliverers[name]

    def deliverer_of(self, kind: type[D], name: str) -> D:
        """The deliverer of ``name``, checked to be a ``kind`` (a job or callback names its own service's)."""
        return self._checked(self.deliverer(name), kind, name)

    def _checked(self, found: object, kind: type[Checked], name: str) -> Checked:
        if not isinstance(found, kind):
            raise ValueError(f"destination {name} is a {self.destination(name).kind} destination: it has no "
                             f"{kind.__name__}")
        return found

    def close(self) -> None:
        with self._lock:
            for deliverer in self._deliverers.values():
                deliverer.close()
            self._deliverers.clear()

    # ------------------------------------------------------------------ events the services produce

    def ingest(self, events: Sequence[EventBase], now: datetime | None = None) -> list[intake.Ingested]:
        """Store events and their deliveries in one transaction, then queue those that may go now
        (:class:`store.intake.IngestConflict` when an event_id is already stored with other content)."""
        stored, ready = intake.ingest_and_route(self.engine, [event_json(e) for e in events], now or _now(),
                                                self.routing.destinations_for, self.rules)
        self.enqueue(ready)
        return stored

    def ingest_numbered(self, events: Sequence[EventBase], now: datetime | None = None, *,
                        in_arrival_order: bool = False) -> intake.Numbered:
        """Store news a service reported, numbered in its streams (:func:`store.intake.ingest_numbered`), then
        queue the deliveries that may go now."""
        result = intake.ingest_numbered(self.engine, [event_json(e) for e in events], now or _now(),
                                        self.routing.destinations_for, self.rules,
                                        in_arrival_order=in_arrival_order)
        self.enqueue(result.ready)
        return result


def _now() -> datetime:
    return datetime.now(UTC)
