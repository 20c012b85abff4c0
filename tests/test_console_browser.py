"""The console in a real browser: headless Chromium (Debian's, driven by Playwright through its executable path)
sees a stranger guessing passwords locked out, logs in, sees the worker up on the overview, finds a dead letter,
replays it and sees it delivered by a real ``motcua-relay worker``, then logs out: going back, or bringing the old
cookie back, shows the log-in page, not the data. The dead letters' form replays exactly what was clicked: a row's
button that row, whatever is ticked; the ticked rows' button those; all that match, after a page saying how many.
Every page carries the security headers and the browser reports no Content-Security-Policy violation. Screenshots
of each step are saved under ``$MOTCUA_TEST_ARTIFACTS`` (``console-*.png``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright
from sqlalchemy import select

from api.app import create_app
from api.console.auth import hash_password
from api.console.health import Pinger
from sandbox.workload import generate_day
from store import intake
from store.deadletters import DeadLetterFilter, dead_letters
from store.tables import deliveries
from tasks.runtime import get_runtime
from tests.conftest import RelayConfig
from tests.harness import RelayProcess, captured_logs, drain, wait_for
from tests.servers import run_asgi

OPERATOR, PASSWORD = "vanhanh01", "mat-khau-van-hanh"


def chromium_path() -> str:
    found = os.environ.get("MOTCUA_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("no chromium: scripts/test.sh installs Debian's package (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def secured(answer: Response | None) -> None:
    """The console's security headers are on a page the browser was given."""
    assert answer is not None
    headers = answer.headers
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff", answer.url
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store", answer.url
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'self'"), answer.url


def shot(page: Page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_operator_logs_in_finds_a_dead_letter_replays_it_and_sees_it_delivered(
    relay_config: RelayConfig, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOTCUA_CONSOLE_SECRET", "bi-mat-phien-lam-viec-0123456789")
    monkeypatch.setenv("MOTCUA_CONSOLE_OPERATORS", f"{OPERATOR}:{hash_password(PASSWORD, iterations=20_000)}")
    monkeypatch.setattr("api.console.app.PINGER", Pinger())  # no answer of an earlier test's about the workers
    # given a worker, and a day whose deliveries to the warehouse it refused (HTTP 400: dead at once)
    sandbox = relay_config.sandbox.url
    httpx.post(f"{sandbox}/_admin/faults", json={"error_rate": 1, "error_status": 400}, timeout=5)
    worker = RelayProcess(["worker"], relay_config.env, tmp_path / "worker.log").start()
    events = [e for e in generate_day(6, seed=3) if e["origin"] == "onestop" and e["sequence"] == 1][:4]
    rt = get_runtime()
    _, ready = intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    rt.enqueue(ready)
    wait_for(lambda: len(dead_letters(rt.engine, DeadLetterFilter(destination="warehouse"))) == 4,
             60, what="four dead letters")
    httpx.delete(f"{sandbox}/_admin/faults", timeout=5)  # the warehouse is fixed
    target = events[0]["dossier_code"]
    try:
        with run_asgi(create_app()) as api:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="vi-VN")
            violations: list[str] = []  # what the browser's console says the pages' CSP blocked
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            # when the operator opens the console, is sent to log in, and logs in
            secured(page.goto(f"{api}/console/"))
            expect(page).to_have_url(f"{api}/console/login?next=%2Fconsole%2F")
            expect(page.locator("header")).to_have_css("background-color", "rgb(15, 76, 129)")  # the style sheet
            # (a stranger guessing a password first: refused five times, then locked out, and the page says so)
            for attempt in range(6):
                page.fill("input[name=username]", "khach-la")
                page.fill("input[name=password]", f"doan-mo-{attempt}")
                with page.expect_response(re.compile(r".*/console/login$")) as answer:
                    page.click("button[type=submit]")
                secured(answer.value)
                expect(page.locator("p.bad[role=alert]")).to_contain_text(
                    "Tạm khóa đăng nhập" if attempt == 5 else "Sai tài khoản hoặc mật khẩu")
            assert answer.value.status == 429 and int(answer.value.headers["retry-after"]) > 0
            shot(page, "locked-out", tmp_path)
            page.fill("input[name=username]", OPERATOR)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Tổng quan")
            expect(page.locator('tr[data-destination="warehouse"]')).to_contain_text("4")
            expect(page.locator('tr[data-destination="warehouse"] .dest')).to_have_text("Bên nhận webhook")
            # the worker is up, and it tried to deliver a moment ago
            expect(page.locator("#workers")).to_have_attribute("data-state", "up")
            expect(page.locator("#workers-state")).to_have_text("1 tiến trình đang chạy")
            expect(page.locator("#last-attempt")).to_contain_text("trước")
            shot(page, "overview", tmp_path)
            # and follows the warehouse's dead letters, filters them to one dossier, and replays it
            page.click('tr[data-destination="warehouse"] a.bad')
            expect(page.locator("#deadletters tbody tr")).to_have_count(4)
            expect(page.locator("#deadletters")).to_contain_text("HTTP 400 rejected")
            page.fill("input[name=dossier]", target)
            page.click("form.filters button[type=submit]")
            expect(page.locator("#deadletters tbody tr")).to_have_count(1)
            shot(page, "deadletters", tmp_path)
            page.click("#deadletters button.replay-one")
            expect(page.locator("#confirm-count")).to_have_attribute("data-count", "1")
            page.click("#confirm")
            expect(page.locator(".notice")).to_have_text("Đã đưa lại vào hàng đợi lượt gửi đã bấm: 1")
            # then the worker delivers it, and the dossier's page says so
            secured(page.goto(f"{api}/console/dossiers/{target}"))
            for _ in range(60):
                if page.locator('#deliveries tr[data-status="delivered"]').count():
                    break
                page.wait_for_timeout(500)
                page.reload()
            expect(page.locator("#deliveries td.ok")).to_have_text("Đã gửi")
            expect(page.locator('#timeline tr[data-outcome="delivered"]')).to_contain_text("Thành công")
            shot(page, "dossier", tmp_path)
            # and the English switch works on the same page
            page.click("text=English")
            expect(page.locator("h2").first).to_have_text("Timeline")
            # when the operator logs out, going back shows the log-in page, not the dossier
            cookies = page.context.cookies()
            page.click("header form[action='/console/logout'] button")
            expect(page).to_have_url(f"{api}/console/login")
            page.go_back()
            expect(page).to_have_url(re.compile(r".*/console/login\?next=.*"))
            expect(page.locator("#deliveries")).to_have_count(0)
            # and so does the old cookie, brought back
            page.context.add_cookies(cookies)  # type: ignore[arg-type]
            secured(page.goto(f"{api}/console/dossiers/{target}"))
            expect(page).to_have_url(re.compile(r".*/console/login\?next=.*"))
            expect(page.locator("#deliveries")).to_have_count(0)
            shot(page, "logged-out", tmp_path)
            # no page broke the CSP (and a violation is seen when there is one: an inline style, set by script)
            assert violations == []
            page.evaluate("document.body.setAttribute('style', 'color: red')")
            wait_for(lambda: violations, 5, what="the CSP violation reported")
            page.close()
    finally:
        worker.stop()
    counts = dead_letters(get_runtime().engine, DeadLetterFilter(destination="warehouse"))
    assert len(counts) == 3 and target not in {c.dossier_code for c in counts}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_dead_letters_form_replays_the_row_clicked_the_rows_ticked_or_all_that_match(
    relay_config: RelayConfig, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOTCUA_CONSOLE_SECRET", "bi-mat-phien-lam-viec-0123456789")
    monkeypatch.setenv("MOTCUA_CONSOLE_OPERATORS", f"{OPERATOR}:{hash_password(PASSWORD, iterations=20_000)}")
    # given six dead letters of the warehouse (it refused them: HTTP 400), delivered in-process, no worker to replay
    httpx.post(f"{relay_config.sandbox.url}/_admin/faults", json={"error_rate": 1, "error_status": 400}, timeout=5)
    events = [e for e in generate_day(6, seed=4) if e["origin"] == "onestop" and e["sequence"] == 1]
    rt = get_runtime()
    intake.ingest_and_route(rt.engine, events, datetime.now(UTC), rt.routing.destinations_for, rt.rules)
    drain(lambda: datetime.now(UTC) + timedelta(seconds=5))
    assert len(dead_letters(rt.engine, DeadLetterFilter(destination="warehouse"))) == 6

    def replays() -> dict[int, tuple[str, int]]:
        with rt.engine.connect() as conn:
            return {r.id: (r.status, r.replays) for r in conn.execute(
                select(deliveries.c.id, deliveries.c.status, deliveries.c.replays)
                .where(deliveries.c.destination == "warehouse"))}

    def listed(page: Page) -> list[int]:
        return [int(i) for i in page.locator("#deadletters tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)")]

    with run_asgi(create_app()) as api, captured_logs() as logs:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="vi-VN")
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        secured(page.goto(f"{api}/console/deadletters?destination=warehouse"))
        page.fill("input[name=username]", OPERATOR)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("#deadletters tbody tr")).to_have_count(6)
        ids = listed(page)
        ticked, clicked = ids[:2], ids[2]
        # when the operator ticks two rows, then clicks a third row's button
        for row in ticked:
            page.check(f'tr[data-id="{row}"] input[name=ids]')
        with page.expect_response(re.compile(r".*/console/deadletters/replay.*")) as answer:
            page.click(f'tr[data-id="{clicked}"] button.replay-one')
        secured(answer.value)
        # then the page asks about that row only, and nothing moves before the operator confirms
        expect(page.locator("#confirm-count")).to_have_attribute("data-count", "1")
        expect(page.locator("#confirm-count")).to_have_text("Gửi lại lượt gửi đã bấm (1 lượt)?")
        assert [int(i) for i in page.locator("#to-replay tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)")] == [clicked]
        assert all(status == "dead" for status, _ in replays().values())
        shot(page, "replay-one", tmp_path)
        page.click("#confirm")
        expect(page.locator(".notice")).to_have_text("Đã đưa lại vào hàng đợi lượt gửi đã bấm: 1")
        expect(page.locator("#deadletters tbody tr")).to_have_count(5)
        assert clicked not in listed(page) and set(ticked) <= set(listed(page))
        after = replays()
        assert after[clicked] == ("pending", 1)
        assert all(after[row] == ("dead", 0) for row in ids if row != clicked)
        # when the ticked rows' button is pressed with nothing ticked, the list says so and replays nothing
        page.click("#replay-selected")
        expect(page.locator(".notice")).to_have_text("Chưa chọn lượt gửi nào: đánh dấu các dòng cần gửi lại trước.")
        # when the operator ticks the two rows and presses the ticked rows' button: exactly those two
        for row in ticked:
            page.check(f'tr[data-id="{row}"] input[name=ids]')
        page.click("#replay-selected")
        expect(page.locator("#confirm-count")).to_have_attribute("data-count", "2")
        expect(page.locator("#confirm-count")).to_have_text("Gửi lại 2 lượt gửi đã chọn?")
        expect(page.locator("#to-replay tbody tr")).to_have_count(2)
        page.click("#confirm")
        expect(page.locator(".notice")).to_have_text("Đã đưa lại vào hàng đợi các lượt đã chọn: 2")
        expect(page.locator("#deadletters tbody tr")).to_have_count(3)
        after = replays()
        assert {row for row, (status, n) in after.items() if status == "pending" and n == 1} == {clicked, *ticked}
        rest = [row for row in ids if row not in (clicked, *ticked)]
        assert sorted(listed(page)) == sorted(rest) and all(after[row] == ("dead", 0) for row in rest)
        # when the operator, in English now, asks to replay all that match, then cancels: nothing replayed
        page.click("#language")
        expect(page).to_have_url(f"{api}/console/deadletters?destination=warehouse&lang=en")
        page.click("#replay-matching")
        expect(page.locator("#confirm-count")).to_have_text("Replay all 3 dead letters that match the filters?")
        page.click("#cancel")
        expect(page.locator("#deadletters tbody tr")).to_have_count(3)
        # and asks again, and confirms: the three that match, the count said before
        page.click("#replay-matching")
        expect(page.locator("#confirm-count")).to_have_attribute("data-count", "3")
        expect(page.locator("#to-replay tbody tr")).to_have_count(3)
        expect(page.locator("#confirm")).to_have_text("Replay 3")
        shot(page, "replay-matching", tmp_path)
        page.click("#confirm")
        expect(page.locator(".notice")).to_have_text("Queued again, all that matched: 3")
        expect(page.locator("#deadletters")).to_have_count(0)
        assert all(state == ("pending", 1) for state in replays().values())
        assert violations == []
        page.close()
    audited = [(e["scope"], e["count"], e["ids"]) for e in logs if e["event"] == "console.replay"]
    assert audited == [("one", 1, [clicked]), ("selected", 2, ticked), ("matching", 3, None)]
