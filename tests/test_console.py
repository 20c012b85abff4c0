"""The operator console over real HTTP: nothing without logging in, the overview, dead letters found and
replayed until delivered, a dossier's timeline with personal data masked unless revealed (and that logged); and
the console on a hostile network: log-ins locked out after failures, an unknown name as slow as a known one, a
logged-out cookie refused everywhere, the security headers, input it cannot use answered 400 (the fuzz of every
page and form is tests/test_console_fuzz.py)."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.app import create_app
from api.console.auth import COOKIE, hash_password
from sandbox.workload import generate_day
from schemas.privacy import mask_value
from store import intake, queries
from tasks.runtime import get_runtime, reset_runtime
from tests.conftest import RelayConfig
from tests.harness import RedisServer, captured_logs, drain, wait_for
from tests.servers import run_asgi

OPERATOR, PASSWORD = "vanhanh01", "mat-khau-van-hanh"


@pytest.fixture
def console_settings() -> dict[str, str]:
    """``MOTCUA_*`` settings of the relay serving the console (a test parametrises it to change them)."""
    return {}


@pytest.fixture
def console(relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, console_settings: dict[str, str],
            ) -> Iterator[str]:
    with serve_console(monkeypatch, console_settings) as url:
        yield url


@contextmanager
def serve_console(monkeypatch: pytest.MonkeyPatch, settings: dict[str, str]) -> Iterator[str]:
    """The API of this relay (``relay_config``), with the console's account and secret, and ``settings``."""
    monkeypatch.setenv("MOTCUA_CONSOLE_SECRET", "bi-mat-phien-lam-viec-0123456789")
    monkeypatch.setenv("MOTCUA_CONSOLE_OPERATORS", f"{OPERATOR}:{hash_password(PASSWORD, iterations=20_000)}")
    if settings:
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        reset_runtime()  # the runtime reads its settings when it is built
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
    assert re.fullmatch(r"\d+,\d giây", numbers[7]) and numbers[8] == "0"  # the lag of the one delivered; none open
    onestop = re.search(r'<tr data-destination="onestop">(.*?)</tr>', page, re.S)
    assert onestop is not None and re.search(r">\d+,\d giây<", onestop.group(1)), onestop
    assert 'id="chart"' in page and page.count("<rect") == 48
    assert "Dead letters" in english and "Last 24 hours" in english and re.search(r">\d+\.\d s<", english)


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
        # the subscriber is fixed; the operator replays one (a page asks first, and nothing moves until confirmed)
        httpx.delete(f"{relay_config.sandbox.url}/_admin/faults", timeout=5)
        asked = client.post("/console/deadletters/replay?destination=warehouse",
                            data={"csrf": csrf(page), "one": ids[0]})
        assert asked.status_code == 200 and 'data-count="1"' in asked.text
        assert re.findall(r'<tr data-id="(\d+)">', asked.text) == [ids[0]]
        assert queries.status_counts(get_runtime().engine)["warehouse"] == {"dead": 3}
        one = client.post("/console/deadletters/replay?destination=warehouse",
                          data={"csrf": csrf(asked.text), "one": ids[0], "confirmed": "yes"})
        assert one.status_code == 303 and "replayed=1" in one.headers["location"]
        drain(later)
        page = client.get("/console/deadletters", params={"destination": "warehouse"}).text
        assert len(re.findall(r'<tr data-id="(\d+)">', page)) == 2
        # then all that match, as of the page that asked
        asked = client.post("/console/deadletters/replay?destination=warehouse",
                            data={"csrf": csrf(page), "scope": "matching"})
        until = re.search(r'name="until" value="([^"]+)"', asked.text)
        assert 'data-count="2"' in asked.text and until is not None
        rest = client.post("/console/deadletters/replay?destination=warehouse",
                           data={"csrf": csrf(page), "scope": "matching", "confirmed": "yes", "until": until.group(1)})
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
        assert '<tr class="event"' in page and "warehouse" in page and "HTTP 400 rejected" in page
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
        english = client.get("/console/reports", params={"day": day, "lang": "en"}).text
    assert "HS-1-LP" in page and "Sai số tiền: tạm giữ, chưa ghi nhận" in page and "49.000 đ" in page
    assert "đã trả 49.000 đ cho hóa đơn 50.000 đ: tạm giữ, chưa ghi nhận đã thanh toán" in page
    assert "Số tiền quyết toán" in page and "Đã gửi" not in page  # the settled amount, not "sent"
    assert "Wrong amount" in english and "Settled amount" in english and "49,000 VND" in english
    assert "held, not marked paid" in english


def _with_payment_destination(rt: Any) -> Any:
    """The runtime, its routing seen with the warehouse as a payment destination (for the reports page only)."""
    from types import SimpleNamespace

    destinations = {name: d.model_copy(update={"kind": "payment"}) if name == "warehouse" else d
                    for name, d in rt.routing.destinations.items()}
    return SimpleNamespace(engine=rt.engine, routing=SimpleNamespace(destinations=destinations), settings=rt.settings,
                           redis=rt.redis, registry=rt.registry)


# -- the console on a hostile network ----------------------------------------------------------------------------

def log_in(client: httpx.Client, name: str = OPERATOR, password: str = PASSWORD) -> httpx.Response:
    return client.post("/console/login", data={"username": name, "password": password, "next": "/console/"})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_log_ins_are_locked_out_per_account_then_per_address(console: str, relay_config: RelayConfig) -> None:
    prefix = relay_config.env["MOTCUA_REDIS_PREFIX"]
    store = redis.Redis.from_url(relay_config.env["MOTCUA_REDIS_URL"])
    with httpx.Client(base_url=console, timeout=30) as client:
        # given an operator who mistypes four times, then logs in: the success forgives the failures before it
        assert [log_in(client, password="sai").status_code for _ in range(4)] == [401] * 4
        assert log_in(client).status_code == 303
        client.cookies.clear()
        # when five more fail
        with captured_logs() as logs:
            assert [log_in(client, password="sai").status_code for _ in range(5)] == [401] * 5
            locked = log_in(client)
        # then the account is locked out: even the right password is refused, unchecked, for the window (15 min)
        assert locked.status_code == 429 and COOKIE not in locked.cookies
        assert 890 <= int(locked.headers["retry-after"]) <= 900
        assert "Tạm khóa đăng nhập vì sai quá nhiều lần. Thử lại sau 15 phút." in locked.text
        assert 0 < store.ttl(f"{prefix}:console:fails:account:{OPERATOR}") <= 900
        [onset] = [e for e in logs if e["event"] == "console.login_locked"]
        [throttled] = [e for e in logs if e["event"] == "console.login_throttled"]
        assert onset["operator"] == OPERATOR and onset["account_failures"] == 5 and onset["log_level"] == "warning"
        assert throttled["address"] == "127.0.0.1" and throttled["log_level"] == "warning"
        # a name that is no account is locked out alike (the lock-out does not tell names apart)
        assert [log_in(client, "khong-co").status_code for _ in range(6)] == [401] * 5 + [429]
        # and from one address, 20 failures of any names lock out every name, one never tried too
        assert [log_in(client, f"ten-{n}").status_code for n in range(6)] == [401] * 6  # 9 + 5 + 6 = 20 failures
        refused = log_in(client, "vanhanh02")
        assert refused.status_code == 429 and 0 < store.ttl(f"{prefix}:console:fails:address:127.0.0.1") <= 900


@pytest.mark.parametrize("console_settings", [
    {"MOTCUA_CONSOLE_LOCKOUT_ACCOUNT": "2", "MOTCUA_CONSOLE_LOCKOUT_SECONDS": "1"},
    {"MOTCUA_CONSOLE_LOCKOUT_ACCOUNT": "2", "MOTCUA_CONSOLE_LOCKOUT_SECONDS": "1", "MOTCUA_REDIS_URL": "memory://"},
], ids=["redis", "memory"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_lock_out_lasts_its_window_after_the_last_failure(console: str) -> None:
    with httpx.Client(base_url=console, timeout=30) as client:
        assert [log_in(client, password="sai").status_code for _ in range(2)] == [401, 401]
        assert log_in(client).status_code == 429
        time.sleep(1.2)
        assert log_in(client).status_code == 303


@pytest.mark.parametrize("console_settings", [{}, {"MOTCUA_REDIS_URL": "memory://"}], ids=["redis", "memory"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_logged_out_session_is_refused_everywhere(console: str, dead_day: list[dict]) -> None:
    code = dead_day[0]["dossier_code"]
    with logged_in(console) as client:
        page = client.get("/console/deadletters").text
        token, cookie = csrf(page), client.cookies[COOKIE]
        ids = re.findall(r'<tr data-id="(\d+)">', page)
        assert client.get(f"/console/dossiers/{code}").status_code == 200
        # when the operator logs out
        assert client.post("/console/logout").status_code == 303
    # then the cookie, kept or copied, opens nothing and changes nothing
    with httpx.Client(base_url=console, timeout=30, cookies={COOKIE: cookie}) as stale:
        for path in ("/console/", "/console/deadletters", f"/console/dossiers/{code}", "/console/reports",
                     f"/console/search?q={code}"):
            answer = stale.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login"), path
        for path, form in ((f"/console/dossiers/{code}/reveal", {"csrf": token}),
                           ("/console/deadletters/replay", {"csrf": token, "ids": ids[0]}),
                           ("/console/deadletters/replay", {"csrf": token, "scope": "matching"})):
            answer = stale.post(path, data=form)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login"), path
    assert queries.status_counts(get_runtime().engine)["warehouse"] == {"dead": 3}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_new_password_ends_the_accounts_sessions(console: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with logged_in(console) as client:
        assert client.get("/console/").status_code == 200
        monkeypatch.setenv("MOTCUA_CONSOLE_OPERATORS", f"{OPERATOR}:{hash_password('mat-khau-moi', iterations=1000)}")
        assert client.get("/console/").status_code == 303


@pytest.mark.parametrize("console_settings", [{"MOTCUA_CONSOLE_LOCKOUT_ACCOUNT": "1000",
                                               "MOTCUA_CONSOLE_LOCKOUT_ADDRESS": "1000"}])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_unknown_name_takes_as_long_to_refuse_as_a_known_one(
    console: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given an account whose hash is costly enough (100,000 rounds) for its check to be most of a log-in's time
    monkeypatch.setenv("MOTCUA_CONSOLE_OPERATORS", f"{OPERATOR}:{hash_password(PASSWORD, iterations=100_000)}")

    def refused_in(client: httpx.Client, name: str) -> float:
        started = time.perf_counter()
        assert log_in(client, name, "sai").status_code == 401
        return time.perf_counter() - started

    with httpx.Client(base_url=console, timeout=30) as client:
        refused_in(client, OPERATOR), refused_in(client, "khong-co")  # warm: the dummy hash is made once
        known, unknown = [], []
        for n in range(7):  # alternately, so that the machine's load weighs on both alike
            known.append(refused_in(client, OPERATOR))
            unknown.append(refused_in(client, f"khong-co-{n}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.6 < ratio < 1.6, (known, unknown)  # before, an unknown name was refused 30 times sooner


PAGES_WITHOUT_SESSION = ("/console/login", "/console/", "/console/nowhere")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_console_answer_carries_the_security_headers(console: str, dead_day: list[dict]) -> None:
    with logged_in(console) as client:
        answers = [client.get(path) for path in (
            "/console/", "/console/deadletters", f"/console/dossiers/{dead_day[0]['dossier_code']}",
            "/console/dossiers/KHONG-CO", "/console/reports", "/console/reports?day=0001-01-01")]
        answers.append(client.post(f"/console/dossiers/{dead_day[0]['dossier_code']}/reveal",
                                   data={"csrf": csrf(answers[1].text)}))
    answers += [httpx.get(f"{console}{path}", timeout=10) for path in PAGES_WITHOUT_SESSION]
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 200, 400, 200, 200, 303, 404]
    for answer in answers:
        headers = answer.headers
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
        assert headers["content-security-policy"] == (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'"), answer.url
        # and the page needs nothing the policy forbids: no script, no inline style
        assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", answer.text, re.I), answer.url
    sheet = httpx.get(f"{console}/console/static/console.css", timeout=10)
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
    assert "max-age" in sheet.headers["cache-control"] and sheet.headers["x-content-type-options"] == "nosniff"
    assert "/console/static/console.css?v=" in answers[0].text
    # the API's other answers: not framed, not sniffed, no referrer; no CSP (its /docs page loads a CDN's script)
    health = httpx.get(f"{console}/healthz", timeout=10)
    assert health.headers["x-frame-options"] == "DENY" and health.headers["x-content-type-options"] == "nosniff"
    assert health.headers["referrer-policy"] == "no-referrer" and "content-security-policy" not in health.headers


CANARY = "Nguyễn Văn An"  # a citizen's name in a value: the page refusing it must not show it

# (what is sent, the field the page must name): the five found by the independent pass first
REFUSED: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/console/deadletters", {"before": "2026-11-20T10:00:00|5"}, "Trang sau"),
    ("GET", "/console/deadletters", {"dossier": f"HS\x00{CANARY}"}, "Hồ sơ"),
    ("GET", "/console/deadletters", {"reason": f"\x00{CANARY}"}, "Lý do"),
    ("GET", f"/console/dossiers/HS%00{CANARY}", {}, "Mã hồ sơ"),
    ("GET", "/console/reports", {"day": "0001-01-01"}, "Ngày"),
    ("GET", "/console/reports", {"day": "2026-02-30"}, "Ngày"),
    ("GET", "/console/reports", {"day": f"{CANARY}"}, "Ngày"),
    ("GET", "/console/deadletters", {"destination": "\x00"}, "Đích nhận"),
    ("GET", "/console/deadletters", {"before": "0001-01-01T00:00:00+14:00|1"}, "Trang sau"),
    ("GET", "/console/deadletters", {"before": f"{datetime.now(UTC).isoformat()}|{2**63}"}, "Trang sau"),
    ("GET", "/console/deadletters", {"dossier": CANARY * 20}, "Hồ sơ"),
    ("GET", "/console/search", {"q": f"\x00{CANARY}"}, "Tra cứu mã hồ sơ"),
    ("POST", "/console/deadletters/replay", {"ids": str(2**64)}, "Lượt gửi đã chọn"),
    ("POST", "/console/deadletters/replay", {"ids": CANARY}, "Lượt gửi đã chọn"),
    ("POST", "/console/deadletters/replay", {"scope": f"all{CANARY}"}, "Phạm vi gửi lại"),
    ("POST", "/console/deadletters/replay?dossier=%00", {}, "Hồ sơ"),
    ("POST", "/console/deadletters/replay", {"one": CANARY}, "Lượt gửi được bấm"),
    ("POST", "/console/deadletters/replay", {"confirmed": CANARY}, "Xác nhận gửi lại"),
    ("POST", "/console/deadletters/replay", {"scope": "matching", "confirmed": "yes", "until": "2026-11-20T10:00:00"},
     "Thời điểm xác nhận"),
    ("POST", "/console/deadletters/replay", {"scope": "matching", "confirmed": "yes", "until": CANARY},
     "Thời điểm xác nhận"),
    ("POST", "/console/dossiers/X/reveal", {"csrf": CANARY * 10}, "Mã biểu mẫu"),
]


def test_input_the_console_cannot_use_is_a_400_that_names_the_field(console: str, dead_day: list[dict]) -> None:
    with logged_in(console) as client:
        token = csrf(client.get("/console/deadletters").text)
        for method, path, values, label in REFUSED:
            if method == "GET":
                answer = client.get(path, params=values)
            else:
                answer = client.post(path, data={"csrf": token, **values})
            assert answer.status_code == 400, (path, values, answer.status_code, answer.text[:300])
            assert label in answer.text and "Không đọc được giá trị của" in answer.text, (path, values)
            assert CANARY not in answer.text, (path, values)
        unparsable = client.post("/console/deadletters/replay", content=b"csrf=1",
                                 headers={"content-type": "multipart/form-data"})  # no boundary
        assert unparsable.status_code == 400 and "Nội dung biểu mẫu" in unparsable.text
        assert client.post("/console/login", data={"username": "x" * 70_000}).status_code == 413
        english = client.get("/console/reports", params={"day": "0001-01-01", "lang": "en"})
        assert english.status_code == 400 and "These values cannot be read: Day" in english.text
        # and what it can use still works: an aware time, a day, a dossier
        assert client.get("/console/deadletters", params={"before": f"{later().isoformat()}|1"}).status_code == 200
        assert client.get("/console/reports", params={"day": "2026-11-20"}).status_code == 200
    assert queries.status_counts(get_runtime().engine)["warehouse"] == {"dead": 3}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_redis_the_console_refuses_rather_than_guessing(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        with serve_console(monkeypatch, {"MOTCUA_REDIS_URL": server.url}) as url, \
                httpx.Client(base_url=url, timeout=30) as client:
            assert log_in(client).status_code == 303 and client.get("/console/").status_code == 200
            # when Redis goes away, nobody can tell whether this session was closed, nor whether a name is locked out
            server.stop()
            page, refused = client.get("/console/"), log_in(client)
    finally:
        server.stop()
    assert page.status_code == 503 and "Redis không trả lời" in page.text
    assert refused.status_code == 503 and COOKIE not in refused.cookies


# -- the console's words: one language per page, destinations by their titles ---------------------------------------

WALK_ROUTING = """
[destinations.portal]
kind = "portal"
url = "http://127.0.0.1:9/portal"
username_env = "MOTCUA_PORTAL_USERNAME"
password_env = "MOTCUA_PORTAL_PASSWORD"

[destinations.payment]
kind = "payment"
title = { vi = "Kho bạc Nhà nước", en = "State Treasury" }
provider = "platform"
url = "http://127.0.0.1:9/payment"
client_id = "UBND-HALONG"
request_key_env = "MOTCUA_PAYMENT_REQUEST_KEY"
callback_key_env = "MOTCUA_PAYMENT_CALLBACK_KEY"
return_url = "https://dichvucong.quangninh.gov.vn/thanh-toan/ket-qua"
"""

# What the console showed in English before it spoke Vietnamese throughout: none may be on a Vietnamese page.
ENGLISH = ("Overview", "Dead letters", "Reports", "Log in", "Log out", "Delivered", "delivered", "Retrying",
           "retrying", "Dead", "dead", "Superseded", "Pending", "In flight", "Rejected", "permanent", "retryable",
           "matched", "amount_mismatch", "not_settled", "recovered", "duplicate", "unit", "dossiers", "synced",
           "failed", "TOTAL", "Replay", "Worker", "Workers", "answering", "event", "attempt", "ref", "Reason",
           "Destination", "Filter", "Settled", "Bill", "Outcome", "Note", "Timeline", "Applicant", "Next page",
           "Cancel", "Confirm", "min", "ago", "callback", "held", "refund", "None", "Unknown", "Breaker", "Open",
           "Closed", "Lag", "Oldest", "Last hour", "Last answer", "When", "Attempts", "Status", "Deliveries", "Day",
           "Amount", "Wrong account", "onestop", "warehouse")
# A Vietnamese letter (a vowel with its diacritics, đ): none may be on an English page but in what came as data.
VIETNAMESE = re.compile("[àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ]", re.I)
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def shown_words(html: str) -> str:
    """What a page says to its reader, in its own language: its text and its tooltips, placeholders and labels,
    leaving out what came as data (``class="raw"``, ``<code>``: a service's answer, a code, an id; an element's
    ``data-raw``: that part of its text) and what is marked as another language (the language switch)."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.page_lang, self.skipping, self.data_raw = "", 0, ""
            self.stack: list[bool] = []
            self.out: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = {k: v or "" for k, v in attrs}
            if tag == "html":
                self.page_lang = found.get("lang", "")
            skip = ("raw" in found.get("class", "").split() or tag == "code"
                    or (bool(found.get("lang")) and found.get("lang") != self.page_lang))
            if not self.skipping and not skip:
                for name in ("placeholder", "aria-label") + (() if "dest" in found.get("class", "") else ("title",)):
                    self.out.append(found.get(name, ""))
            if tag not in _VOID:
                self.stack.append(skip)
                self.skipping += skip
                self.data_raw = found.get("data-raw", "")

        def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            pass

        def handle_endtag(self, tag: str) -> None:
            if tag not in _VOID and self.stack:
                self.skipping -= self.stack.pop()
                self.data_raw = ""

        def handle_data(self, data: str) -> None:
            if not self.skipping:
                self.out.append(data.replace(self.data_raw, "") if self.data_raw else data)

    reader = Reader()
    reader.feed(html)
    return " ".join(" ".join(reader.out).split())


def reconciliation_of_every_shape(day: date) -> list[Any]:
    """A day's reconciliation with a line of each outcome and each note ``adapters/payment.py`` writes."""
    from adapters.payment import BillView, CallbackView, Settlement, reconcile
    from schemas.vietnam import VN_TZ

    at = datetime.combine(day, datetime.min.time(), VN_TZ) + timedelta(hours=9)
    bills = {code: BillView(code, 50000, f"HS-{code}", via) for code, via in
             (("B1", None), ("B2", "query"), ("B3", None), ("B4", None), ("B7", None))}
    settled = [Settlement("B1", "T1", 50000, at), Settlement("B1", "T1b", 50000, at + timedelta(minutes=5)),
               Settlement("B2", "T2", 50000, at), Settlement("B3", "T3", 50000, at),
               Settlement("B4", "T4", 49000, at), Settlement("B5", "T5", 20000, at), Settlement("B6", "T6", 1000, at)]
    callbacks = [CallbackView("B1", "T1", 50000, at), CallbackView("B1", "T1", 50000, at),
                 CallbackView("B5", "T5", 20000, at), CallbackView("B7", "T7", 50000, at),
                 CallbackView("B8", "T8", 30000, at)]
    return reconcile(day, settled, bills, callbacks, VN_TZ)


def visit_every_page(client: httpx.Client, code: str, day: str) -> dict[str, httpx.Response]:
    """Every page the console has, logged in (as ``client`` is), in the language its cookie says."""
    pages = {name: client.get(path) for name, path in (
        ("overview", "/console/"), ("deadletters", "/console/deadletters"),
        ("replayed", "/console/deadletters?replayed=2&scope=selected"),
        ("none ticked", "/console/deadletters?notice=none_ticked"), ("dossier", f"/console/dossiers/{code}"),
        ("no dossier", "/console/dossiers/KHONG-CO"), ("reports", f"/console/reports?day={day}"),
        ("bad day", "/console/reports?day=2026-02-30"))}
    token = csrf(pages["deadletters"].text)
    ids = re.findall(r'<tr data-id="(\d+)">', pages["deadletters"].text)
    for name, form in (("confirm one", {"one": ids[0]}), ("confirm ticked", {"scope": "selected", "ids": ids[:2]}),
                       ("confirm matching", {"scope": "matching"}), ("nothing left", {"one": "999999"}),
                       ("stale form", {"one": ids[0], "csrf": "0" * 32})):
        pages[name] = client.post("/console/deadletters/replay", data={"csrf": token, **form})
    pages["revealed"] = client.post(f"/console/dossiers/{code}/reveal", data={"csrf": token})
    return pages


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_page_speaks_vietnamese_or_english_never_both(
    console: str, dead_day: list[dict], relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import asdict

    from store import payments

    # given a portal and a payment destination (the payment's title in two languages), and a reconciled day
    relay_config.routing_file.write_text(relay_config.routing_file.read_text(encoding="utf-8") + WALK_ROUTING,
                                         encoding="utf-8")
    reset_runtime()
    day = date(2026, 11, 20)
    lines = reconciliation_of_every_shape(day)
    assert {line.outcome for line in lines} == {"matched", "recovered", "not_settled", "amount_mismatch", "unknown",
                                               "duplicate"}
    payments.replace_lines(get_runtime().engine, "payment", day.isoformat(), [asdict(line) for line in lines],
                           datetime.now(UTC))
    code = dead_day[0]["dossier_code"]
    seen: dict[str, dict[str, httpx.Response]] = {}
    with httpx.Client(base_url=console, timeout=30) as anonymous:
        sent = anonymous.get("/console/deadletters", params={"lang": "en"})  # to log in first, in English
        assert sent.headers["location"] == "/console/login?next=%2Fconsole%2Fdeadletters%3Flang%3Den&lang=en"
        login_vi = anonymous.get("/console/login")
        refused_vi = log_in(anonymous, password="sai")
        login_en = anonymous.get("/console/login", params={"lang": "en"})  # kept in a cookie from here
        refused_en = log_in(anonymous, password="sai")
    with logged_in(console) as client:
        seen["vi"] = {"login": login_vi, "refused": refused_vi, **visit_every_page(client, code, day.isoformat())}
        switch = re.search(r'href="([^"]+)" id="language"', seen["vi"]["deadletters"].text)
        assert switch is not None and switch.group(1) == "/console/deadletters?lang=en"
        assert client.get("/console/", params={"lang": "en"}).status_code == 200  # the cookie keeps it
        seen["en"] = {"login": login_en, "refused": refused_en, **visit_every_page(client, code, day.isoformat())}
        filtered = client.get("/console/deadletters", params={"destination": "warehouse"}).text
        assert 'href="/console/deadletters?destination=warehouse&amp;lang=vi" id="language"' in filtered
    monkeypatch.delenv("MOTCUA_CONSOLE_SECRET")
    seen["vi"]["closed"] = httpx.get(f"{console}/console/", timeout=10)
    seen["en"]["closed"] = httpx.get(f"{console}/console/?lang=en", timeout=10)
    expected = {"login": 200, "refused": 401, "overview": 200, "deadletters": 200, "replayed": 200, "none ticked": 200,
                "dossier": 200, "no dossier": 404, "reports": 200, "bad day": 400, "confirm one": 200,
                "confirm ticked": 200, "confirm matching": 200, "nothing left": 200, "stale form": 403,
                "revealed": 200, "closed": 503}
    for lang, pages in seen.items():
        assert {name: answer.status_code for name, answer in pages.items()} == expected, lang
        assert all(f'<html lang="{lang}">' in answer.text for answer in pages.values()), lang
        for name, answer in pages.items():  # the new pages too: nothing the Content-Security-Policy forbids
            assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", answer.text, re.I), (lang, name)
            assert answer.headers["content-security-policy"].startswith("default-src 'none'"), (lang, name)
    # then no English word the console used to show is on a Vietnamese page, and no Vietnamese letter on an English one
    for name, answer in seen["vi"].items():
        said = shown_words(answer.text)
        leaked = [w for w in ENGLISH if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", said)]
        assert not leaked, (name, leaked, said)
    for name, answer in seen["en"].items():
        said = shown_words(answer.text)
        assert not VIETNAMESE.search(said), (name, VIETNAMESE.findall(said), said)
    # and each page does say what it is about, in its language
    vi, en = seen["vi"], seen["en"]
    assert "Tiến trình xử lý" in vi["overview"].text and "Workers" in en["overview"].text
    assert "Bị từ chối" in vi["deadletters"].text and "Rejected" in en["deadletters"].text
    assert "Đã đưa lại vào hàng đợi các lượt đã chọn: 2" in vi["replayed"].text
    assert "Queued again, the ticked ones: 2" in en["replayed"].text
    assert "Chưa chọn lượt gửi nào" in vi["none ticked"].text and "Nothing is ticked" in en["none ticked"].text
    assert "Gửi lại 2 lượt gửi đã chọn?" in vi["confirm ticked"].text
    assert "Replay all 3 dead letters that match the filters?" in en["confirm matching"].text
    assert "Không còn lượt gửi thất bại nào" in vi["nothing left"].text
    assert 'id="confirm"' not in vi["nothing left"].text
    assert "Bị từ chối" in vi["dossier"].text and "Thất bại" in vi["dossier"].text
    assert "Rejected" in en["dossier"].text and ">Dead<" in en["dossier"].text
    for outcome in ("Khớp (đã thanh toán, có thông báo)", "Thanh toán trùng: cần hoàn tiền", "Đơn vị", "Tổng cộng",
                    "Số tiền quyết toán", "2 lần thông báo", "thanh toán lần nữa sau giao dịch T1: cần hoàn tiền"):
        assert outcome in vi["reports"].text, outcome
    for outcome in ("Matched (paid, callback received)", "Paid twice: refund it", "Unit", "Total", "Settled amount",
                    "paid again after T1: refund it"):
        assert outcome in en["reports"].text, outcome
    # destinations by their titles, their ids beside them: the routing file's, else their kind's
    assert '<span class="dest" title="payment">Kho bạc Nhà nước</span>' in vi["reports"].text
    assert '<span class="dest" title="payment">State Treasury</span>' in en["reports"].text
    for page, title in ((vi["overview"], "Bên nhận webhook"), (en["overview"], "Webhook subscriber"),
                        (vi["dossier"], "Bên nhận webhook"), (vi["confirm one"], "Bên nhận webhook")):
        shown = f'<span class="dest" title="warehouse">{title}</span> <small class="id raw">warehouse</small>'
        assert shown in page.text, title
    assert '<span class="dest" title="portal">Cổng Dịch vụ công quốc gia</span>' in vi["overview"].text
    assert ">Bên nhận webhook · warehouse</option>" in vi["deadletters"].text


def test_a_destination_is_named_by_its_title_else_its_kinds_else_its_services_else_its_name(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from api.console.app import _titles
    from api.console.labels import Words
    from config.routing import load_routing
    from services.base import Registry, Service
    from services.registry import get_registry
    from tests.test_options import TODAYS_FILE

    path = tmp_path / "routing.toml"
    path.write_text("\n".join([
        "[destinations.kho]", 'kind = "webhook"', 'url = "http://x"', 'title = "Kho dữ liệu dùng chung"',
        "[destinations.cong]", 'kind = "portal"', 'url = "http://x"', 'title = { vi = "Cổng DVC", en = "Portal" }',
        "[destinations.sms]", 'kind = "sms"', 'url = "http://x"', 'title = { vi = "Tin nhắn" }',
        "[destinations.zalo]", 'kind = "zalo"', 'url = "http://x"',
        "[destinations.echo]", 'kind = "echo"', 'url = "http://x"',
        "[destinations.other]", 'kind = "unheard-of"', 'url = "http://x"', ""]), encoding="utf-8")
    routing = load_routing(path)
    assert "title" not in routing.destinations["kho"].options  # not a service's option: no service refuses it
    bundled = get_registry()
    echo = Service(kind="echo", title="echo (an installed service)", deliverer=bundled.services["webhook"].deliverer,
                   options=bundled.services["webhook"].options)
    rt: Any = SimpleNamespace(routing=routing, registry=Registry({**bundled.services, "echo": echo}))
    assert _titles(rt, Words("vi")) == {"kho": "Kho dữ liệu dùng chung", "cong": "Cổng DVC", "sms": "Tin nhắn",
                                        "zalo": "Zalo OA (tin ZNS)", "echo": "echo (an installed service)",
                                        "other": "other"}
    assert _titles(rt, Words("en")) == {"kho": "Kho dữ liệu dùng chung", "cong": "Portal", "sms": "Tin nhắn",
                                        "zalo": "Zalo Official Account (ZNS)", "echo": "echo (an installed service)",
                                        "other": "other"}
    # a title that names nothing is refused, saying so
    for bad in ('title = ""', 'title = { vi = " " }', f'title = "{"x" * 201}"', "title = 3"):
        path.write_text(f'[destinations.kho]\nkind = "webhook"\nurl = "http://x"\n{bad}\n', encoding="utf-8")
        with pytest.raises(ValueError, match="title"):
            load_routing(path)
    # an operator's file of before the titles is read as it was, every destination named by its kind
    today = load_routing(TODAYS_FILE)
    rt = SimpleNamespace(routing=today, registry=bundled)
    assert all(title != name for name, title in _titles(rt, Words("vi")).items())
    assert all(d.title is None for d in today.destinations.values())
    # and the shipped file names each destination in both languages
    shipped = load_routing(ROOT_ROUTING)
    assert all(d.title_in("vi") and d.title_in("en") and d.title_in("vi") != d.title_in("en")
               for d in shipped.destinations.values())


ROOT_ROUTING = Path(__file__).resolve().parents[1] / "config" / "relay.toml"


def test_the_catalogue_has_words_for_everything_the_ledger_and_the_services_store() -> None:
    import connectors.base as errors
    from adapters.payment import OUTCOMES
    from api.console.labels import LABELS, LANGS, Words
    from services.registry import get_registry
    from store.tables import Status

    vi, en = Words("vi"), Words("en")
    assert all(len(texts) == len(LANGS) and all(t.strip() for t in texts) for texts in LABELS.values())
    assert {s.value for s in Status} <= {k.removeprefix("status.") for k in LABELS if k.startswith("status.")}
    outcomes = {c.outcome for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DeliveryError)}
    assert outcomes | {"delivered", "lost", "none"} <= {k.removeprefix("outcome.") for k in LABELS
                                                        if k.startswith("outcome.")}
    assert {o: vi.match(o) for o in OUTCOMES} == OUTCOMES  # the reconciliation's own words, as the spreadsheet says
    assert all(en.match(o) != o for o in OUTCOMES)
    assert all(vi.kind_title(service.kind) and en.kind_title(service.kind) for service in get_registry())
    # every key a template asks for is in the catalogue (a missing one would show the key itself)
    templates = Path(__file__).resolve().parents[1] / "api" / "console" / "templates"
    asked = {key for page in templates.glob("*.html")
             for key in re.findall(r"\bt\('([\w.]+)'[,)]", page.read_text(encoding="utf-8"))}
    assert asked and asked <= set(LABELS), sorted(asked - set(LABELS))
    assert {f"confirm.{s}" for s in ("one", "selected", "matching")} | {"row.event", "row.attempt"} <= set(LABELS)
    # every note a reconciliation writes reads in Vietnamese, none left in English
    for line in reconciliation_of_every_shape(date(2026, 11, 20)):
        note = vi.note(line.note)
        assert (note.kind, note.detail) != ("", line.note) or not line.note, line.note
        assert not re.search(r"\b(paid|bill|callback|refund|held|settlement)\b", note.kind), note.kind
        assert en.note(line.note) == ("", line.note)
    # ages and amounts as each language writes them
    assert [vi.age(s) for s in (0, 1.25, 45, 600, 7200)] == ["—", "1,2 giây", "45 giây", "10 phút", "2,0 giờ"]
    assert [en.age(s) for s in (1.25, 600)] == ["1.2 s", "10 min"]
    assert (vi.money(1250000), en.money(1250000), en.money(None)) == ("1.250.000 đ", "1,250,000 VND", "—")


def test_a_dead_letters_reason_reads_as_the_engine_wrote_it() -> None:
    from api.console.labels import Words
    from config.routing import RetryPolicy
    from connectors.base import Paused, Permanent, Rerouted, Retryable
    from tasks.retry import decide

    now = datetime.now(UTC)
    policy = RetryPolicy(max_attempts=3)

    def reason(error: Any, budget: int = 1, deadline: datetime = now + timedelta(days=1)) -> str:
        decided = decide(error, budget_used=budget, policy=policy, now=now, deadline_at=deadline)
        assert decided.reason is not None
        return decided.reason

    vi, en = Words("vi"), Words("en")
    # (what the engine wrote, its kind in Vietnamese, in English, the detail shown as it came)
    table = [
        (reason(Permanent("HTTP 400 rejected")), "Bị từ chối", "Rejected", "HTTP 400 rejected"),
        (reason(Retryable("HTTP 503"), budget=3), "Hết số lần thử (3 lần)", "Gave up after 3 attempts", "HTTP 503"),
        (reason(Retryable("timeout: read"), deadline=now), "Quá hạn gửi (sau 1 lần)",
         "Deadline passed after 1 attempts", "timeout: read"),
        (reason(Rerouted("no Zalo account", destination="sms")), "Gửi qua sms thay thế", "Sent by sms instead",
         "no Zalo account"),
        (reason(Paused("ZNS balance spent", condition="balance")), "Tạm dừng", "Paused", "ZNS balance spent"),
        # store/deliveries.py and store/sweep.py
        ("gave up: 40 attempts started without an answer (worker lost each time)",
         "Bỏ cuộc: 40 lần gửi không có kết quả (mất tiến trình xử lý mỗi lần)",
         "Gave up: 40 attempts without an answer (worker lost each time)", ""),
        ("worker lost during the attempt (lease expired)", "Mất tiến trình xử lý giữa chừng (hết hạn giữ)",
         "Worker lost during the attempt", ""),
        ("superseded: sequence 4 already sent to portal", "Bị thay thế: đã gửi bản số 4",
         "Superseded: sequence 4 already sent", ""),
        ("something else entirely", "Khác", "Other", "something else entirely"),
        (None, "Khác", "Other", ""),
    ]
    for written, kind_vi, kind_en, detail in table:
        assert tuple(vi.reason(written)) == (kind_vi, detail), written
        assert tuple(en.reason(written)) == (kind_en, detail), written


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_replay_form_replays_what_was_clicked_after_saying_how_many(
    console: str, dead_day: list[dict], relay_config: RelayConfig,
) -> None:
    engine = get_runtime().engine
    with logged_in(console) as client, captured_logs() as logs:
        page = client.get("/console/deadletters").text
        token, ids = csrf(page), re.findall(r'<tr data-id="(\d+)">', page)
        # a row's button, two other rows ticked: that row only
        asked = client.post("/console/deadletters/replay", data={"csrf": token, "ids": ids[1:], "one": ids[0]})
        assert re.findall(r'<tr data-id="(\d+)">', asked.text) == [ids[0]] and 'data-count="1"' in asked.text
        assert re.findall(r'name="ids" value="(\d+)"', asked.text) == []  # the ticks are not carried on
        # the ticked rows' button: those, and the notice when none is ticked
        asked = client.post("/console/deadletters/replay", data={"csrf": token, "scope": "selected", "ids": ids[1:]})
        assert sorted(re.findall(r'<tr data-id="(\d+)">', asked.text)) == sorted(ids[1:])
        assert 'data-count="2"' in asked.text
        nothing = client.post("/console/deadletters/replay", data={"csrf": token, "scope": "selected"})
        assert nothing.status_code == 303 and nothing.headers["location"] == "/console/deadletters?notice=none_ticked"
        # all that match: the page counts three; a fourth dies after it; the confirmed replay takes the three
        asked = client.post("/console/deadletters/replay", data={"csrf": token, "scope": "matching"})
        until = re.search(r'name="until" value="([^"]+)"', asked.text)
        assert 'data-count="3"' in asked.text and until is not None
        assert queries.status_counts(engine)["warehouse"] == {"dead": 3}  # asking replays nothing
        late = {**dead_day[0], "event_id": "late-1", "dossier_code": f"{dead_day[0]['dossier_code']}-MUON"}
        rt = get_runtime()
        intake.ingest_and_route(rt.engine, [late], datetime.now(UTC), rt.routing.destinations_for, rt.rules)
        drain(lambda: later() + timedelta(seconds=5))
        done = client.post("/console/deadletters/replay", data={
            "csrf": token, "scope": "matching", "confirmed": "yes", "until": until.group(1)})
        assert done.status_code == 303 and done.headers["location"] == "/console/deadletters?replayed=3&scope=matching"
    assert queries.status_counts(engine)["warehouse"] == {"pending": 3, "dead": 1}
    assert [d.status for d in queries.dossier_trace(engine, late["dossier_code"])[1]] == ["dead"]
    [replayed] = [e for e in logs if e["event"] == "console.replay"]
    assert (replayed["scope"], replayed["count"], replayed["operator"]) == ("matching", 3, OPERATOR)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_overview_says_whether_workers_are_up_and_does_not_wait_for_a_broker_that_does_not_answer(
    console: str, dead_day: list[dict], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.console.health import Pinger
    from tasks.app import configure_app

    monkeypatch.setattr("api.console.app.PINGER", Pinger())  # no answer of an earlier test's
    with logged_in(console) as client:
        # given a broker that answers and no worker: none answers, and the ledger's last attempt is shown
        page = client.get("/console/").text
        assert 'data-state="down"' in page and "Không tiến trình nào trả lời" in page
        attempted = re.search(r'<span id="last-attempt">([^<]+)</span>', page)
        assert attempted is not None and re.match(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d \(.+ trước\)", attempted.group(1))
        assert '<span id="last-delivered">Chưa có</span>' in page  # every delivery of the day died
        # when the broker does not answer (a port nobody listens on)
        monkeypatch.setenv("MOTCUA_BROKER_URL", f"redis://127.0.0.1:{_free_port()}/0")
        reset_runtime()
        configure_app()
        try:
            started = time.monotonic()
            answer = client.get("/console/")
            took = time.monotonic() - started
        finally:
            monkeypatch.undo()
            reset_runtime()
            configure_app()
    # then the page comes at once, saying the workers' state is unknown
    assert answer.status_code == 200 and took < 5, took
    assert 'data-state="unknown"' in answer.text and "hàng đợi (broker) không trả lời trong 1,5 giây" in answer.text


def test_a_page_waits_for_the_workers_ping_only_when_it_has_no_recent_answer_to_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from api.console import health

    monkeypatch.setattr(health, "WAIT_SECONDS", 0.3)
    calls: list[float] = []
    release = threading.Event()

    def ping(timeout: float) -> tuple[str, ...]:
        calls.append(timeout)
        if len(calls) > 1:
            release.wait(5)  # the second ping hangs, as on a broker that does not answer
        return ("relay-1@host",)

    pinger = health.Pinger(ping, fresh=0.1, stale=0.6)

    def shown() -> tuple[tuple[str, ...] | None, float]:
        started = time.monotonic()
        answering, _, _ = pinger.start("redis://broker").shown()
        return answering, time.monotonic() - started

    try:
        # the first page waits for the first ping; a page within FRESH_SECONDS asks nothing again
        assert shown()[0] == ("relay-1@host",) and shown()[0] == ("relay-1@host",) and len(calls) == 1
        time.sleep(0.15)
        # when the answer is no longer fresh, a new ping goes out, and meanwhile the last answer is shown at once
        answering, took = shown()
        assert answering == ("relay-1@host",) and took < 0.1
        wait_for(lambda: len(calls) == 2, 2, what="the second ping sent")
        assert shown()[1] < 0.1 and len(calls) == 2  # one ping at a time
        # and once that answer is stale, a page waits (at most WAIT_SECONDS) and says it does not know
        time.sleep(0.6)
        answering, took = shown()
        assert answering is None and 0.25 < took < 1, took
    finally:
        release.set()
