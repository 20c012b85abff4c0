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
from datetime import UTC, datetime, timedelta
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
from tests.harness import RedisServer, captured_logs, drain
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
    return SimpleNamespace(engine=rt.engine, routing=SimpleNamespace(destinations=destinations), settings=rt.settings,
                           redis=rt.redis)


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
                           ("/console/deadletters/replay", {"csrf": token, "scope": "all"})):
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
