"""A destination's options, typed (``config/options.py``): the file's values, the environment's overrides, secrets
only from the environment, every refusal naming the destination and what to set; and today's routing file read
unchanged by every bundled service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import SecretStr

from config.options import (
    Duration,
    HttpUrl,
    OptionsError,
    Secret,
    ServiceOptions,
    Words,
    option_variable,
    resolve,
    secret_variable,
)
from config.routing import Destination, load_routing
from config.settings import DEFAULT_ROUTING_FILE
from services.registry import get_registry
from tests.harness import ROOT

TODAYS_FILE = ROOT / "tests" / "fixtures" / "relay-2026-11.toml"  # config/relay.toml as operators have it


class Example(ServiceOptions):
    url: HttpUrl
    pull_units: Words = []
    every: Duration = 60
    mode: str = "a"
    password: Annotated[SecretStr, Secret("MOTCUA_T_PASSWORD")]
    callback_key: Annotated[SecretStr | None, Secret("MOTCUA_T_CALLBACK", required=False)] = None
    bank_key: Annotated[SecretStr | None, Secret("MOTCUA_T_BANK", required=lambda o: o.get("mode") == "bank")] = None


def dest(**options: Any) -> Destination:
    return Destination(name="d", kind="example", options=options)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MOTCUA_T_PASSWORD", "MOTCUA_T_CALLBACK", "MOTCUA_T_BANK", "MOTCUA_TEST_D_URL", "MOTCUA_T_OTHER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOTCUA_T_PASSWORD", "pw")


def test_a_variable_named_by_key_env_overrides_the_file_when_set_and_not_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    d = dest(url="http://file/url", url_env="MOTCUA_TEST_D_URL")
    assert resolve(d, Example).url == "http://file/url"
    monkeypatch.setenv("MOTCUA_TEST_D_URL", "http://env/url")
    assert resolve(d, Example).url == "http://env/url"
    monkeypatch.setenv("MOTCUA_TEST_D_URL", "")
    assert resolve(d, Example).url == "http://file/url"
    assert option_variable(d, "url") == "MOTCUA_TEST_D_URL"
    assert option_variable(d, "mode", "MOTCUA_FALLBACK") == "MOTCUA_FALLBACK"


def test_values_are_typed_from_the_file_and_from_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTCUA_TEST_D_URL", "000.21.00.H49, 000.00.13.H49")
    got = resolve(dest(url="http://x", pull_units_env="MOTCUA_TEST_D_URL", every="2m"), Example)
    assert got.pull_units == ["000.21.00.H49", "000.00.13.H49"]
    assert got.every == 120
    assert resolve(dest(url="http://x", pull_units=["a"]), Example).pull_units == ["a"]


def test_secrets_come_only_from_their_variable_and_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    d = dest(url="http://x", password_env="MOTCUA_T_OTHER")
    with pytest.raises(OptionsError, match="destination d: set MOTCUA_T_OTHER \\(password\\)"):
        resolve(d, Example)
    monkeypatch.setenv("MOTCUA_T_OTHER", "")
    with pytest.raises(OptionsError, match="set MOTCUA_T_OTHER"):
        resolve(d, Example)
    monkeypatch.setenv("MOTCUA_T_OTHER", "s3cret")
    got = resolve(d, Example)
    assert got.password.get_secret_value() == "s3cret" and "s3cret" not in repr(got)
    # the default variable when the file names none
    assert resolve(dest(url="http://x"), Example).password.get_secret_value() == "pw"
    assert secret_variable(d, Example, "password") == "MOTCUA_T_OTHER"
    assert secret_variable(dest(), Example, "callback_key") == "MOTCUA_T_CALLBACK"
    assert resolve(dest(url="http://x"), Example).callback_key is None


def test_a_secret_written_in_the_file_is_refused() -> None:
    with pytest.raises(OptionsError, match="password is a secret: it is never written in the routing file"):
        resolve(dest(url="http://x", password="in-file"), Example)


def test_a_secret_needed_by_another_option_is_required_only_then(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(dest(url="http://x"), Example).bank_key is None
    with pytest.raises(OptionsError, match="set MOTCUA_T_BANK \\(bank_key\\)"):
        resolve(dest(url="http://x", mode="bank"), Example)
    monkeypatch.setenv("MOTCUA_T_BANK", "b")
    assert resolve(dest(url="http://x", mode="bank"), Example).bank_key is not None


@pytest.mark.parametrize(("options", "words"), [
    ({"url": "http://x", "colour": "red"}, "unknown option 'colour'"),
    ({"url": "http://x", "colour_env": "X"}, "unknown option 'colour_env'"),
    ({"url": "ftp://x"}, "url: Value error, must be an http(s) URL"),
    ({"url": "http://x", "every": "soon"}, "every: Value error, not a duration"),
    ({}, "url: Field required"),
])
def test_a_bad_option_is_refused_naming_the_destination_and_the_option(options: dict[str, Any], words: str) -> None:
    with pytest.raises(OptionsError) as raised:
        resolve(dest(**options), Example)
    assert str(raised.value).startswith("destination d: ") and words in str(raised.value)


def test_a_bad_value_from_a_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTCUA_TEST_D_URL", "not a url")
    with pytest.raises(OptionsError, match=r"url \(from MOTCUA_TEST_D_URL\)"):
        resolve(dest(url="http://x", url_env="MOTCUA_TEST_D_URL"), Example)


@pytest.mark.parametrize("path", [TODAYS_FILE, DEFAULT_ROUTING_FILE], ids=["operators-file", "shipped-file"])
def test_todays_routing_file_is_read_unchanged_by_every_service(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the routing file an operator has today, and the variables it names
    routing = load_routing(path)
    registry = get_registry()
    for destination in routing.destinations.values():
        model = registry.kind(destination).options
        for key in model.model_fields:
            variable = secret_variable(destination, model, key)
            if variable:
                monkeypatch.setenv(variable, f"value-of-{variable}")
    # when each destination's options are read by its service, then none is refused, and the URLs are the file's
    for name, destination in routing.destinations.items():
        options = resolve(destination, registry.kind(destination).options)
        assert getattr(options, "url", "http://").startswith("http"), name
    # and every secret it names is a MOTCUA_ variable
    for destination in routing.destinations.values():
        named = [v for k, v in destination.options.items() if k.endswith("_env") and "SECRET" in k.upper()]
        assert all(v.startswith("MOTCUA_") for v in named)
