"""Fee collection end to end: a bill once per fee, a payment once per bill, anomalies held and reported.

Real everything: the payment platform simulator (JSON, checksums, citizens paying, callbacks lost,
repeated or of another amount), the bank's SOAP simulator driven by zeep (and its VNPAY-style IPN),
the one-stop simulator receiving ``fee.bill_created`` and ``fee.paid``, the callback endpoints over
HTTP, Redis, the ledger; in-process deliveries here, one at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
import redis
from sqlalchemy import select

from adapters.payment import bill_code
from api.app import create_app
from sandbox.onestop import create_app as onestop_app
from sandbox.payment import citizens_pay
from sandbox.payment import create_app as platform_app
from sandbox.workload import send_events_sync
from schemas import payment as wire
from schemas.vietnam import VN_TZ
from services.payment.inbound import query_unanswered, run_reconciliation
from services.payment.report import HEADERS
from store import payments
from store.db import upgrade
from store.tables import BillState, attempts, bills, deliveries, payment_callbacks
from tasks.delivery import run_delivery
from tasks.runtime import get_runtime, reset_runtime
from tests.harness import become_relay, drain, new_secret, relay_env, wait_for, worker_and_beat
from tests.payment_stack import (
    CALLBACK_KEY,
    CLIENT,
    REQUEST_KEY,
    TMN,
    VNPAY_SECRET,
    addresses,
    amount_of,
    assessed_fees,
    bill_codes,
    callbacks_answered,
    callbacks_recorded,
    ingest,
    later,
    paid_codes,
    pay,
    payer,
    received,
    relay,
    routing,
    transactions,
    verdicts,
)
from tests.servers import run_asgi


def bank_codes(fees: list[dict[str, Any]]) -> list[str]:
    """The bank's bill codes of the fees (the fee id, which names its dossier)."""
    return [bill_code(f["dossier_code"], f["data"]["fee_id"]) for f in fees]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/relay.db"
    upgrade(url)
    return url


@pytest.fixture
def platform(sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    with relay(sqlite_url, redis_url, tmp_path, monkeypatch, "platform") as urls:
        yield urls


@pytest.fixture
def bank(sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    with relay(sqlite_url, redis_url, tmp_path, monkeypatch, "bank") as urls:
        yield urls


# ----------------------------------------------------------------------------------- the platform


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_fee_is_billed_once_and_paid_once_however_often_the_platform_calls_back(
    db: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    from tests.conftest import _fresh_pg

    url = _fresh_pg(request.getfixturevalue("pg_url")) if db == "postgresql" else f"sqlite:///{tmp_path}/relay.db"
    if db == "sqlite":
        upgrade(url)
    with relay(url, redis_url, tmp_path, monkeypatch, "platform") as urls:
        # given an assessed fee, billed at the platform
        [fee] = assessed_fees(1)
        ingest([fee])
        drain(later)
        [code] = bill_codes([fee])
        assert list(transactions(urls)) == [code]
        [created] = received(urls["onestop"], "fee.bill_created")
        assert created["data"]["payment_url"].endswith(f"?txn={code}") and created["origin"] == "payment"
        # when the citizen pays and the platform calls back five times
        pay(urls, code, copies=5)
        callbacks_answered(urls, code, 5)
        drain(later)
        # then the one-stop software hears of the payment once, and every callback was answered 0
        [paid] = received(urls["onestop"], "fee.paid")
        assert int(paid["data"]["amount"]) == amount_of(fee)
        assert paid["data"]["transaction_id"] == transactions(urls)[code]["transaction_code"]
        assert transactions(urls)[code]["callbacks"] == [0] * 5
        assert sorted(verdicts(code)) == ["paid", "repeat", "repeat", "repeat", "repeat"]
        assert payments.get_bill(get_runtime().engine, code).state == BillState.PAID


def test_a_bill_whose_registration_timed_out_after_it_landed_is_found_not_registered_again(
    platform: dict, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the platform registers the transaction, then hangs past the read timeout
    httpx.post(f"{platform['provider']}/_admin/faults", json={"timeout_rate": 1, "hang_seconds": 3},
               timeout=5).raise_for_status()
    [fee] = assessed_fees(1)
    ingest([fee])
    with get_runtime().engine.connect() as conn:
        [delivery_id] = conn.execute(select(deliveries.c.id)).scalars().all()
    run_delivery(delivery_id, "payment", clock=lambda: datetime.now(UTC))
    # when the platform is well again and the delivery is retried
    httpx.delete(f"{platform['provider']}/_admin/faults", timeout=5).raise_for_status()
    drain(later)
    # then one transaction exists, and the second attempt found it first
    [code] = bill_codes([fee])
    assert list(transactions(platform)) == [code]
    with get_runtime().engine.connect() as conn:
        outcomes = conn.execute(select(attempts.c.outcome, attempts.c.response_excerpt)
                                .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
                                .where(deliveries.c.destination == "payment").order_by(attempts.c.number)).all()
    assert [o.outcome for o in outcomes] == ["retryable", "delivered"]
    assert "already held by the platform" in outcomes[1].response_excerpt
    assert len(received(platform["onestop"], "fee.bill_created")) == 1


def test_anomalies_are_held_recovered_and_reported_and_a_rerun_changes_nothing(platform: dict) -> None:
    # given six bills at the platform
    fees = assessed_fees(6)
    ingest(fees)
    drain(later)
    ok, lost, wrong, unpaid, repeated, twice = bill_codes(fees)
    # when citizens pay: one normally, one whose callback is lost, one the wrong amount, one three callbacks;
    # a payment nobody billed comes with a callback; one bill is never paid
    pay(platform, ok)
    pay(platform, lost, lost=True)
    pay(platform, wrong, amount=amount_of(fees[2]) - 1000)
    pay(platform, repeated, copies=3)
    pay(platform, twice)
    httpx.post(f"{platform['provider']}/_admin/settle-extra",
               json={"transaction_id": "NOT-OURS-1", "amount": 25000, "callback": True}, timeout=5).raise_for_status()
    for code, n in ((ok, 1), (wrong, 1), (repeated, 3), (twice, 1)):
        callbacks_answered(platform, code, n)
    wait_for(lambda: verdicts("NOT-OURS-1"), 10, what="the stray callback")
    # and the query of unanswered bills runs, then the reconciliation
    asked = query_unanswered(payer())
    drain(later)
    today = datetime.now(VN_TZ).date()
    report = run_reconciliation(payer(), today)
    drain(later)
    # then the anomalies are exactly the lost callback, the wrong amount and the stray payment
    outcomes = {line.bill_code: line.outcome for line in report.lines}
    assert outcomes == {ok: "matched", lost: "recovered", wrong: "amount_mismatch", repeated: "matched",
                        twice: "matched", "NOT-OURS-1": "unknown"}
    assert [line.callbacks for line in report.lines if line.bill_code == repeated] == [3]
    assert asked.paid == 1 and asked.mismatched == 0  # the lost one; the wrong one had been held already
    # and every correctly paid bill reached the one-stop software once, the wrong one never
    assert paid_codes(platform["onestop"]) == Counter({ok: 1, lost: 1, repeated: 1, twice: 1})
    engine = get_runtime().engine
    states = {code: payments.get_bill(engine, code).state for code in bill_codes(fees)}
    assert states == {ok: BillState.PAID, lost: BillState.PAID, wrong: BillState.QUARANTINED, unpaid: BillState.ISSUED,
                      repeated: BillState.PAID, twice: BillState.PAID}
    assert payments.get_bill(engine, lost).paid_via == "query"
    assert verdicts("NOT-OURS-1") == ["unknown_bill"] and verdicts(wrong) == ["amount_mismatch"]
    # and a rerun gives the same lines, stored once
    again = run_reconciliation(payer(), today)
    assert again.lines == report.lines
    assert len(payments.stored_lines(engine, "payment", today.isoformat())) == len(report.lines) == 6


def test_the_reconcile_command_prints_the_anomalies_and_writes_a_spreadsheet_to_sign(
    platform: dict, tmp_path: Path,
) -> None:
    # given two paid bills, one of them for the wrong amount
    fees = assessed_fees(2)
    ingest(fees)
    drain(later)
    right, wrong = bill_codes(fees)
    pay(platform, right)
    pay(platform, wrong, amount=amount_of(fees[1]) + 500, lost=True)
    callbacks_answered(platform, right, 1)
    # when the operator reconciles today, twice
    today = datetime.now(VN_TZ).date().isoformat()
    command = [sys.executable, "-m", "cli.main", "reconcile", "--date", today, "--out", str(tmp_path / "reports")]
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, env={**platform["env"], "COLUMNS": "250"},
                                timeout=60)
        # then it exits 3 (anomalies), and the tables say what matched and what is held
        assert result.returncode == 3, result.stdout + result.stderr
    assert f"Reconciliation of payment, {today}" in result.stdout
    counts = {c[0].split(":")[0]: c[1] for c in (
        [cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line)
        if c and ":" in c[0] and c[0].split(":")[0] in ("matched", "amount_mismatch", "recovered")}
    assert counts == {"matched": "1", "recovered": "0", "amount_mismatch": "1"}
    anomaly = next(line for line in result.stdout.splitlines() if wrong in line)
    assert "amount_mismatch" in anomaly and "held, not marked paid" in anomaly
    # and the spreadsheet holds the lines under their Vietnamese headers, money as numbers, a place to sign
    book = openpyxl.load_workbook(tmp_path / "reports" / f"reconciliation-payment-{today}.xlsx")
    cells = [[c for c in row if c is not None] for row in book.active.iter_rows(values_only=True)]
    header = cells.index([*HEADERS])
    lines = cells[header + 1:header + 3]
    assert [(row[2], row[5], row[6]) for row in lines] == [
        (wrong, amount_of(fees[1]), amount_of(fees[1]) + 500), (right, amount_of(fees[0]), amount_of(fees[0]))]
    assert ["NGƯỜI LẬP BIỂU", "KẾ TOÁN", "THỦ TRƯỞNG ĐƠN VỊ"] in cells
    csv_text = (tmp_path / "reports" / f"reconciliation-payment-{today}.csv").read_text(encoding="utf-8-sig")
    assert csv_text.splitlines()[0].startswith("outcome,bill_code") and len(csv_text.splitlines()) == 3


def test_the_morning_beat_job_reconciles_the_day_it_is_given_and_writes_the_report(
    platform: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.schedules import crontab

    from config.celery import celery_config
    from config.settings import Settings
    from tasks.jobs import TASKS
    from tasks.schedule import service_schedule

    # the schedule: the previous day, at MOTCUA_RECONCILE_AT in the app's time zone (Vietnam)
    monkeypatch.setenv("MOTCUA_RECONCILE_AT", "05:45")
    rt = get_runtime()
    config = celery_config(Settings(), rt.routing, schedule=service_schedule(rt.registry, rt.routing))
    entry = config["beat_schedule"]["payment-reconciliation"]
    assert entry["task"] == "relay.payment.reconcile" and entry["schedule"] == crontab(hour=5, minute=45)
    assert config["timezone"] == "Asia/Ho_Chi_Minh"
    # the job, given a day: one line per payment, the files where the settings say
    monkeypatch.setenv("MOTCUA_REPORTS_DIR", str(tmp_path / "morning"))
    reset_runtime()
    [fee] = assessed_fees(1)
    ingest([fee])
    drain(later)
    [code] = bill_codes([fee])
    pay(platform, code, lost=True)
    today = datetime.now(VN_TZ).date().isoformat()
    summary = TASKS["relay.payment.reconcile"](day=today)
    assert summary["payment"] | {"xlsx": "", "csv": ""} == {
        "day": today, "lines": 1, "anomalies": 1, "recovered": 1, "xlsx": "", "csv": ""}
    assert Path(summary["payment"]["xlsx"]) == tmp_path / "morning" / f"reconciliation-payment-{today}.xlsx"
    assert Path(summary["payment"]["xlsx"]).stat().st_size > 4000


def test_a_payment_settled_before_midnight_and_called_back_after_is_matched_once_and_no_anomaly_next_day(
    platform: dict,
) -> None:
    # given a bill paid at 23:59:59 yesterday whose callback (which carries no time) the relay receives today
    [fee] = assessed_fees(1)
    ingest([fee])
    drain(later)
    [code] = bill_codes([fee])
    today = datetime.now(VN_TZ).date()
    yesterday = today - timedelta(days=1)
    received_from = datetime.now(UTC)
    pay(platform, code, paid_at=datetime.combine(yesterday, time(23, 59, 59), VN_TZ).isoformat())
    callbacks_answered(platform, code, 1)
    drain(later)
    # then the payment is dated when the relay learnt it, the fee.paid with it
    bill = payments.get_bill(get_runtime().engine, code)
    assert bill.paid_via == "callback" and bill.paid_at >= received_from
    [paid] = received(platform["onestop"], "fee.paid")
    assert datetime.fromisoformat(paid["data"]["paid_at"]) == bill.paid_at
    # and yesterday's reconciliation matches it, today's has nothing to say of it
    assert {line.bill_code: line.outcome for line in run_reconciliation(payer(), yesterday).lines} == {
        code: "matched"}
    assert run_reconciliation(payer(), today).lines == []


def test_a_callback_with_a_bad_checksum_or_another_client_changes_nothing(platform: dict) -> None:
    [fee] = assessed_fees(1)
    ingest([fee])
    drain(later)
    [code] = bill_codes([fee])
    body = wire.PlatformCallback(client_id=CLIENT, transaction_id=code, transaction_code="KP1",
                                 trans_amount=amount_of(fee), command=wire.COMMAND, addition_fee=0,
                                 version=wire.VERSION, status=wire.PAID, check_sum="")
    forged = body.model_copy(update={"check_sum": wire.callback_checksum("another-key", body)})
    other = body.model_copy(update={"client_id": "UBND-KHAC"})
    other.check_sum = wire.callback_checksum(CALLBACK_KEY, other)
    url = f"{platform['api']}/v1/callbacks/payment/platform"
    for bad in (forged, other):
        answer = httpx.post(url, content=bad.model_dump_json(), headers={"content-type": "application/json"})
        assert (answer.status_code, answer.json()["return_code"]) == (200, -1)
    answer = httpx.post(url, content=b'{"transaction_id": 1}', headers={"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["return_code"] == -1
    with get_runtime().engine.connect() as conn:
        assert conn.execute(select(payment_callbacks.c.id)).all() == []
    assert payments.get_bill(get_runtime().engine, code).state == BillState.ISSUED
    # the right key is accepted
    body.check_sum = wire.callback_checksum(CALLBACK_KEY, body)
    answer = httpx.post(url, content=body.model_dump_json(), headers={"content-type": "application/json"})
    assert answer.json() == {"return_code": 0, "return_msg": "recorded"} and verdicts(code) == ["paid"]


# ----------------------------------------------------------------------------------- the bank


def ipn(urls: dict[str, str], params: dict[str, str], secret: str = VNPAY_SECRET) -> dict[str, Any]:
    signed = {**params, "vnp_SecureHash": wire.vnpay_signature(secret, params)}
    return dict(httpx.get(f"{urls['api']}/v1/callbacks/payment/vnpay", params=signed, timeout=10).json())


def bank_pay(urls: dict[str, str], bill: str, **how: Any) -> dict[str, Any]:
    answer = httpx.post(f"{urls['provider']}/_admin/pay", json={"billCode": bill, **how}, timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def ipn_replies(urls: dict[str, str], n: int) -> dict[str, int]:
    return dict(wait_for(lambda: (r := httpx.get(f"{urls['provider']}/_admin/stats", timeout=5).json()["ipn_replies"])
                         and sum(r.values()) >= n and r, 10, what=f"{n} IPN replies"))


def test_the_bank_bills_over_soap_and_its_vnpay_ipn_pays_once_holds_and_reports(bank: dict) -> None:
    # given three bills created at the bank through its WSDL
    fees = assessed_fees(4, seed=7)
    ingest(fees)
    drain(later)
    first, wrong, quiet, unpaid = bank_codes(fees)
    held = {b["billCode"]: b for b in httpx.get(f"{bank['provider']}/_admin/bills", timeout=5).json()}
    assert sorted(held) == sorted(bank_codes(fees)) and all(b["create_calls"] == 1 for b in held.values())
    created = {e["data"]["bill_code"]: e for e in received(bank["onestop"], "fee.bill_created")}
    assert created[first]["data"]["payment_url"] == held[first]["paymentUrl"]
    # when one is paid with its IPN twice, one for less, one without an IPN
    bank_pay(bank, first, copies=2)
    bank_pay(bank, wrong, amount=amount_of(fees[1]) // 2)
    bank_pay(bank, quiet, notify=False)
    assert ipn_replies(bank, 3) == {"00": 1, "02": 1, "04": 1}
    # and a forged IPN and one for a bill never issued arrive
    params = {"vnp_TmnCode": TMN, "vnp_TxnRef": unpaid, "vnp_Amount": str(amount_of(fees[3]) * 100),
              "vnp_ResponseCode": "00", "vnp_TransactionStatus": "00", "vnp_TransactionNo": "14000001",
              "vnp_PayDate": datetime.now(VN_TZ).strftime("%Y%m%d%H%M%S")}
    assert ipn(bank, params, secret="not-the-secret")["RspCode"] == "97"
    assert ipn(bank, {**params, "vnp_TxnRef": "NOT-OURS-2"})["RspCode"] == "01"
    # then after the query of unanswered bills and the day's reconciliation
    query_unanswered(payer())
    report = run_reconciliation(payer(), datetime.now(VN_TZ).date())
    drain(later)
    paid = Counter(e["data"]["fee_id"] for e in received(bank["onestop"], "fee.paid"))
    assert paid == Counter({first: 1, quiet: 1})
    assert {line.bill_code: line.outcome for line in report.lines} == {
        first: "matched", quiet: "recovered", wrong: "amount_mismatch", "NOT-OURS-2": "unknown"}
    assert payments.get_bill(get_runtime().engine, unpaid).state == BillState.ISSUED
    with get_runtime().engine.connect() as conn:
        assert dict(Counter(conn.execute(select(bills.c.state)).scalars())) == {
            BillState.PAID: 2, BillState.QUARANTINED: 1, BillState.ISSUED: 1}


# ----------------------------------------------------------------------------------- a working day, real worker


@pytest.mark.slow
@pytest.mark.postgres
def test_a_thousand_bills_with_lost_repeated_wrong_and_stray_payments_reconcile_exactly(
    pg_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from store.queries import status_counts
    from tests.conftest import _fresh_pg

    database_url = _fresh_pg(pg_url)
    broker = f"{redis_url.rsplit('/', 1)[0]}/{os.environ.get('MOTCUA_TEST_PAYMENT_REDIS_DB', '7')}"
    redis.Redis.from_url(broker).flushdb()
    onestop_secret, intake_secret = new_secret(), new_secret()
    sim = platform_app(client_id=CLIENT, request_key=REQUEST_KEY, callback_key=CALLBACK_KEY)
    with run_asgi(sim) as platform_url, run_asgi(onestop_app({"onestop": onestop_secret})) as onestop_url:
        # the query of unanswered bills waits an hour: the reconciliation alone finds the lost callbacks
        path = routing(tmp_path / "routing.toml", "platform", query_after="1h", read=5)
        env = relay_env(database_url, broker, intake_secret, {"onestop": onestop_secret}, path,
                        **addresses(platform_url, onestop_url),
                        MOTCUA_PAYMENT_REQUEST_KEY=REQUEST_KEY, MOTCUA_PAYMENT_CALLBACK_KEY=CALLBACK_KEY,
                        MOTCUA_SWEEP_INTERVAL_SECONDS="0.5", MOTCUA_WORKER_CONCURRENCY="48",
                        MOTCUA_REDIS_PREFIX=f"pay{uuid.uuid4().hex[:6]}")
        become_relay(monkeypatch, env)
        worker, beat = worker_and_beat(env, "payment", tmp_path)
        try:
            with run_asgi(create_app()) as api_url:
                httpx.post(f"{platform_url}/_admin/callback", json={"url": f"{api_url}/v1/callbacks/payment/platform"},
                           timeout=5).raise_for_status()
                # given a thousand fees assessed through the intake, billed by the worker
                fees = assessed_fees(1000)
                report = send_events_sync(f"{api_url}/v1/events", intake_secret, fees)
                assert report.accepted == 1000, report.errors[:3]
                wait_for(lambda: payments.bill_counts(get_runtime().engine).get(BillState.ISSUED, 0) == 1000, 120,
                         what="a thousand bills")
                # when the citizens pay: 10 % of callbacks lost, 5 % repeated, 3 short, 2 strangers
                paid_at = datetime.now(VN_TZ).replace(microsecond=0)
                amounts = dict(zip(bill_codes(fees), (amount_of(f) for f in fees), strict=True))
                day = citizens_pay(platform_url, list(amounts.items()), lost_rate=0.10, duplicate_rate=0.05,
                                   mismatches=3, unknown=2, delay_ms=300, paid_at=paid_at, seed=29)
                heard = (1000 - len(day.lost)) + len(day.repeated) + len(day.unknown)
                wait_for(lambda: callbacks_recorded() == heard, 60, what=f"{heard} callbacks recorded")
                # and the day is reconciled (the morning's beat job, run now)
                result = run_reconciliation(payer(), paid_at.date())
                wait_for(lambda: not any(s in ("pending", "in_flight", "retrying")
                                         for c in status_counts(get_runtime().engine).values() for s in c if c[s]),
                         120, what="every delivery final")
        finally:
            worker.close()
            beat.stop()
            reset_runtime()
            redis.Redis.from_url(broker).flushdb()
        # then every bill paid its amount is fee.paid exactly once at the one-stop software, a short one never
        paid = paid_codes(onestop_url)
        assert set(paid) == set(amounts) - day.mismatched and set(paid.values()) == {1}
        # and the report lists exactly the injected anomalies: nothing more, nothing missed
        found: dict[str, set[str]] = {}
        for line in result.lines:
            found.setdefault(line.outcome, set()).add(line.bill_code)
        assert {k: v for k, v in found.items() if k != "matched"} == day.anomalies
        assert found["matched"] == set(amounts) - day.lost - day.mismatched
        assert len(result.lines) == 1002 and 80 <= len(day.lost) <= 120 and 30 <= len(day.repeated) <= 70
        assert {line.callbacks for line in result.lines if line.bill_code in day.repeated} == {2}
