"""The registry: the bundled services found by walking services/, every part each declares usable, two services
never claiming one kind."""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint

import pytest
from fastapi import APIRouter

from config.options import ServiceOptions
from services import registry
from services.base import BeatJob, Deliverer, Lazy, Service, ServiceSettings
from services.registry import RegistryError, discover, get_registry

BUNDLED = {"webhook", "portal", "zalo", "sms", "postal", "payment", "transfer"}


def test_the_bundled_services_are_found_by_their_packages() -> None:
    found = get_registry()
    assert set(found.services) >= BUNDLED
    assert all(found.origins[kind] == f"services.{kind}" for kind in BUNDLED)


@pytest.mark.parametrize("kind", sorted(BUNDLED))
def test_every_part_a_bundled_service_declares_is_usable(kind: str) -> None:
    service = get_registry().services[kind]
    assert issubclass(service.deliverer, Deliverer) and issubclass(service.options, ServiceOptions)
    settings = service.read_settings()
    assert settings is None or isinstance(settings, ServiceSettings)
    for job in service.jobs:
        assert job.task.startswith(f"relay.{kind}.") and job.title and job.done and job.failed
        field = job.every or job.daily_at
        assert settings is not None and hasattr(settings, str(field)), f"{job.task}: no setting {field}"
        assert len(inspect.signature(job.run).parameters) >= 1
    if service.callbacks is not None:
        router = service.callbacks.load()
        assert isinstance(router, APIRouter) and all(r.path.startswith("/v1/callbacks/") for r in router.routes)
    for simulator in service.simulators:
        assert callable(simulator.build.load()) and simulator.option.endswith("port")
    if service.demo is not None:
        assert callable(service.demo.load())


def test_simulator_options_and_job_names_are_unique_across_services() -> None:
    options = [sim.option for service in get_registry() for sim in service.simulators]
    tasks = [job.task for _, job in get_registry().jobs()]
    entries = [job.entry for _, job in get_registry().jobs()]
    assert len(options) == len(set(options)) and len(tasks) == len(set(tasks)) and len(entries) == len(set(entries))


def test_a_job_has_one_schedule() -> None:
    with pytest.raises(ValueError, match="exactly one of every and daily_at"):
        BeatJob(task="relay.x.y", entry="x", title="x", run=lambda d: {}, done="d", failed="f")
    with pytest.raises(ValueError, match="exactly one"):
        BeatJob(task="relay.x.y", entry="x", title="x", run=lambda d: {}, done="d", failed="f", every="a",
                daily_at="b")


def test_a_lazy_part_is_named_module_colon_attribute() -> None:
    assert Lazy("services.registry:discover").load() is discover
    with pytest.raises(ValueError, match="module:attribute"):
        Lazy("services.registry.discover")


def _installed(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    point = EntryPoint(name="other", value=value, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == registry.ENTRY_POINT_GROUP else [])


PORTAL_AGAIN = Service(kind="portal", title="another portal", deliverer=Deliverer, options=ServiceOptions)
NOT_A_SERVICE = {"kind": "x"}


def test_a_package_claiming_a_bundled_kind_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, f"{__name__}:PORTAL_AGAIN")
    with pytest.raises(RegistryError, match=r"two services claim the kind 'portal': services\.portal and"):
        discover()


def test_an_entry_point_that_is_not_a_service_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, f"{__name__}:NOT_A_SERVICE")
    with pytest.raises(RegistryError, match=r"is a dict, not a services\.base\.Service"):
        discover()
