"""The audit chain's checkpoints: made when a chain moved or an hour passed, time-stamped by the RFC 3161
simulator over loopback (and still signed when it fails), and fail-closed holding deliveries while none is made."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from sandbox.tsa import create_app as tsa_app
from schemas.timestamps import verify_token
from store import deliveries as claims
from store import intake
from store.audit.checkpoints import Signer, SigningKeyError, make_checkpoint
from store.audit.verify import verify_signature
from store.tables import audit_checkpoints, deliveries
from tasks import audit
from tasks.audit import run_checkpoint
from tasks.delivery import run_batch
from tasks.runtime import get_runtime
from tests.conftest import RelayConfig
from tests.servers import run_asgi
from tests.test_audit_chain import DOSSIERS, ended, record_a_day
from tests.test_ledger import ONESTOP, RULES, T0, make_event, to


@pytest.fixture(scope="module")
def tsa() -> Iterator[tuple[str, str]]:
    """The time-stamping authority's simulator: its URL and certificate."""
    with run_asgi(tsa_app()) as url:
        yield f"{url}/", httpx.get(f"{url}/certificate").text


def test_a_checkpoint_is_made_when_a_chain_moved_or_an_hour_passed(engine: Engine) -> None:
    day = record_a_day(engine)  # its last checkpoint at 210 s, after its last entry
    last = T0 + timedelta(seconds=210)
    # nothing moved since: none a minute later, one an hour later
    assert make_checkpoint(engine, day.signer, last + timedelta(minutes=1)) is None
    made = make_checkpoint(engine, day.signer, last + timedelta(hours=1, seconds=1))
    assert made is not None and made.chains == 2 and made.number == 4
    # a chain moved: one at once
    intake.ingest_and_route(engine, [make_event(5, dossier=DOSSIERS[0])], last, to("onestop"), RULES)
    batch = claims.claim_many(engine, "onestop", ONESTOP, last + timedelta(hours=1, seconds=2), 60, 60)
    claims.finish_many(engine, [ended(c) for c in batch.claimed], ONESTOP, last + timedelta(hours=1, seconds=3))
    assert make_checkpoint(engine, day.signer, last + timedelta(hours=1, seconds=4)) is not None
    with engine.connect() as conn:
        rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.number)).all()
    assert all(verify_signature(r.public_key, r.body, r.signature) for r in rows)
    for before, after in itertools.pairwise(rows):  # each names the one before
        assert json.loads(after.body)["prev"] == hashlib.sha256(before.body.encode()).hexdigest()


def test_a_signing_key_that_is_not_ed25519_is_refused_without_repeating_it() -> None:
    with pytest.raises(SigningKeyError) as refused:
        Signer.from_text("c2VjcmV0LXZhbHVl")
    assert "c2VjcmV0" not in str(refused.value)
    assert Signer.from_text(Signer.generate().private_text())  # what keygen prints reads back


def _as_relay(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from tasks.runtime import reset_runtime

    reset_runtime()


def test_the_beat_job_time_stamps_each_checkpoint_and_signs_it_alone_when_the_authority_fails(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch, tsa: tuple[str, str], tmp_path: Path
) -> None:
    url, certificate = tsa
    (tmp_path / "tsa.pem").write_text(certificate)
    signer = Signer.generate()
    _as_relay(monkeypatch, MOTCUA_AUDIT_SIGNING_KEY=signer.private_text(), MOTCUA_AUDIT_TSA_URL=url,
              MOTCUA_AUDIT_TSA_CERTIFICATE_FILE=str(tmp_path / "tsa.pem"))
    rt = get_runtime()
    record_a_day(rt.engine)
    # when the beat's job runs: a checkpoint, time-stamped, whose token covers its body
    done = run_checkpoint(rt, datetime.now(UTC))
    assert done["stamped"] is True
    with rt.engine.connect() as conn:
        row = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.number.desc()).limit(1)).one()
    stamped_at = verify_token(base64.b64decode(row.tsa_token), hashlib.sha256(row.body.encode()).digest(),
                              [certificate])
    assert abs((stamped_at - datetime.now(UTC)).total_seconds()) < 60
    # and when the authority fails: the checkpoint is still made and signed, without a token
    httpx.post(f"{url}_admin/faults", json={"fail_next": 1}).raise_for_status()
    failed = run_checkpoint(rt, datetime.now(UTC) + timedelta(hours=2))
    assert failed["made"] == done["made"] + 1 and failed["stamped"] is False
    # its age, which the metric and fail-closed read, counts from the last time-stamped one
    assert audit.checkpoint_age(rt, datetime.now(UTC) + timedelta(hours=2)) > 7000


def test_without_a_key_the_job_says_so_and_makes_none(relay_config: RelayConfig) -> None:
    rt = get_runtime()
    assert run_checkpoint(rt)["error"] == "no signing key"


def test_fail_closed_holds_deliveries_without_an_attempt_until_a_checkpoint_is_made(
    relay_config: RelayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = Signer.generate()
    _as_relay(monkeypatch, MOTCUA_AUDIT_SIGNING_KEY=signer.private_text(), MOTCUA_AUDIT_FAIL_CLOSED="true",
              MOTCUA_AUDIT_FAIL_CLOSED_AFTER_SECONDS="300")
    monkeypatch.setattr(audit, "gate", audit.Gate())  # this test's own look at the ledger, not a cached one
    rt = get_runtime()
    now = datetime.now(UTC)
    intake.ingest_and_route(rt.engine, [make_event(1)], now, rt.routing.destinations_for, rt.rules)
    # no checkpoint was ever made: the batch is deferred, spending no attempt, saying why
    held = run_batch("warehouse", runtime=rt)
    assert held.held and set(held.states.values()) == {"deferred"} and held.attempted == 0
    with rt.engine.connect() as conn:
        waiting = conn.execute(select(deliveries.c.attempts, deliveries.c.last_error)).one()
    assert waiting.attempts == 0 and "fail-closed" in waiting.last_error
    # once one is made, the next batch goes
    assert run_checkpoint(rt)["made"] == 1
    monkeypatch.setattr(audit, "gate", audit.Gate())
    with rt.engine.begin() as conn:
        conn.execute(deliveries.update().values(next_attempt_at=None))
    assert run_batch("warehouse", runtime=rt).attempted == 1
