"""A payment destination's options (``services/payment/deliver.py``): today's routing file keeps working with the
contract's defaults, and a missing or wrong option is refused naming it."""

from __future__ import annotations

from typing import Any

import pytest

from config.options import OptionsError, resolve
from config.routing import Destination, load_routing
from services.payment.deliver import PaymentOptions
from tests.harness import ROOT

TODAYS_FILE = ROOT / "tests" / "fixtures" / "relay-2026-11.toml"
PLATFORM = {"provider": "platform", "url": "http://127.0.0.1:8706", "client_id": "UBND-HALONG",
            "return_url": "https://dichvucong.quangninh.gov.vn/thanh-toan/ket-qua",
            "beneficiary_account": "3511.0.1054321.00000", "beneficiary_name": "UBND phường Hồng Gai",
            "beneficiary_bank": "KBNN"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTCUA_PAYMENT_REQUEST_KEY", "k1")
    monkeypatch.delenv("MOTCUA_PAYMENT_LOOKUP_PASSWORD", raising=False)


def payment(**options: Any) -> Destination:
    return Destination(name="payment", kind="payment", options={**PLATFORM, **options})


def test_todays_payment_table_reads_with_the_contracts_defaults() -> None:
    # given the operators' routing file of today, which names none of the new options
    options = resolve(load_routing(TODAYS_FILE).destinations["payment"], PaymentOptions)
    # then the partner's registration is OpenCPS's, the endpoints are paths under url, and no look-up password
    assert (options.command, options.version, options.locale, options.country_code) == ("PAY", "3.0", "vn", "vi")
    assert (options.environment, options.service_type, options.fee_type) == ("1", "2", 2)
    assert options.endpoint("create_url").startswith("http://127.0.0.1:8706/")
    assert options.endpoint("detail_url").startswith("http://127.0.0.1:8706/")
    assert options.lookup_username == "dvcqg" and options.lookup_password is None


def test_an_endpoint_given_in_full_is_used_as_given() -> None:
    options = resolve(payment(detail_url="https://keypay.example/api/v1/transaction/detail"), PaymentOptions)
    assert options.endpoint("detail_url") == "https://keypay.example/api/v1/transaction/detail"


DROP = object()  # the option left out of the table


@pytest.mark.parametrize(("options", "named"), [
    ({"return_url": DROP}, "return_url"),
    ({"return_url": ""}, "return_url"),
    ({"client_id": DROP}, "client_id"),
    ({"environment": "3"}, "environment"),
    ({"command": ""}, "command"),
    ({"version": ""}, "version"),
    ({"fee_type": "two"}, "fee_type"),
    ({"lookup_username": ""}, "lookup_username"),
    ({"detail_url": "ftp://keypay"}, "detail_url"),
    ({"lookup_password": "in-the-file"}, "lookup_password"),
])
def test_a_missing_or_wrong_option_is_refused_naming_it(options: dict[str, Any], named: str) -> None:
    table = {k: v for k, v in {**PLATFORM, **options}.items() if v is not DROP}
    with pytest.raises(OptionsError, match=named) as caught:
        resolve(Destination(name="payment", kind="payment", options=table), PaymentOptions)
    assert caught.value.destination == "payment"
