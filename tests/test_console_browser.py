"""The console in a real browser: headless Chromium (Debian's, driven by Playwright through its executable path)
sees a stranger guessing passwords locked out, logs in, finds a dead letter, replays it and sees it delivered by a
real ``motcua-relay worker``, then logs out: going back, or bringing the old cookie back, shows the log-in page,
not the data. Every page carries the security headers and the browser reports no Content-Security-Policy
violation. Screenshots of each step are saved under ``$MOTCUA_TEST_ARTIFACTS`` (``console-*.png``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright

from api.app import create_app
from api.console.auth import hash_password
from sandbox.workload import generate_day
from store import intake
from store.deadletters import DeadLetterFilter, dead_letters
from tasks.runtime import get_runtime
from tests.conftest import RelayConfig
from tests.harness import RelayProcess, wait_for
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
            expect(page.locator(".notice")).to_contain_text("1")
            # then the worker delivers it, and the dossier's page says so
            secured(page.goto(f"{api}/console/dossiers/{target}"))
            for _ in range(60):
                if "delivered" in page.locator("#deliveries").inner_text():
                    break
                page.wait_for_timeout(500)
                page.reload()
            expect(page.locator("#deliveries td.ok")).to_have_text("delivered")
            expect(page.locator("#timeline")).to_contain_text("delivered")
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
