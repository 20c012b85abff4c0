"""One configuration source: the core settings, the services' own, the destinations' options and secrets and the
console's accounts are all read from the environment, then ``.env``, then (a secret) the file ``NAME_FILE`` names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from api.console.auth import ConsoleAuth, _warn_malformed, hash_password
from cli.env_example import render
from config.environ import EnvironError, lookup, lookup_secret
from config.options import OptionsError, resolve
from config.routing import Destination
from config.settings import Settings
from services.payment import PaymentSettings
from services.webhook.deliver import WebhookOptions
from tests.harness import ROOT, captured_logs

WEBHOOK = Destination(name="warehouse", kind="webhook",
                      options={"url": "http://127.0.0.1:9/events", "secret_env": "MOTCUA_TEST_WAREHOUSE_SECRET"})


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory to run in, with no MOTCUA_ variable in the environment."""
    for name in list(os.environ):
        if name.startswith("MOTCUA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_env(directory: Path, text: str) -> Path:
    path = directory / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_kind_of_setting_is_read_from_the_env_file(workdir: Path) -> None:
    # given a .env file and nothing exported
    hashed = hash_password("mật khẩu đủ dài", iterations=1000)
    write_env(workdir, "\n".join([
        "MOTCUA_DATABASE_URL=sqlite:///./from-dotenv.db",
        "MOTCUA_INTAKE_SECRET=whsec_from_dotenv",
        "MOTCUA_PAYMENT_QUERY_INTERVAL_SECONDS=42",
        "MOTCUA_TEST_WAREHOUSE_SECRET=whsec_subscriber",
        "MOTCUA_CONSOLE_SECRET=a-console-secret-long-enough",
        f"MOTCUA_CONSOLE_OPERATORS=vanhanh01:{hashed}",  # unquoted, its $ signs as written
    ]) + "\n")
    # then the core settings, a service's settings, a destination's secret and the console's accounts see it
    settings = Settings()
    assert settings.database_url == "sqlite:///./from-dotenv.db"
    assert settings.intake_secrets() == ["whsec_from_dotenv"]
    assert PaymentSettings().payment_query_interval_seconds == 42
    options = resolve(WEBHOOK, WebhookOptions)
    assert options.secret.get_secret_value() == "whsec_subscriber"
    auth = ConsoleAuth.from_env()
    assert auth is not None and auth.operators == {"vanhanh01": hashed}
    assert auth.login("vanhanh01", "mật khẩu đủ dài")


def test_the_environment_wins_over_the_env_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(workdir, "MOTCUA_REDIS_PREFIX=from-file\nMOTCUA_TEST_WAREHOUSE_SECRET=whsec_file\n")
    monkeypatch.setenv("MOTCUA_REDIS_PREFIX", "from-env")
    monkeypatch.setenv("MOTCUA_TEST_WAREHOUSE_SECRET", "whsec_env")
    assert Settings().redis_prefix == "from-env"
    assert resolve(WEBHOOK, WebhookOptions).secret.get_secret_value() == "whsec_env"


def test_values_are_taken_as_written_never_expanded(workdir: Path) -> None:
    write_env(workdir, "HOME_LIKE=${HOME}\nMOTCUA_CONSOLE_SECRET='$dollar$signs${HOME}'\nEMPTY=\n")
    assert lookup("HOME_LIKE") == "${HOME}"
    assert lookup_secret("MOTCUA_CONSOLE_SECRET") == "$dollar$signs${HOME}"
    assert lookup("EMPTY") is None  # empty counts as not set


def test_a_secret_is_read_from_the_file_its_FILE_variable_names(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given secrets mounted as files, as a container platform mounts them (a trailing newline)
    (workdir / "intake").write_text("whsec_mounted\n", encoding="utf-8")
    (workdir / "subscriber").write_text("whsec_subscriber_mounted\r\n", encoding="utf-8")
    monkeypatch.setenv("MOTCUA_INTAKE_SECRET_FILE", str(workdir / "intake"))
    write_env(workdir, f"MOTCUA_TEST_WAREHOUSE_SECRET_FILE={workdir / 'subscriber'}\n")
    # then the settings and the destination read their contents, the newline dropped
    assert Settings().intake_secrets() == ["whsec_mounted"]
    assert resolve(WEBHOOK, WebhookOptions).secret == SecretStr("whsec_subscriber_mounted")


def test_plain_settings_ending_in_FILE_are_not_file_variables(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MOTCUA_ROUTING_FILE is a path setting of its own; MOTCUA_ROUTING is nothing
    routing = workdir / "relay.toml"
    monkeypatch.setenv("MOTCUA_ROUTING_FILE", str(routing))
    assert Settings().routing_file == routing
    assert lookup("MOTCUA_ROUTING") is None


def test_a_secret_set_twice_or_a_file_unreadable_is_an_error_naming_the_variable(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a secret set both ways: which is meant?
    (workdir / "secret").write_text("whsec_in_file", encoding="utf-8")
    monkeypatch.setenv("MOTCUA_TEST_WAREHOUSE_SECRET", "whsec_value_itself")
    monkeypatch.setenv("MOTCUA_TEST_WAREHOUSE_SECRET_FILE", str(workdir / "secret"))
    with pytest.raises(OptionsError) as both:
        resolve(WEBHOOK, WebhookOptions)
    assert "both MOTCUA_TEST_WAREHOUSE_SECRET and MOTCUA_TEST_WAREHOUSE_SECRET_FILE are set" in str(both.value)
    assert "whsec_value_itself" not in str(both.value) and "whsec_in_file" not in str(both.value)
    # a file that is not there
    monkeypatch.delenv("MOTCUA_TEST_WAREHOUSE_SECRET")
    monkeypatch.setenv("MOTCUA_TEST_WAREHOUSE_SECRET_FILE", str(workdir / "missing"))
    with pytest.raises(OptionsError, match=r"MOTCUA_TEST_WAREHOUSE_SECRET_FILE names .*missing, which cannot be read"):
        resolve(WEBHOOK, WebhookOptions)
    # the core settings say the same
    monkeypatch.setenv("MOTCUA_INTAKE_SECRET", "whsec_a")
    monkeypatch.setenv("MOTCUA_INTAKE_SECRET_FILE", str(workdir / "secret"))
    with pytest.raises(EnvironError, match="both MOTCUA_INTAKE_SECRET and MOTCUA_INTAKE_SECRET_FILE"):
        Settings()


def test_MOTCUA_ENV_FILE_names_another_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_env(workdir, "MOTCUA_REDIS_PREFIX=from-dot-env\n")
    other = workdir / "relay.env"
    other.write_text("MOTCUA_REDIS_PREFIX=from-relay-env\n", encoding="utf-8")
    monkeypatch.setenv("MOTCUA_ENV_FILE", str(other))
    assert Settings().redis_prefix == "from-relay-env"


def test_a_changed_env_file_is_read_again(workdir: Path) -> None:
    path = write_env(workdir, "MOTCUA_TEST_WAREHOUSE_SECRET=whsec_one\n")
    assert lookup_secret("MOTCUA_TEST_WAREHOUSE_SECRET") == "whsec_one"
    path.write_text("MOTCUA_TEST_WAREHOUSE_SECRET=whsec_second\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert lookup_secret("MOTCUA_TEST_WAREHOUSE_SECRET") == "whsec_second"


def test_a_mangled_console_account_is_logged_by_name_with_how_to_write_it(workdir: Path) -> None:
    # given the account exported unquoted in a shell: "$240000$..." expanded to nothing
    write_env(workdir, "MOTCUA_CONSOLE_SECRET=a-console-secret-long-enough\n"
                       "MOTCUA_CONSOLE_OPERATORS=vanhanh01:pbkdf2_sha256\n")
    _warn_malformed.cache_clear()  # logged once per process
    with captured_logs() as logs:
        auth = ConsoleAuth.from_env()
    assert auth is not None and not auth.login("vanhanh01", "whatever it was")
    [logged] = [entry for entry in logs if entry["event"] == "console.account_malformed"]
    assert logged["accounts"] == ["vanhanh01"] and "single quotes" in logged["hint"]


def test_the_repositorys_env_example_lists_every_variable() -> None:
    # `motcua-relay env-example > .env.example` after a setting, a service or a destination is added
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == render()


def test_a_process_started_with_only_an_env_file_reads_it(tmp_path: Path) -> None:
    # given a process started in a directory with a .env file and no MOTCUA_ variable exported
    hashed = hash_password("mật khẩu đủ dài", iterations=1000)
    write_env(tmp_path, f"MOTCUA_INTAKE_SECRET=whsec_only_in_file\nMOTCUA_TEST_WAREHOUSE_SECRET=whsec_sub\n"
                        f"MOTCUA_CONSOLE_SECRET=a-console-secret-long-enough\n"
                        f"MOTCUA_CONSOLE_OPERATORS=vanhanh01:{hashed}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOTCUA_")}
    env["PYTHONPATH"] = str(ROOT)
    script = (
        "from config.settings import get_settings; from config.options import resolve;"
        "from config.routing import Destination; from services.webhook.deliver import WebhookOptions;"
        "from api.console.auth import ConsoleAuth;"
        "d = Destination(name='w', kind='webhook', options={'url': 'http://127.0.0.1:9/', "
        "'secret_env': 'MOTCUA_TEST_WAREHOUSE_SECRET'});"
        "print(get_settings().intake_secrets(), resolve(d, WebhookOptions).secret.get_secret_value(), "
        "sorted(ConsoleAuth.from_env().operators))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['whsec_only_in_file'] whsec_sub ['vanhanh01']"


def relay_cli(workdir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``motcua-relay ARGS`` in ``workdir`` with no MOTCUA_ variable exported (its .env is what it reads)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOTCUA_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=60, input=stdin)


def test_env_example_prints_the_repositorys_env_example(tmp_path: Path) -> None:
    run = relay_cli(tmp_path, "env-example")
    assert run.returncode == 0, run.stderr
    assert run.stdout == (ROOT / ".env.example").read_text(encoding="utf-8")


@pytest.mark.parametrize(("dotenv", "said"), [
    ("MOTCUA_DELIVERY_BATCH=many\n", "configuration: MOTCUA_DELIVERY_BATCH: Input should be a valid integer"),
    ("MOTCUA_INTAKE_SECRET=whsec_a\nMOTCUA_INTAKE_SECRET_FILE=/etc/hostname\n",
     "configuration: both MOTCUA_INTAKE_SECRET and MOTCUA_INTAKE_SECRET_FILE are set: keep one"),
    ("MOTCUA_ROUTING_FILE=broken.toml\n", "configuration: "),
])
def test_a_configuration_that_cannot_be_read_is_one_line_not_a_traceback(
    tmp_path: Path, dotenv: str, said: str
) -> None:
    write_env(tmp_path, f"MOTCUA_DATABASE_URL=sqlite:///{tmp_path}/relay.db\n" + dotenv)
    (tmp_path / "broken.toml").write_text("[destinations.x\nkind = ", encoding="utf-8")
    run = relay_cli(tmp_path, "deadletters")
    assert run.returncode == 2, run.stdout + run.stderr
    assert said in run.stderr and "Traceback" not in run.stdout + run.stderr
    assert "whsec_a" not in run.stderr


def test_hash_password_says_how_to_write_the_account(tmp_path: Path) -> None:
    run = relay_cli(tmp_path, "console", "hash-password", "vanhanh01", "--password", "mật khẩu đủ dài")
    assert run.returncode == 0, run.stderr
    entry = run.stdout.strip()  # stdout is the entry alone, as before (scripts read it)
    assert entry.startswith("vanhanh01:pbkdf2_sha256$")
    assert f"export MOTCUA_CONSOLE_OPERATORS='{entry}'" in run.stderr


def test_a_url_that_carries_a_password_may_come_from_a_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "database_url").write_text("postgresql://relay:s3cret@db:5432/motcua\n", encoding="utf-8")
    monkeypatch.setenv("MOTCUA_DATABASE_URL_FILE", str(workdir / "database_url"))
    assert Settings().database_url == "postgresql+psycopg://relay:s3cret@db:5432/motcua"
