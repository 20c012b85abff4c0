"""Whatever an operator's browser (or anyone else) sends the console, it answers with a page, never a 5xx: a few
thousand generated requests over every page and form, logged in, on both ledgers.

The console is served in-process (httpx's ASGI transport, the app on an event loop in a thread of its own: no
sockets, a request is a call) by one app and one ledger per engine, seeded with dead letters (a few pages of them),
a reconciliation day, a portal and a payment destination, so the pages do read the ledger with what they are given.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.console.auth import COOKIE, hash_password
from sandbox.onestop import create_app as onestop_app
from sandbox.workload import generate_day
from store import intake, payments
from store.db import upgrade
from tasks.runtime import get_runtime, reset_runtime
from tests.conftest import _fresh_pg
from tests.harness import become_relay, drain, new_secret, relay_env, write_routing
from tests.servers import run_asgi

OPERATOR, PASSWORD = "vanhanh01", "mat-khau-van-hanh"
CANARY = "Nguyễn Văn An"  # a citizen's name, sent in inputs: a 400 page must never show it
EXAMPLES = 2600  # requests per engine: over 5,000 in all
BATCH = 8  # requests per generated example (a list of them is cheaper to generate than as many examples)
DEAD = 25  # dead letters seeded: a few pages
PAGE = 10  # rows a page of dead letters shows here (50 in use): the fuzz is about the input, not about rendering
REPORT_DAY = "2026-11-20"

EXTRA_ROUTING = """
[destinations.portal]
kind = "portal"
url = "http://127.0.0.1:9/portal"
username_env = "MOTCUA_PORTAL_USERNAME"
password_env = "MOTCUA_PORTAL_PASSWORD"

[destinations.payment]
kind = "payment"
provider = "platform"
url = "http://127.0.0.1:9/payment"
client_id = "UBND-HALONG"
request_key_env = "MOTCUA_PAYMENT_REQUEST_KEY"
callback_key_env = "MOTCUA_PAYMENT_CALLBACK_KEY"
return_url = "https://dichvucong.quangninh.gov.vn/thanh-toan/ket-qua"
"""


class InProcess:
    """An ASGI app called in-process through httpx from synchronous code, the app on one event loop that lives as
    long as the module's tests (so its worker threads do too); no cookie is kept between requests."""

    def __init__(self, app: Any, portal: BlockingPortal) -> None:
        self.portal = portal
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.portal.call(functools.partial(self.client.request, method, url, **kwargs))
        finally:
            self.client.cookies.clear()

    def close(self) -> None:
        self.portal.call(self.client.aclose)


@dataclass
class Console:
    client: InProcess
    cookie: str
    csrf: str
    codes: list[str]
    answers: list[int]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console(request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Console]:
    """The API on one engine, its console logged in, with dead letters, a portal and a payment destination."""
    from api.app import create_app

    folder = tmp_path_factory.mktemp(f"console-fuzz-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{folder}/relay.db"
        upgrade(db_url)
    else:
        db_url = _fresh_pg(request.getfixturevalue("pg_url"))
    secrets = {"onestop": new_secret(), "warehouse": new_secret()}
    with run_asgi(onestop_app(secrets)) as sandbox, pytest.MonkeyPatch.context() as mp:
        routing = write_routing(folder / "routing.toml", sandbox)
        routing.write_text(routing.read_text(encoding="utf-8") + EXTRA_ROUTING, encoding="utf-8")
        env = relay_env(db_url, redis_url, new_secret(), secrets, routing,
                        MOTCUA_REDIS_PREFIX=f"f{uuid.uuid4().hex[:6]}", MOTCUA_CONSOLE_LOCKOUT_ACCOUNT="1000000",
                        MOTCUA_CONSOLE_LOCKOUT_ADDRESS="1000000",
                        MOTCUA_LOG_LEVEL="ERROR", MOTCUA_CONSOLE_SECRET="bi-mat-phien-lam-viec-0123456789",
                        MOTCUA_CONSOLE_OPERATORS=f"{OPERATOR}:{hash_password(PASSWORD, iterations=1000)}")
        become_relay(mp, env)
        mp.setattr("api.console.app.PAGE", PAGE)
        # given dead letters: the warehouse refuses every event (HTTP 400)
        httpx.post(f"{sandbox}/_admin/faults", json={"error_rate": 1, "error_status": 400}, timeout=5)
        events = [e for e in generate_day(DEAD * 2, seed=5) if e["origin"] == "onestop" and e["sequence"] == 1][:DEAD]
        rt = get_runtime()
        intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
        drain(lambda: datetime.now(UTC) + timedelta(seconds=5))
        payments.replace_lines(rt.engine, "payment", REPORT_DAY, [{
            "outcome": "amount_mismatch", "bill_code": "HS-1-LP", "transaction_id": "KP1", "dossier_code": "HS-1",
            "bill_amount": 50000, "settled_amount": 49000, "callbacks": 1, "paid_at": None,
            "note": "paid 49.000 đ for a bill of 50.000 đ"}], datetime.now(UTC))
        with start_blocking_portal() as portal:
            client = InProcess(create_app(), portal)
            answer = client.request("POST", "/console/login", data={"username": OPERATOR, "password": PASSWORD})
            assert answer.status_code == 303, answer.text
            cookie = answer.cookies[COOKIE]
            page = client.request("GET", "/console/deadletters", headers={"cookie": f"{COOKIE}={cookie}"}).text
            found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
            assert found and len(re.findall(r'<tr data-id="(\d+)">', page)) == PAGE
            yield Console(client, cookie, found.group(1), [e["dossier_code"] for e in events], [])
            client.close()
    reset_runtime()


# -- what the fuzz sends -------------------------------------------------------------------------------------------

NASTY = st.sampled_from([
    "", " ", "\x00", "HS\x00-1", f"{CANARY}\x00", "a" * 201, "x" * 5000, "%", "_", "%_\\", "'; --", '"', "<b>",
    "😀", "\ufffd", "\u202e", "|", "||", "1|", "|1", "\t", "0", "-1", str(2**63), str(2**64), "1e3", "NaN",
    "2026-11-20", "0001-01-01", "9999-12-31", "2026-02-30", "20261120", "2026-11-20T10:00:00",
    "2026-11-20T10:00:00+07:00|5", "2026-11-20T10:00:00|5", "0001-01-01T00:00:00+14:00|1",
    "9999-12-31T23:59:59-14:00|1", f"{datetime.now(UTC).isoformat()}|{2**63}", "/console/", "//evil.test/",
    "/console/../healthz", "warehouse", "onestop", "portal", "payment", "rejected", "HTTP 400", "one", "all",
    "selected", "matching", "yes",
])
TEXT = st.one_of(NASTY, st.text(max_size=40), st.text(st.characters(codec="latin-1"), max_size=12))


def _cursor() -> st.SearchStrategy[str]:
    zones = st.one_of(st.none(), st.just(UTC), st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                                              max_value=timedelta(hours=23, minutes=59))
                      .map(timezone))
    ids = st.one_of(st.integers(min_value=-5, max_value=200), st.integers(), st.just(2**63 - 1), st.just(2**63))
    return st.builds(lambda when, row: f"{when.isoformat()}|{row}", st.datetimes(timezones=zones), ids)


DAY = st.one_of(st.dates().map(lambda d: d.isoformat()), st.just(REPORT_DAY), TEXT)
FILTERS = st.fixed_dictionaries({}, optional={
    "destination": st.one_of(st.sampled_from(["warehouse", "onestop", "portal", ""]), TEXT),
    "dossier": TEXT, "reason": TEXT, "before": st.one_of(_cursor(), TEXT), "replayed": TEXT, "scope": TEXT,
    "notice": st.one_of(st.just("none_ticked"), TEXT),
    "lang": st.one_of(st.sampled_from(["vi", "en"]), TEXT), "extra": TEXT})
CONTENT_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                                 "multipart/form-data", "text/plain", "application/json", ""])


SESSION_TOKEN = "<the session's form token>"  # in a call's form or body: the real one, put in when it is sent


@dataclass
class Call:
    method: str
    path: str  # "{code}" in it: the dossier code, an int being the n-th seeded dossier's
    params: dict[str, Any]
    data: dict[str, Any] | None = None
    raw: tuple[bytes, str] | None = None  # a body sent as is, and its content type
    cookie: str = "session"  # "session", "none", or the cookie's value
    code: int | str = 0

    def send(self, console: Console) -> httpx.Response:
        cookie = console.cookie if self.cookie == "session" else ("" if self.cookie == "none" else self.cookie)
        headers = {"cookie": f"{COOKIE}={cookie}".encode("latin-1")} if cookie else {}
        code = console.codes[self.code] if isinstance(self.code, int) else self.code
        path = self.path.replace("{code}", quote(code, safe=""))
        if self.raw is not None:
            headers["content-type"] = self.raw[1].encode()
            body = self.raw[0].replace(SESSION_TOKEN.encode(), console.csrf.encode())
            return console.client.request(self.method, path, params=self.params, content=body, headers=headers)
        data = {k: console.csrf if v == SESSION_TOKEN else v for k, v in (self.data or {}).items()}
        return console.client.request(self.method, path, params=self.params, data=data, headers=headers)


_LATIN = st.text(st.characters(codec="latin-1", exclude_characters="\r\n;"), max_size=60)
JUNK_COOKIE = st.one_of(st.just("none"), _LATIN, st.builds(
    lambda n, e, s, m: f"{n}|{e}|{s}|{m}", st.sampled_from([OPERATOR, "khac", ""]),
    st.sampled_from(["9999999999", "0", "x", ""]), _LATIN, _LATIN))
TOKEN = st.one_of(st.just(SESSION_TOKEN), TEXT)
CODE = st.one_of(st.integers(0, DEAD - 1), TEXT.filter(bool))
IDS = st.lists(st.one_of(st.integers(1, 2 * DEAD), st.integers(), TEXT), max_size=6)
SCOPE = st.one_of(st.sampled_from(["one", "selected", "matching"]), TEXT)
ONE = st.one_of(st.integers(1, 2 * DEAD), st.integers(), TEXT)
CONFIRMED = st.one_of(st.just("yes"), TEXT)
UNTIL = st.one_of(st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()), _cursor(), TEXT)
LOGIN_FORM = st.fixed_dictionaries({}, optional={
    "username": st.one_of(st.just(OPERATOR), TEXT), "password": st.one_of(st.just(PASSWORD), TEXT), "next": TEXT})
RAW_PATH = st.sampled_from(["/console/login", "/console/deadletters/replay", "/console/dossiers/{code}/reveal"])
RAW_BODY = st.one_of(st.binary(max_size=200), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
                     st.just(f"csrf={SESSION_TOKEN}&ids=%00&ids=1".encode()))
LANG = st.sampled_from(["vi", "en"])
# the overview takes no input but the language, and is the slowest page: it is asked for less often
KINDS = st.sampled_from([*(["deadletters", "replay", "search", "dossier", "reveal", "reports", "login_page", "login",
                           "logout", "raw"] * 4), "overview"])


@st.composite
def calls(draw: st.DrawFn) -> Call:
    kind = draw(KINDS)
    if kind in ("overview", "deadletters"):
        return Call("GET", "/console/" if kind == "overview" else "/console/deadletters", draw(FILTERS))
    if kind == "replay":
        form: dict[str, Any] = {"ids": draw(IDS)}
        token = draw(TOKEN)
        if draw(st.booleans()):
            form["csrf"] = token
        form["scope"] = draw(SCOPE)
        for key, values in (("one", ONE), ("confirmed", CONFIRMED), ("until", UNTIL)):
            if draw(st.booleans()):
                form[key] = draw(values)
        if form["scope"] == "matching" and form.get("confirmed") == "yes" and "one" not in form:
            del form["confirmed"]  # replaying them all would leave the later examples none: the page that asks
        return Call("POST", "/console/deadletters/replay", draw(FILTERS), form)
    if kind == "search":
        code = draw(CODE)
        return Call("GET", "/console/search", {"q": code} if isinstance(code, str) else {}, code=code)
    if kind == "dossier":
        return Call("GET", "/console/dossiers/{code}", draw(FILTERS), code=draw(CODE))
    if kind == "reveal":
        form = {"csrf": draw(TOKEN)} if draw(st.booleans()) else {}
        return Call("POST", "/console/dossiers/{code}/reveal", {}, form, code=draw(CODE))
    if kind == "reports":
        return Call("GET", "/console/reports", {"day": draw(DAY), "lang": draw(LANG)})
    if kind == "login_page":
        return Call("GET", "/console/login", {"next": draw(TEXT)}, cookie=draw(JUNK_COOKIE))
    if kind == "login":
        return Call("POST", "/console/login", {}, draw(LOGIN_FORM), cookie=draw(JUNK_COOKIE))
    if kind == "logout":
        return Call("POST", "/console/logout", {}, cookie=draw(JUNK_COOKIE))
    return Call("POST", draw(RAW_PATH), {}, raw=(draw(RAW_BODY), draw(CONTENT_TYPES)))


@settings(max_examples=EXAMPLES // BATCH, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(calls(), min_size=BATCH, max_size=BATCH))
def _fuzz(console: Console, batch: list[Call]) -> None:
    for call in batch:
        answer = call.send(console)
        console.answers.append(answer.status_code)
        assert answer.status_code < 500, (call, answer.status_code, answer.text[:800])
        if answer.status_code == 400:
            assert CANARY not in answer.text, call
        if answer.headers.get("content-type", "").startswith("text/html"):
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")


def test_no_input_makes_the_console_answer_5xx(console: Console) -> None:
    _fuzz(console)
    assert len(console.answers) >= EXAMPLES
    # the fuzz reached the pages: it was answered with pages, refusals of its input and redirects alike
    assert {200, 303, 400} <= set(console.answers), sorted(set(console.answers))
