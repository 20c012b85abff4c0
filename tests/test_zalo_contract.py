"""The Zalo contract (docs/contracts.md "Zalo"), one rule at a time: the relay's adapter and connector against the Zalo
simulator over real HTTP, and the simulator refusing what the relay used to send, saying why.

The rules: account-level failures pause instead of failing; template parameters are typed and capped and a link
goes only in a button; ZNS refuses some sends at night (-133); the refresh endpoint's refusal may come without a
number. The webhook's retries and our fast answer are in ``tests/test_zalo_flow.py``, where the relay's API runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from adapters.zalo import MappingError, message_for
from config.zalo_templates import load_templates
from connectors.base import Permanent, Retryable, build_http_client
from connectors.credentials import TokenPair, TokenPairStore
from connectors.pauses import WHOLE
from connectors.zalo import AccountPaused, QuotaSpent, ZaloConnector
from sandbox.workload import generate_day
from sandbox.zalo import create_app
from schemas.events import Event, event_json, parse_event
from schemas.vietnam import VN_TZ
from tests.servers import run_asgi

APP_ID, APP_SECRET, OA_KEY = "4301520984", "zalo-app-secret", "oa-secret-key"
MORNING = datetime(2026, 11, 20, 9, 0, tzinfo=VN_TZ)
TEMPLATES = load_templates()
DAY = [parse_event(e) for e in generate_day(80, day=date(2026, 11, 20), seed=44)
       if e["applicant"].get("zalo_consent") and e["applicant"].get("phone")]
PAIR = "zalo:contract"


@dataclass
class Zalo:
    connector: ZaloConnector
    admin: httpx.Client
    pairs: TokenPairStore

    def send(self, event: Event) -> Any:
        m = message_for(event, TEMPLATES)
        return self.connector.send(m.phone, m.template_id, m.data, m.tracking_id)

    def raw(self, template_id: str, data: dict[str, Any]) -> Any:
        """What the relay sent before its parameters were typed: the data as it came, unchecked."""
        return self.connector.send("84912345678", template_id, data, f"raw-{uuid.uuid4().hex[:8]}")

    def stats(self) -> dict[str, Any]:
        return dict(self.admin.get("/_admin/stats").json())


@pytest.fixture(scope="module")
def zalo_url() -> Iterator[str]:
    with run_asgi(create_app(app_id=APP_ID, app_secret=APP_SECRET, oa_secret_key=OA_KEY, start_at=MORNING)) as url:
        yield url


@pytest.fixture
def zalo(zalo_url: str, redis_url: str) -> Iterator[Zalo]:
    with httpx.Client(base_url=zalo_url, timeout=5) as admin:
        admin.post("/_admin/reset").raise_for_status()
        pairs = TokenPairStore(redis.Redis.from_url(redis_url), f"zc{uuid.uuid4().hex[:6]}")
        pair = admin.post("/_admin/tokens").json()
        pairs.put(PAIR, TokenPair(pair["access_token"], pair["refresh_token"], time.time() + 80000))
        connector = ZaloConnector(zns_url=zalo_url, oauth_url=zalo_url, app_id=APP_ID,
                                  app_secret=SecretStr(APP_SECRET), client=build_http_client(2, 5), pairs=pairs,
                                  name=PAIR)
        yield Zalo(connector, admin, pairs)
        connector.close()


def of_type(kind: str, n: int = 0) -> Event:
    return [e for e in DAY if e.type == kind][n]


def with_data(event: Event, **data: Any) -> Event:
    return parse_event(event_json(event) | {"data": {**event_json(event)["data"], **data}})


# ----------------------------------------------------------------------------------- account-level failures


def test_a_spent_balance_pauses_the_whole_destination_and_a_top_up_clears_it(zalo: Zalo) -> None:
    # given the ZNS account can pay for one more message
    zalo.admin.post("/_admin/balance", json={"messages": 1}).raise_for_status()
    assert zalo.send(of_type("dossier.received")).msg_id
    # when the next one is sent: not the message's fault, so a pause of the whole destination, not a failure
    with pytest.raises(AccountPaused) as paused:
        zalo.send(of_type("dossier.completed"))
    error = paused.value
    assert not isinstance(error, Permanent | Retryable)
    assert (error.condition, error.scope, error.until, error.sent) == ("balance", WHOLE, None, True)
    assert "-115" in error.reason and error.excerpt and "-115" in error.excerpt
    # then a top-up lets the same message through
    zalo.admin.post("/_admin/balance", json={"messages": None}).raise_for_status()
    assert zalo.send(of_type("dossier.completed")).msg_id
    assert zalo.stats()["answers"] == {"0": 2, "-115": 1}


@pytest.mark.parametrize(("change", "code", "condition", "daily"), [
    ({"status": "DISABLE"}, -146, "template_disabled", False),
    ({"status": "PENDING_REVIEW"}, -131, "template_not_approved", False),
    ({"status": "REJECT"}, -131, "template_not_approved", False),
    ({"daily_quota": 0}, -147, "template_daily_quota", True),
])
def test_a_template_disabled_unapproved_or_over_its_daily_limit_pauses_that_template_only(
    zalo: Zalo, change: dict[str, Any], code: int, condition: str, daily: bool
) -> None:
    zalo.admin.post("/_admin/templates/300004", json=change).raise_for_status()
    with pytest.raises(AccountPaused) as paused:
        zalo.send(of_type("dossier.completed"))  # template 300004
    error = paused.value
    assert (error.condition, error.scope) == (condition, "300004") and str(code) in error.reason
    if daily:  # ends at 00:00 Vietnam time, without a probe
        assert error.until is not None and 0 < error.until - time.time() <= 86400
    else:
        assert error.until is None
    assert zalo.send(of_type("dossier.received")).msg_id  # another template goes on


def test_the_oas_daily_quota_is_a_pause_until_midnight(zalo: Zalo) -> None:
    zalo.admin.post("/_admin/quota", json={"daily": 0}).raise_for_status()
    with pytest.raises(QuotaSpent) as paused:
        zalo.send(of_type("dossier.received"))
    assert (paused.value.condition, paused.value.scope) == ("oa_daily_quota", WHOLE)
    assert paused.value.retry_after is not None and 0 < paused.value.retry_after <= 86400


# ----------------------------------------------------------------------------------- typed parameters


def test_what_the_adapter_fills_from_every_lifecycle_event_is_accepted(zalo: Zalo) -> None:
    kinds = sorted({e.type for e in DAY} & set(TEMPLATES.templates))
    assert len(kinds) >= 4
    for kind in kinds:
        assert zalo.send(of_type(kind)).msg_id, kind


@pytest.mark.parametrize(("template_id", "params", "refusal"), [
    # a name as it comes: 36 characters in a customer_name (30)
    ("300006", {"ten_cong_dan": "Nguyễn Thị Hương Giang Phạm Văn Đồng", "ma_ho_so": "000.21.00.H49-240315-0001"},
     "ten_cong_dan (customer_name) dài 36 ký tự, vượt giới hạn 30 ký tự"),
    # an untyped, uncapped code over the code type's 30
    ("300006", {"ten_cong_dan": "Trần Văn An", "ma_ho_so": "000.21.00.H49.UBND.HALONG-240315-0001"},
     "ma_ho_so (code) dài 37 ký tự, vượt giới hạn 30 ký tự"),
    # a link in a text parameter: template review allows one only in a button
    ("300005", {"ten_cong_dan": "Trần Văn An", "ma_ho_so": "000.21.00.H49-240315-0001",
                "ly_do": "Xem hướng dẫn tại https://dichvucong.gov.vn/huong-dan"},
     "ly_do (product_name) chứa liên kết: liên kết chỉ được đặt trong nút"),
    # an amount that is not one
    ("300003", {"ten_cong_dan": "Trần Văn An", "ma_ho_so": "000.21.00.H49-240315-0001", "so_tien": "theo biểu phí",
                "link_thanh_toan": "https://dichvucong.gov.vn/p?ma=LP-1"}, "so_tien (amount) sai định dạng"),
])
def test_the_simulator_refuses_the_relays_old_dialect_with_the_reason(
    zalo: Zalo, template_id: str, params: dict[str, str], refusal: str
) -> None:
    with pytest.raises(Permanent) as refused:
        zalo.raw(template_id, params)
    assert "-112" in refused.value.reason and refusal in refused.value.reason, refused.value.reason
    assert zalo.stats()["sent"] == 0


@pytest.mark.parametrize(("event", "refusal"), [
    (lambda: with_data(of_type("dossier.refused"), reason="Xem hướng dẫn tại https://dichvucong.gov.vn/huong-dan"),
     "template 300005: parameter ly_do (product_name) holds a link"),
    (lambda: parse_event(event_json(of_type("dossier.returned"))
                         | {"dossier_code": "000.21.00.H49.UBND.HALONG-240315-1"}),
     "template 300006: parameter ma_ho_so (code, at most 30 characters) is 34 characters long"),
])
def test_the_adapter_refuses_the_same_before_any_call(zalo: Zalo, event: Any, refusal: str) -> None:
    with pytest.raises(MappingError) as refused:
        zalo.send(event())
    assert refusal in str(refused.value)
    assert zalo.stats()["answers"] == {}  # nothing reached Zalo


def test_a_long_name_is_shortened_to_its_type_and_accepted(zalo: Zalo) -> None:
    event = of_type("dossier.received")
    long_name = parse_event(event_json(event) | {"applicant": {**event_json(event)["applicant"],
                                                               "name": "Nguyễn Thị Hương Giang Phạm Văn Đồng"}})
    assert zalo.send(long_name).msg_id
    [sent] = zalo.admin.get("/_admin/messages").json()
    assert sent["template_data"]["ten_cong_dan"] == "Thị Hương Giang Phạm Văn Đồng"  # 30 at most, from the left


# ----------------------------------------------------------------------------------- the night rule


def test_at_night_zns_refuses_and_the_connector_retries_after_six(zalo: Zalo) -> None:
    zalo.admin.post("/_admin/clock", json={"at": "2026-11-20T23:30:00+07:00"}).raise_for_status()
    with pytest.raises(Retryable) as refused:
        zalo.send(of_type("dossier.received"))
    assert "-133" in refused.value.reason and not isinstance(refused.value, AccountPaused)
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 86400
    zalo.admin.post("/_admin/clock", json={"at": "2026-11-21T06:00:00+07:00"}).raise_for_status()
    assert zalo.send(of_type("dossier.received")).msg_id


# ----------------------------------------------------------------------------------- the refresh endpoint


def test_a_refresh_refused_without_a_number_waits_for_set_token_and_a_new_pair_sends(zalo: Zalo) -> None:
    # given a pair due for renewal whose refresh token Zalo does not know (spent elsewhere, or revoked)
    zalo.pairs.put(PAIR, TokenPair("stale-access", "unknown-refresh-token", time.time() - 1))
    # when a message is sent: Zalo answers HTTP 200 with names and no number
    with pytest.raises(AccountPaused) as paused:
        zalo.send(of_type("dossier.received"))
    assert paused.value.condition == "token_refused"
    assert "motcua-relay zalo set-token" in paused.value.reason and "Invalid refresh token" in paused.value.reason
    assert zalo.stats()["refresh"] == {"ok": 0, "refused": 1} and zalo.stats()["sent"] == 0
    # then the operator's new pair sends
    pair = zalo.admin.post("/_admin/tokens").json()
    zalo.pairs.put(PAIR, TokenPair(pair["access_token"], pair["refresh_token"], time.time() + 80000))
    assert zalo.send(of_type("dossier.received")).msg_id
