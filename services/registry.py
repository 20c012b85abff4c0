"""Finding the services: the packages under ``services/``, and other distributions' through an entry-point group.

A bundled service is a subpackage of ``services`` whose ``__init__`` defines ``SERVICE`` (a
:class:`~services.base.Service`); adding one is adding its package, nothing else. A service shipped on its own
(``pip install motcua-relay-<bank>``) names its record in its distribution's metadata::

    [project.entry-points."motcua_relay.services"]
    acmebank = "motcua_relay_acmebank:SERVICE"

Two services may not claim one kind: the second is refused, naming both, rather than one silently winning.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

import structlog

from services.base import Registry, Service

ENTRY_POINT_GROUP = "motcua_relay.services"
BUNDLED_PACKAGE = "services"

log = structlog.get_logger(__name__)


class RegistryError(RuntimeError):
    """A service that cannot be registered (not a Service record, or a kind already taken)."""


def bundled() -> list[tuple[str, Service]]:
    """The services packaged with the relay, in the order of their package names."""
    package = importlib.import_module(BUNDLED_PACKAGE)
    found: list[tuple[str, Service]] = []
    for module in sorted(pkgutil.iter_modules(package.__path__, f"{BUNDLED_PACKAGE}."), key=lambda m: m.name):
        if not module.ispkg:
            continue  # the framework's own modules (base, registry, ...)
        record = getattr(importlib.import_module(module.name), "SERVICE", None)
        if record is not None:
            found.append((module.name, _checked(record, module.name)))
    return found


def installed() -> list[tuple[str, Service]]:
    """The services other distributions publish in the ``motcua_relay.services`` entry-point group."""
    found: list[tuple[str, Service]] = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        found.append((_origin(point), _checked(point.load(), point.value)))
    return found


def discover() -> Registry:
    """Every service this installation has, bundled first."""
    services: dict[str, Service] = {}
    origins: dict[str, str] = {}
    for origin, service in [*bundled(), *installed()]:
        if service.kind in services:
            raise RegistryError(f"two services claim the kind {service.kind!r}: {origins[service.kind]} and {origin}")
        services[service.kind] = service
        origins[service.kind] = origin
    return Registry(services, origins)


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process's registry (found once)."""
    return discover()


def _checked(record: object, where: str) -> Service:
    if not isinstance(record, Service):
        raise RegistryError(f"{where}: SERVICE is a {type(record).__name__}, not a services.base.Service")
    return record


def _origin(point: EntryPoint) -> str:
    dist = point.dist
    package = f"{dist.name} {dist.version}" if dist is not None else "an installed package"
    return f"{package} (entry point {point.name} = {point.value})"
