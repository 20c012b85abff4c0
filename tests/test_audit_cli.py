"""``motcua-relay audit``: keygen, checkpoint, export, verify (offline, exit 1 naming the tampered row), prove."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from store.audit.checkpoints import Signer
from store.db import get_engine, upgrade
from store.tables import attempts
from tasks.runtime import reset_runtime
from tests.harness import ROOT, become_relay, new_secret, relay_env
from tests.test_audit_chain import DOSSIERS, record_a_day
from tests.test_cli import run, said

KEY = Signer.generate()


@pytest.fixture
def ledger(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Signer]]:
    """A day recorded in a ledger, and this process a relay on it, signing with the day's key."""
    database = f"sqlite:///{tmp_path}/relay.db"
    upgrade(database)
    day = record_a_day(get_engine(database))
    become_relay(monkeypatch, relay_env(database, redis_url, new_secret(), {}, ROOT / "config" / "relay.toml",
                                        MOTCUA_REDIS_PREFIX=f"a{uuid.uuid4().hex[:6]}",
                                        MOTCUA_AUDIT_SIGNING_KEY=day.signer.private_text()))
    yield database, day.signer
    reset_runtime()


def test_keygen_prints_a_key_the_relay_reads_and_its_public_half_apart() -> None:
    result = run("audit", "keygen")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    signer = Signer.from_text(key)
    assert signer.public_pem in result.stderr and signer.key_id in result.stderr
    assert key not in result.stderr


def test_export_verify_and_prove_from_the_command_line(ledger: tuple[str, Signer], tmp_path: Path) -> None:
    database, signer = ledger
    public = tmp_path / "relay.pub"
    public.write_text(signer.public_pem)
    # a checkpoint made by hand covers what the beat's did not
    made = run("audit", "checkpoint")
    assert made.exit_code == 0 and "checkpoint 4" in said(made), said(made)
    archive = tmp_path / "march.zip"
    exported = run("audit", "export", "--from", "2024-03-14", "--to", "2024-03-16", "--out", str(archive))
    assert exported.exit_code == 0, said(exported)
    assert "warehouse" in said(exported) and "sha256" in said(exported)
    checked = run("audit", "verify", str(archive), "--public-key", str(public))
    assert checked.exit_code == 0, said(checked)
    assert "the archive verifies under the pinned key" in said(checked)
    as_json = run("audit", "verify", str(archive), "--json")
    assert json.loads(as_json.stdout)["ok"] is True
    # a row changed in the ledger: the next archive does not verify, and the row is named
    engine = get_engine(database)
    with engine.begin() as conn:
        row = conn.execute(select(attempts.c.id).order_by(attempts.c.id).limit(1)).scalar_one()
        conn.execute(update(attempts).where(attempts.c.id == row).values(outcome="delivered", status_code=200))
    tampered = tmp_path / "tampered.zip"
    assert run("audit", "export", "--from", "2024-03-14", "--to", "2024-03-16", "--out", str(tampered)).exit_code == 0
    refused = run("audit", "verify", str(tampered), "--public-key", str(public))
    assert refused.exit_code == 1
    assert f"does not verify: first, attempt {row}" in said(refused), said(refused)
    # one dossier's proof, for an inspector
    proof = tmp_path / "proof.json"
    proved = run("audit", "prove", DOSSIERS[1], "--out", str(proof))
    assert proved.exit_code == 0, said(proved)
    assert "every entry leads to the head its checkpoint signs" in said(proved)
    assert json.loads(proof.read_text())["dossier"] == DOSSIERS[1]


def test_verify_refuses_a_file_that_is_no_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"PK not really")
    result = run("audit", "verify", str(bogus))
    assert result.exit_code == 2 and "not an audit archive" in said(result)


def test_verify_refuses_a_pinned_key_that_is_not_ed25519(ledger: tuple[str, Signer], tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    assert run("audit", "export", "--from", "2024-03-14", "--to", "2024-03-16", "--out", str(archive)).exit_code == 0
    (tmp_path / "k.pem").write_text("not a key")
    result = run("audit", "verify", str(archive), "--public-key", str(tmp_path / "k.pem"))
    assert result.exit_code == 2 and "--public-key" in said(result) and "Traceback" not in result.output


@pytest.mark.parametrize(("env", "status", "said"), [
    ({}, "warning", "no MOTCUA_AUDIT_SIGNING_KEY: the chains grow but no checkpoint signs them"),
    ({"MOTCUA_AUDIT_FAIL_CLOSED": "true"}, "not_ready", "fail-closed stops every delivery"),
    ({"MOTCUA_AUDIT_SIGNING_KEY": "bm90IGEga2V5"}, "not_ready", "MOTCUA_AUDIT_SIGNING_KEY: the key is 9 bytes"),
    ({"MOTCUA_AUDIT_SIGNING_KEY": KEY.private_text()}, "ready", f"signing key {KEY.key_id}, a checkpoint every 60 s"),
    ({"MOTCUA_AUDIT_SIGNING_KEY": KEY.private_text(), "MOTCUA_AUDIT_TSA_URL": "http://127.0.0.1:9/"}, "warning",
     "its tokens are not checked"),
    ({"MOTCUA_AUDIT_CHAIN": "false"}, "warning", "off (MOTCUA_AUDIT_CHAIN=false)"),
], ids=["no key", "no key, fail-closed", "bad key", "key", "authority without certificates", "off"])
def test_doctor_says_whether_checkpoints_can_be_signed(
    env: dict[str, str], status: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.doctor import _Run
    from config.settings import Settings

    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    for name in [n for n in os.environ if n.startswith("MOTCUA_AUDIT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = _Run(Settings(database_url=f"sqlite:///{tmp_path}/relay.db"), 1.0, False)
    try:
        finding = run._audit()
    finally:
        run.close()
    assert (finding.status, finding.check) == (status, "audit chain")
    assert said in finding.detail
    assert KEY.private_text() not in finding.detail
