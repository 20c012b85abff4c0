"""The operator console over real HTTP: nothing without logging in, the overview, dead letters found and
replayed until delivered, a dossier's timeline with personal data masked unless revealed (and that logged)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.console.auth import hash_password
from sandbox.workload import generate_day
from schemas.privacy import mask_value
from store import intake, queries
from tasks.runtime import get_runtime
from tests.conftest import RelayConfig
from tests.harness import captured_logs, drain
from tests.servers import run_asgi

OPERATOR, PASSWORD = "vanhanh01", "mat-khau-van-hanh"


@pytest.fixture
def console(relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MOTCUA_CONSOLE_SECRET", "bi-mat-phien-lam-viec-0123456789")
    monkeypatch.setenv("MOTCUA_CONSOLE_OPERATORS", f"{OPERATOR}:{hash_password(PASSWORD, iterations=20_000)}")
    with run_asgi(create_app()) as url:
        yield url


@contextmanager
def logged_in(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post("/console/login", data={"username": OPERATOR, "password": PASSWORD, "next": "/console/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/"
        yield client


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, "no form token on the page"
    return found.group(1)


def later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


@pytest.fixture
def dead_day(relay_config: RelayConfig) -> list[dict]:
    """The first events of three dossiers, whose deliveries to the warehouse were refused (HTTP 400): dead letters."""
    httpx.post(f"{relay_config.sandbox.url}/_admin/faults", json={"error_rate": 1, "error_status": 400}, timeout=5)
    events = [e for e in generate_day(5, seed=3) if e["origin"] == "onestop" and e["sequence"] == 1][:3]
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    drain(later)
    return events


def test_nothing_is_shown_without_logging_in(console: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in ("/console/", "/console/deadletters", "/console/dossiers/X", "/console/reports"):
        answer = httpx.get(f"{console}{path}", timeout=10)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login?next="), path
    refused = httpx.post(f"{console}/console/login", data={"username": OPERATOR, "password": "sai"}, timeout=10)
    assert refused.status_code == 401 and "Sai tài khoản hoặc mật khẩu" in refused.text
    forged = httpx.get(f"{console}/console/", cookies={"motcua_console": f"{OPERATOR}|9999999999|00"}, timeout=10)
    assert forged.status_code == 303
    monkeypatch.delenv("MOTCUA_CONSOLE_SECRET")
    closed = httpx.get(f"{console}/console/", timeout=10)
    assert closed.status_code == 503 and "MOTCUA_CONSOLE_SECRET" in closed.text


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_overview_counts_per_destination_and_charts_the_hours(
    console: str, dead_day: list[dict], relay_config: RelayConfig,
) -> None:
    # and one event of another origin, delivered to the one-stop software: a lag to show
    answer = {**dead_day[0], "event_id": "payment-test-1", "origin": "payment", "type": "fee.paid", "sequence": 1,
              "data": {"fee_id": "LP-1", "amount": 10000, "provider": "cash", "transaction_id": "T1",
                       "paid_at": dead_day[0]["occurred_at"]}}
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, [answer], datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    httpx.delete(f"{relay_config.sandbox.url}/_admin/faults", timeout=5)
    drain(later)
    with logged_in(console) as client:
        page = client.get("/console/").text
        english = client.get("/console/?lang=en").text
    row = re.search(r'<tr data-destination="warehouse">(.*?)</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r'<td[^>]*>(.*?)</td>', row.group(1), re.S)
    numbers = [re.sub(r"<[^>]+>", "", c).strip() for c in cells]
    assert numbers[1:7] == ["1", "0", "3", "1", "0", "3"]  # hour and day: delivered, retrying, dead
    assert re.fullmatch(r"\d+\.\d s", numbers[7]) and numbers[8] == "0"  # the lag of the one delivered; none open
    onestop = re.search(r'<tr data-destination="onestop">(.*?)</tr>', page, re.S)
    assert onestop is not None and re.search(r">\d+\.\d s<", onestop.group(1)), onestop.group(1)
    assert 'id="chart"' in page and page.count("<rect") == 48
    assert "Dead letters" in english and "Last 24 hours" in english


def test_an_operator_finds_a_dead_letter_replays_it_and_sees_it_delivered(
    console: str, dead_day: list[dict], relay_config: RelayConfig,
) -> None:
    with logged_in(console) as client:
        # finds: the dead letters of the warehouse, with the reason and the last answer
        page = client.get("/console/deadletters", params={"destination": "warehouse"}).text
        ids = re.findall(r'<tr data-id="(\d+)">', page)
        assert len(ids) == 3 and "HTTP 400 rejected" in page
        # a replay without the form's token is refused
        assert client.post("/console/deadletters/replay", data={"csrf": "0" * 32, "ids": ids[0]}).status_code == 403
        # the subscriber is fixed; the operator replays one, then all that match
        httpx.delete(f"{relay_config.sandbox.url}/_admin/faults", timeout=5)
        one = client.post("/console/deadletters/replay?destination=warehouse", data={"csrf": csrf(page), "ids": ids[0]})
        assert one.status_code == 303 and "replayed=1" in one.headers["location"]
        drain(later)
        page = client.get("/console/deadletters", params={"destination": "warehouse"}).text
        assert len(re.findall(r'<tr data-id="(\d+)">', page)) == 2
        rest = client.post("/console/deadletters/replay?destination=warehouse",
                           data={"csrf": csrf(page), "scope": "all"})
        assert "replayed=2" in rest.headers["location"]
        drain(later)
        assert "<tr data-id=" not in client.get("/console/deadletters").text
    counts = queries.status_counts(get_runtime().engine)
    assert counts["warehouse"] == {"delivered": 3}


def test_a_dossier_page_masks_the_citizen_until_revealed_and_the_reveal_is_logged(
    console: str, dead_day: list[dict],
) -> None:
    event = dead_day[0]
    name = event["applicant"]["name"]
    with logged_in(console) as client:
        page = client.get(f"/console/dossiers/{event['dossier_code']}").text
        assert name not in page and mask_value(name) in page
        assert "<tr class=\"event\">" in page and "warehouse" in page and "HTTP 400 rejected" in page
        with captured_logs() as logs:
            revealed = client.post(f"/console/dossiers/{event['dossier_code']}/reveal", data={"csrf": csrf(page)}).text
        assert name in revealed
        missing = client.get("/console/search", params={"q": "KHONG-CO"}, follow_redirects=True)
        assert missing.status_code == 404
    [reveal] = [entry for entry in logs if entry["event"] == "console.reveal"]
    assert reveal["operator"] == OPERATOR and reveal["dossier_code"] == event["dossier_code"]
    assert name not in str(reveal) and reveal["log_level"] == "warning"


def test_the_hash_password_command_makes_an_entry_the_console_accepts() -> None:
    import subprocess
    import sys

    from api.console.auth import check_password
    from tests.harness import ROOT

    made = subprocess.run([sys.executable, "-m", "cli.main", "console", "hash-password", "vanhanh02"],
                          input="mot-mat-khau-dai\nmot-mat-khau-dai\n", capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    entry = re.search(r"(vanhanh02):(pbkdf2_sha256\$\S+)", made.stdout)  # after the prompts, on stdout too
    assert entry is not None, made.stdout
    stored = entry.group(2)
    assert stored.startswith("pbkdf2_sha256$240000$")
    assert check_password("mot-mat-khau-dai", stored) and not check_password("mot-mat-khau-khac", stored)


def test_dead_letters_page_on_by_keyset_and_the_reports_show_a_days_reconciliation(
    console: str, dead_day: list[dict], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from store import payments

    monkeypatch.setattr("api.console.app.PAGE", 2)
    with logged_in(console) as client:
        first = client.get("/console/deadletters", params={"destination": "warehouse"}).text
        shown = re.findall(r'<tr data-id="(\d+)">', first)
        following = re.search(r'href="([^"]+)" id="next-page"', first)
        assert len(shown) == 2 and following is not None
        second = client.get(following.group(1).replace("&amp;", "&")).text
        rest = re.findall(r'<tr data-id="(\d+)">', second)
        assert len(rest) == 1 and not set(rest) & set(shown) and 'id="next-page"' not in second
        # a reconciliation stored for a day shows on the reports page for that day
        day = "2026-11-20"
        payments.replace_lines(get_runtime().engine, "warehouse", day, [{
            "outcome": "amount_mismatch", "bill_code": "HS-1-LP", "transaction_id": "KP1", "dossier_code": "HS-1",
            "bill_amount": 50000, "settled_amount": 49000, "callbacks": 1, "paid_at": None,
            "note": "paid 49.000 đ for a bill of 50.000 đ: held, not marked paid"}], datetime.now(UTC))
        monkeypatch.setattr("api.console.app.get_runtime", lambda: _with_payment_destination(get_runtime()))
        page = client.get("/console/reports", params={"day": day}).text
    assert "HS-1-LP" in page and "amount_mismatch" in page and "49.000 đ" in page and "held, not marked paid" in page


def _with_payment_destination(rt: Any) -> Any:
    """The runtime, its routing seen with the warehouse as a payment destination (for the reports page only)."""
    from types import SimpleNamespace

    destinations = {name: SimpleNamespace(kind="payment" if name == "warehouse" else d.kind)
                    for name, d in rt.routing.destinations.items()}
    return SimpleNamespace(engine=rt.engine, routing=SimpleNamespace(destinations=destinations))
