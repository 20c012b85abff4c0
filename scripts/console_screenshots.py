"""Screenshots of the console for the README, taken from a ledger with a day in it (a demo's).

    motcua-relay demo --dossiers 100                      # leaves ./var/demo-<stamp>.db
    MOTCUA_DATABASE_URL=sqlite:///$PWD/var/demo-<stamp>.db .venv/bin/python scripts/console_screenshots.py [DOSSIER]

It serves the API on a free port with a throwaway operator account, logs in with headless Chromium
(Debian's), and writes docs/screenshots/console-overview.png and console-dossier.png (the dossier given, or
the one with the most deliveries).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright
    from sqlalchemy import func, select

    from api.console.auth import hash_password

    password = secrets.token_urlsafe(12)  # a throwaway account, for this run only
    os.environ.setdefault("MOTCUA_INTAKE_SECRET", "whsec_" + secrets.token_urlsafe(32))
    os.environ["MOTCUA_CONSOLE_SECRET"] = secrets.token_urlsafe(32)
    os.environ["MOTCUA_CONSOLE_OPERATORS"] = f"vanhanh01:{hash_password(password, iterations=10_000)}"
    from api.app import create_app
    from store.tables import deliveries
    from tasks.runtime import get_runtime

    engine = get_runtime().engine
    dossier = sys.argv[1] if len(sys.argv) > 1 else None
    if dossier is None:
        with engine.connect() as conn:
            dossier = conn.execute(select(deliveries.c.dossier_code).group_by(deliveries.c.dossier_code)
                                   .order_by(func.count(func.distinct(deliveries.c.destination)).desc(),
                                             func.count().desc()).limit(1)).scalar_one()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    out = ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 820}, locale="vi-VN")
        page.goto(f"http://127.0.0.1:{port}/console/login")
        page.fill("input[name=username]", "vanhanh01")
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_selector("#destinations")
        page.screenshot(path=str(out / "console-overview.png"), full_page=True)
        page.goto(f"http://127.0.0.1:{port}/console/dossiers/{dossier}")
        page.wait_for_selector("#timeline")
        page.screenshot(path=str(out / "console-dossier.png"))  # the top: applicant, the timeline begins
        browser.close()
    server.should_exit = True
    print(f"written: {out}/console-overview.png, {out}/console-dossier.png (dossier {dossier})")


if __name__ == "__main__":
    main()
