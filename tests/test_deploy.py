"""``deploy/``: the compose file is a Compose file by the Compose Specification's own schema (vendored in
``deploy/schema/``), its parts name one another and the relay as they are, and the Prometheus files it mounts are
what Prometheus reads (``promtool``, where it is installed).

No Docker engine runs here, so nothing is built or started: what is checked is what can be without one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import typer.main
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import connectors.base
from api.console.auth import ConsoleAuth, hash_password
from api.intake import INTAKE_REQUESTS
from cli.main import app as cli_app
from config.environ import is_secret
from config.options import option_variable, secret_variable
from config.routing import get_routing
from config.settings import DEFAULT_ROUTING_FILE, Settings
from services.registry import get_registry
from tasks.metrics import RelayCollector
from tests.harness import ROOT, new_secret
from tests.test_systemd import UNITS, directives

DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
SCHEMA_FILE = DEPLOY / "schema" / "compose-spec.json"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
GUIDE = ROOT / "docs" / "production.md"
ALERT_RULES = ROOT / "docs" / "prometheus-alerts.yml"
# made by the operator, as the guide says: the settings, the routing file, the secrets
OPERATOR_FILES = (".env", "relay.toml", "secrets/")
CONSOLE_SECRETS = ("MOTCUA_CONSOLE_SECRET", "MOTCUA_CONSOLE_OPERATORS")  # read by api/console/auth.py


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


COMPOSE = load(COMPOSE_FILE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# the relay's own services: those of the image deploy/Dockerfile builds
RELAY = sorted(name for name, service in SERVICES.items()
               if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile")


def schema_errors(document: Any) -> list[str]:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    return [f"{'/'.join(map(str, error.instance_path))}: {error.message}" for error in validator.iter_errors(document)]


def named_by(service: dict[str, Any], key: str) -> list[str]:
    """The top-level names a service's ``secrets``, ``configs`` or ``depends_on`` list, short or long syntax."""
    entries = service.get(key, [])
    if isinstance(entries, dict):
        return list(entries)
    return [entry if isinstance(entry, str) else entry["source"] for entry in entries]


def environment(service: dict[str, Any]) -> dict[str, str]:
    found = service.get("environment", {})
    if isinstance(found, list):
        return dict(entry.split("=", 1) for entry in found)
    return {name: str(value) for name, value in found.items()}


def variables_the_relay_reads() -> tuple[set[str], set[str]]:
    """Every variable the relay reads with the shipped routing file, and the secrets among them (those that may
    come from a file instead, named by ``NAME_FILE``)."""
    every = {f"MOTCUA_{name.upper()}" for name in Settings.model_fields}
    secrets = {f"MOTCUA_{name.upper()}" for name, info in Settings.model_fields.items() if is_secret(info)}
    every |= set(CONSOLE_SECRETS)
    secrets |= set(CONSOLE_SECRETS)
    registry = get_registry()
    for service in registry:
        if service.settings is not None:
            every |= {f"MOTCUA_{name.upper()}" for name in service.settings.model_fields}
    for destination in get_routing(str(DEFAULT_ROUTING_FILE)).destinations.values():
        model = registry.kind(destination).options
        if model is None:
            continue
        for key in model.model_fields:
            if (variable := secret_variable(destination, model, key)) is not None:
                secrets.add(variable)
            elif (variable := option_variable(destination, key)) is not None:
                every.add(variable)
    return every | secrets, secrets


# ---------------------------------------------------------------------------------------------- the schema


def test_the_compose_file_is_a_compose_file_by_the_specifications_schema() -> None:
    assert schema_errors(COMPOSE) == []


@pytest.mark.parametrize(("what", "spoil"), [
    ("a misspelt service key", lambda doc: doc["services"]["api"].update(depend_on=["redis"])),
    ("an unknown dependency condition", lambda doc: doc["services"]["api"]["depends_on"]["migrate"].update(
        condition="service_completed")),
    ("a healthcheck's misspelt key", lambda doc: doc["services"]["redis"]["healthcheck"].update(intervals="5s")),
    ("a port as a mapping", lambda doc: doc["services"]["api"].update(ports={"8700": 8700})),
    ("an unknown top-level key", lambda doc: doc.update(service={})),
])
def test_the_schema_refuses_what_compose_would(what: str, spoil: Any) -> None:
    # given the compose file with one mistake
    spoilt = copy.deepcopy(COMPOSE)
    spoil(spoilt)
    # then the check that passes the file as it is finds it
    assert schema_errors(spoilt), what


def test_the_vendored_schema_is_the_one_its_note_names() -> None:
    note = (DEPLOY / "schema" / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() in note
    assert (DEPLOY / "schema" / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")


# ---------------------------------------------------------------------------------------------- the parts


def test_every_name_a_service_uses_is_declared() -> None:
    for name, service in SERVICES.items():
        assert set(named_by(service, "depends_on")) <= set(SERVICES) - {name}, name
        assert set(named_by(service, "secrets")) <= set(COMPOSE.get("secrets", {})), name
        assert set(named_by(service, "configs")) <= set(COMPOSE.get("configs", {})), name
        volumes = [v.split(":", 1)[0] for v in service.get("volumes", []) if not v.startswith((".", "/"))]
        assert set(volumes) <= set(COMPOSE.get("volumes", {})), name


def test_every_file_named_is_in_the_repository_or_one_the_guide_has_the_operator_make() -> None:
    files = [entry["file"] for key in ("configs", "secrets") for entry in COMPOSE[key].values()]
    files += [service["env_file"] for service in SERVICES.values() if "env_file" in service]
    guide = GUIDE.read_text(encoding="utf-8")
    for file in files:
        relative = Path(file).as_posix().removeprefix("./")
        if relative.startswith(OPERATOR_FILES):
            assert relative in guide, f"{file}: docs/production.md does not say to make it"
        else:
            assert (DEPLOY / file).is_file(), file
    assert (DEPLOY / SERVICES[RELAY[0]]["build"]["context"] / SERVICES[RELAY[0]]["build"]["dockerfile"]).is_file()


def test_the_relay_runs_its_processes_from_one_image_after_the_migration() -> None:
    assert {"api", "worker", "beat", "migrate"} <= set(RELAY)
    assert len({SERVICES[name]["image"] for name in RELAY}) == 1
    assert SERVICES["migrate"]["command"] == ["db", "upgrade"] and SERVICES["migrate"]["restart"] == "no"
    for name in set(RELAY) - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("postgres", "redis"):
        assert "healthcheck" in SERVICES[name], name


@pytest.mark.parametrize("name", RELAY)
def test_each_relay_service_runs_a_command_the_relay_has(name: str) -> None:
    # the command is parsed as `motcua-relay` would parse it (a misspelt option or command is refused)
    words = list(SERVICES[name]["command"])
    command: Any = typer.main.get_command(cli_app)
    while words and hasattr(command, "commands") and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    assert not hasattr(command, "commands"), f"{name}: {SERVICES[name]['command']} names no command"
    command.make_context(command.name, words)


def test_a_stopping_worker_has_the_time_the_systemd_unit_gives_it() -> None:
    stop = int(directives(UNITS / "motcua-relay-worker@.service")["TimeoutStopSec"][0])
    assert SERVICES["worker"]["stop_grace_period"] == f"{stop}s"
    assert SERVICES["worker"]["stop_signal"] == "SIGTERM"


# ---------------------------------------------------------------------------------------------- the settings


@pytest.mark.parametrize("name", RELAY)
def test_each_relay_service_sets_only_variables_the_relay_reads(name: str) -> None:
    every, secrets = variables_the_relay_reads()
    for variable, value in environment(SERVICES[name]).items():
        if variable.endswith("_FILE") and variable.removesuffix("_FILE") in secrets:
            # a secret's file: one the service mounts
            mounted = value.removeprefix("/run/secrets/")
            assert mounted in named_by(SERVICES[name], "secrets"), f"{name}: {variable}={value} is not mounted"
        else:
            assert variable in every, f"{name}: the relay reads no {variable}"


def test_the_env_example_names_only_variables_the_relay_reads() -> None:
    every, secrets = variables_the_relay_reads()
    named = re.findall(r"^#? ?(MOTCUA_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE)
    assert named
    for variable in named:
        assert variable in every or variable.removesuffix("_FILE") in secrets, variable


def test_the_relay_reads_the_secrets_compose_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the API's secrets as compose mounts them (written as `echo … > file` writes, a newline at the end)
    values = {"intake_secret": new_secret(), "console_secret": "s" * 32,
              "console_operators": f"vanhanh01:{hash_password('mật khẩu', iterations=1000)}"}
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("MOTCUA_ENV_FILE", raising=False)
    _, secrets = variables_the_relay_reads()
    for variable, value in environment(SERVICES["api"]).items():
        if variable.endswith("_FILE") and variable.removesuffix("_FILE") in secrets:
            secret = value.removeprefix("/run/secrets/")
            (tmp_path / secret).write_text(values.pop(secret) + "\n", encoding="utf-8")
            monkeypatch.setenv(variable, str(tmp_path / secret))
            monkeypatch.delenv(variable.removesuffix("_FILE"), raising=False)
    assert values == {}, "the API is not given these"
    # when the relay reads its settings and the console its accounts
    settings = Settings()
    console = ConsoleAuth.from_env()
    # then each is read from its file
    assert settings.intake_secrets() == [(tmp_path / "intake_secret").read_text(encoding="utf-8").strip()]
    assert console is not None and console.login("vanhanh01", "mật khẩu")


# ---------------------------------------------------------------------------------------------- Prometheus


def mounted_config(service: str, target: str) -> Path:
    """The file of the repository the service gets at ``target``."""
    for entry in SERVICES[service]["configs"]:
        if entry["target"] == target:
            return (DEPLOY / COMPOSE["configs"][entry["source"]]["file"]).resolve()
    raise AssertionError(f"{service} has nothing at {target}")


def test_prometheus_reads_its_config_and_the_relays_alert_rules_as_mounted() -> None:
    command = SERVICES["prometheus"]["command"]
    config_path = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file="))
    config = load(mounted_config("prometheus", config_path))
    assert mounted_config("prometheus", config_path) == (DEPLOY / "prometheus.yml").resolve()
    assert [mounted_config("prometheus", rules) for rules in config["rule_files"]] == [ALERT_RULES.resolve()]


def test_prometheus_scrapes_the_ports_the_services_listen_on() -> None:
    config = load(DEPLOY / "prometheus.yml")
    listening = {"api": SERVICES["api"]["command"][SERVICES["api"]["command"].index("--port") + 1],
                 "flower": next(a.split("=")[1] for a in SERVICES["flower"]["command"] if a.startswith("--port="))}
    targets = []
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets += [f"{name}:{sd['port']}" for name in sd["names"]]
        for static in job.get("static_configs", []):
            targets += static["targets"]
    assert sorted(targets) == sorted(f"{name}:{port}" for name, port in listening.items())


class _Attempts:
    """Redis's attempt counters, as the collector reads them."""

    def read(self) -> tuple[dict[tuple[str, str], int], dict[str, dict[str, float]]]:
        return {("portal", "delivered"): 5, ("portal", "permanent"): 1}, {"portal": {"100": 5.0, "sum": 0.3}}

    def read_batches(self) -> dict[str, dict[str, float]]:
        return {"portal": {"5": 1.0, "sum": 5.0}}


def exposed_samples() -> set[str]:
    """The names of the samples the API's /metrics serves, each family with a series."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(_Attempts(), lambda: {"portal": (3, 120.0)},  # type: ignore[arg-type]
                                     dead=lambda: {"portal": 1}, breakers=lambda: {"portal": True},
                                     paused=lambda: {("zalo", "balance"): 1}, checkpoint_age=lambda: 42.0))
    INTAKE_REQUESTS.labels(status="202")
    text = (generate_latest(registry) + generate_latest()).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_alert_rules_parse_and_name_only_what_the_relay_exposes() -> None:
    rules = [rule for group in load(ALERT_RULES)["groups"] for rule in group["rules"]]
    outcomes = {"delivered"} | {cls.outcome for cls in _subclasses(connectors.base.DeliveryError)}
    exposed = exposed_samples()
    assert rules
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule.get("alert")
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]
        assert set(re.findall(r"\bmotcua_[a-z_]+", rule["expr"])) <= exposed, rule["alert"]
        assert set(re.findall(r'outcome="([a-z_]+)"', rule["expr"])) <= outcomes, rule["alert"]


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def test_promtool_takes_the_config_and_the_rules(tmp_path: Path) -> None:
    beside = Path(sys.executable).parent / "promtool"  # where scripts/setup.sh may unpack it
    promtool = shutil.which("promtool") or (str(beside) if beside.exists() else None)
    if promtool is None:
        pytest.skip("promtool is not installed here (Debian's package prometheus has it)")
    # given the config as Prometheus gets it, the rule file at the path the container has it
    config = load(DEPLOY / "prometheus.yml")
    config["rule_files"] = [str(ALERT_RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # when promtool checks them, then it takes them
    for args in (["check", "config", str(tmp_path / "prometheus.yml")], ["check", "rules", str(ALERT_RULES)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- the image


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continued lines joined), stage by stage."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, argument = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), argument.strip()))
    return stages


def test_the_image_is_the_wheel_on_python_slim_run_by_a_user_of_its_own() -> None:
    stages = dockerfile_stages()
    packages = {p.rstrip("*") for p in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
                ["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {arg.split()[0] for instruction, arg in stages[0] if instruction == "COPY"}
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    # every stage on the slim Python the project supports; the wheel made of every package the project has
    assert all(stage[0][1].split()[0] == "python:3.11-slim" for stage in stages)
    assert packages <= copied and all(f"\n!{p}\n" in ignore for p in packages)
    # the last stage installs that wheel, and nothing for development, and runs unprivileged
    final = dict(stages[-1])
    installs = " ".join(arg for instruction, arg in stages[-1] if instruction == "RUN")
    assert "pip install /dist/motcua_relay-" in installs and "[test]" not in installs and " -e " not in installs
    user = final["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(final["ENTRYPOINT"]) == ["motcua-relay"]


# ---------------------------------------------------------------------------------------------- the guides


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_every_link_of_the_docs_points_into_the_repository_and_finds_its_heading(page: str) -> None:
    path = ROOT / "docs" / page
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8"))
    for link in links:
        assert not re.match(r"^[a-z]+:", link), f"{page}: {link} points outside the repository"
        target, _, anchor = link.partition("#")
        found = (path.parent / target).resolve() if target else path
        assert found.exists() and found.is_relative_to(ROOT), f"{page}: {link}"
        if anchor:
            assert anchor in anchors(found), f"{page}: {link} finds no such heading"
