"""``motcua-relay sandbox``: one option per simulator the services declare, each started for the destinations of
the routing file with the secrets their variables hold, and a line saying what keeps the others from starting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from config.settings import DEFAULT_ROUTING_FILE
from tests.harness import ROOT, free_port, new_secret, wait_for

OPTIONS = ("port", "portal-port", "zalo-port", "sms-port", "postal-port", "payment-port", "bank-port",
           "exchange-port")


def test_the_sandbox_serves_what_is_configured_and_says_what_is_not(tmp_path: Path) -> None:
    # given the shipped routing, the subscribers' secrets and the portal's account, nothing else
    ports = {option: free_port() for option in OPTIONS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="400", MOTCUA_ROUTING_FILE=str(DEFAULT_ROUTING_FILE),
               MOTCUA_DATABASE_URL=f"sqlite:///{tmp_path}/relay.db", MOTCUA_LOG_FORMAT="json",
               MOTCUA_ONESTOP_WEBHOOK_SECRET=new_secret(), MOTCUA_WAREHOUSE_WEBHOOK_SECRET=new_secret(),
               MOTCUA_PORTAL_USERNAME="u", MOTCUA_PORTAL_PASSWORD="p")
    args = [arg for option, port in ports.items() for arg in (f"--{option}", str(port))]
    out = tmp_path / "sandbox.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "sandbox", *args], cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # when it starts, then the one-stop software and the portal answer on the ports given
        wait_for(lambda: "national portal: http://" in out.read_text(), 30, 0.2, "the sandbox's line")
        assert httpx.get(f"http://127.0.0.1:{ports['port']}/_admin/stats", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['portal-port']}/_admin/stats", timeout=5).status_code == 200
        text = " ".join(out.read_text().split())
        # and each simulator it could not start says which variable to set
        assert "Zalo simulator not started: destination zalo: set MOTCUA_ZALO_APP_ID (app_id)" in text
        assert "post simulator not started: destination postal: set MOTCUA_POSTAL_CONSUMER_KEY" in text
        assert "LGSP exchange simulator not started: destination lgsp: set MOTCUA_TRANSFER_PASSWORD" in text
        assert "bank" not in text.split("not started")[0]  # no bank destination: nothing said of it
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def test_without_subscriber_secrets_the_sandbox_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOTCUA_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="400", MOTCUA_DATABASE_URL=f"sqlite:///{tmp_path}/relay.db")
    done = subprocess.run([sys.executable, "-m", "cli.main", "sandbox", "--port", str(free_port())], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    said = " ".join(done.stdout.split())
    assert "one-stop software simulator not started: destination onestop: set MOTCUA_ONESTOP_WEBHOOK_SECRET" in said
