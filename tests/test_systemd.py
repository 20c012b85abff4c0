"""The systemd units in ``deploy/systemd/``: what a supervisor of the relay needs is there, and systemd reads them
without a complaint (``systemd-analyze verify``, where it is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.routing import get_routing
from config.settings import DEFAULT_ROUTING_FILE, Settings
from tests.harness import ROOT

UNITS = ROOT / "deploy" / "systemd"
SHIPPED_BINARY = "/opt/motcua-relay/bin/motcua-relay"
NAMES = ["motcua-relay-api.service", "motcua-relay-worker@.service", "motcua-relay-beat.service"]


def directives(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (a key may repeat: ``EnvironmentFile``)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("key", "expected"), [
    ("Restart", "always"),
    ("User", "motcua-relay"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("ReadWritePaths", "/var/lib/motcua-relay"),
    ("WorkingDirectory", "/var/lib/motcua-relay"),
    ("KillSignal", "SIGTERM"),  # Celery's warm shutdown, uvicorn's graceful one
    ("CapabilityBoundingSet", ""),  # none at all
    ("RestrictNamespaces", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallErrorNumber", "EPERM"),  # a call outside the filter fails, it does not kill the process
    ("UMask", "0027"),  # reports and a SQLite ledger hold citizens' data
])
def test_each_unit_restarts_runs_as_its_user_and_is_hardened(name: str, key: str, expected: str) -> None:
    assert directives(UNITS / name).get(key) == [expected]


@pytest.mark.parametrize("name", NAMES)
def test_each_unit_reads_the_settings_file_and_waits_before_a_restart(name: str) -> None:
    unit = directives(UNITS / name)
    assert "/etc/motcua-relay/relay.env" in unit["EnvironmentFile"]
    assert 0 < int(unit["RestartSec"][0]) <= 30
    assert unit["ExecStart"][0].startswith(f"{SHIPPED_BINARY} ")


def test_a_stopping_worker_has_time_to_finish_the_drain_in_flight() -> None:
    # a warm shutdown waits for the tasks in flight: a drain goes on MOTCUA_DRAIN_SECONDS, and its last batch
    # ends within the attempt's deadline, or sooner, the shipped routing file's slowest timeouts
    settings = Settings()
    routing = get_routing(str(DEFAULT_ROUTING_FILE))
    slowest = max(d.timeouts.connect + d.timeouts.read for d in routing.destinations.values())
    stop = int(directives(UNITS / "motcua-relay-worker@.service")["TimeoutStopSec"][0])
    assert stop > settings.drain_seconds + min(slowest, settings.attempt_deadline_seconds)


def _installed_binary() -> Path | None:
    beside = Path(sys.executable).parent / "motcua-relay"
    if beside.exists():
        return beside
    found = shutil.which("motcua-relay")
    return Path(found) if found else None


@pytest.fixture
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed here (it comes with systemd)")
    return found


@pytest.fixture
def local_units(tmp_path: Path) -> list[str]:
    """The units, with ExecStart naming the command this test runs beside (verify checks that it exists), as the
    paths systemd-analyze is given: the worker's as its instance @1."""
    binary = _installed_binary()
    if binary is None:
        pytest.skip("no motcua-relay command installed beside this Python for ExecStart to name")
    for name in NAMES:
        text = (UNITS / name).read_text(encoding="utf-8").replace(SHIPPED_BINARY, str(binary))
        (tmp_path / name).write_text(text, encoding="utf-8")
    return [str(tmp_path / n) for n in ("motcua-relay-api.service", "motcua-relay-beat.service",
                                        "motcua-relay-worker@1.service")]


def test_systemd_reads_the_units_without_a_complaint(analyze: str, local_units: list[str]) -> None:
    # given the units (local_units)
    # when systemd reads them
    result = subprocess.run([analyze, "verify", *local_units], capture_output=True, text=True, timeout=60,
                            check=False)
    # then it says nothing about them (it prints a misspelled setting and goes on, exit status 0)
    about_ours = [line for line in (result.stdout + result.stderr).splitlines() if "motcua-relay" in line]
    assert result.returncode == 0 and about_ours == [], result.stdout + result.stderr


def test_systemd_rates_each_unit_little_exposed(analyze: str, local_units: list[str]) -> None:
    # given the units (local_units); when systemd rates their sandboxing offline (it prints 0.0-10.0, "1.6 OK";
    # --threshold is on its 0-100 scale, so 20 is 2.0)
    result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", *local_units],
                            capture_output=True, text=True, timeout=60, check=False)
    # then each unit's overall exposure is under the threshold (the status is not 0 when one is above it)
    rated = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert result.returncode == 0 and len(rated) == len(local_units), result.stdout + result.stderr
