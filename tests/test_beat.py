"""Any number of beats, one sending: the leader lease, a standby following the leader's runs, and two real
``motcua-relay beat`` processes of which the leader is SIGKILLed."""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.settings import DEFAULT_ROUTING_FILE
from tasks.beat import LastRuns, LeaderLease, LeaderScheduler
from tasks.runtime import reset_runtime
from tests.harness import (
    RedisServer,
    RelayProcess,
    become_relay,
    captured_logs,
    free_port,
    new_secret,
    relay_env,
    wait_for,
    write_routing,
)

QUEUE = "relay.control"
# how long both beats run before the leader is killed: 300 for the five minutes, run by hand
BOTH_SECONDS = float(os.environ.get("MOTCUA_TEST_BEATS_SECONDS", "8"))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def key() -> str:
    return f"t{uuid.uuid4().hex[:6]}:beat:leader"


def _holder(client: redis.Redis, key: str) -> str | None:
    value = client.get(key)
    return value.decode() if isinstance(value, bytes) else None


def test_one_beat_leads_and_only_its_token_renews_or_releases_the_lease(client: redis.Redis, key: str) -> None:
    # given two beats on one lease of 1 s
    a, b = LeaderLease(client, key, 1.0), LeaderLease(client, key, 1.0)
    with captured_logs() as logs:
        assert a.leading()
        assert not b.leading()
        # when the standby releases, and the leader renews past the TTL
        b.release()
        for _ in range(4):
            time.sleep(0.4)
            assert a.leading() and not b.leading()
        # then the lease is still the leader's; once it stops renewing (SIGKILLed), the standby takes it at its
        # next check, and the old leader, checking again, neither renews nor releases the new one's
        assert _holder(client, key) == a.token
        time.sleep(1.1)
        assert b.leading()
        assert not a.leading()
        a.release()
        assert _holder(client, key) == b.token
        assert 0 < int(client.pttl(key)) <= 1000
    assert [(e["event"], e["beat"]) for e in logs] == [
        ("beat.leading", a.token), ("beat.standing_by", b.token), ("beat.leading", b.token),
        ("beat.leadership_lost", a.token)]
    assert logs[1]["leader"] == a.token and logs[3]["leader"] == b.token


def test_a_leader_takes_its_lease_again_after_redis_restarted_empty(client: redis.Redis, key: str) -> None:
    lease = LeaderLease(client, key, 0.6)
    assert lease.leading()
    client.delete(key)  # what a Redis restarted without persistence holds
    time.sleep(0.25)
    assert lease.leading()
    assert _holder(client, key) == lease.token


def test_a_stopping_leader_releases_its_lease_for_the_standby(client: redis.Redis, key: str) -> None:
    # given a leader and a standby on a lease of 3 s
    a, b = LeaderLease(client, key, 3.0), LeaderLease(client, key, 3.0)
    assert a.leading() and not b.leading()
    # when the leader stops (SIGTERM)
    a.release()
    # then the standby leads at its next check, a third of the TTL later, before the lease would have lapsed
    time.sleep(1.05)
    assert b.leading()


def test_without_redis_a_beat_leads() -> None:
    # given a Redis nobody answers on (a beat started during an outage), and the in-memory mode
    away = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    with captured_logs() as logs:
        # then each leads: the beat jobs are harmless twice, and not running them is not
        assert LeaderLease(away, "x:beat:leader", 3.0).leading()
        assert LeaderLease(None, "x:beat:leader", 3.0).leading()
    assert [e["event"] for e in logs][:2] == ["beat.lease_unavailable", "beat.leading"]


def _sent(client: redis.Redis) -> list[dict]:
    """The headers of the messages in the control queue, oldest first."""
    return [json.loads(raw)["headers"] for raw in reversed(client.lrange(QUEUE, 0, -1))]


def test_a_standby_that_takes_over_sends_what_fell_due_once_and_nothing_early(
    client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.app import app

    prefix = f"t{uuid.uuid4().hex[:6]}"
    routing = write_routing(tmp_path / "routing.toml", "http://127.0.0.1:9", names=("warehouse",))
    become_relay(monkeypatch, relay_env(f"sqlite:///{tmp_path}/relay.db", redis_url, new_secret(), {}, routing,
                                        MOTCUA_REDIS_PREFIX=prefix, MOTCUA_BEAT_LEASE_SECONDS="0.3",
                                        MOTCUA_SWEEP_INTERVAL_SECONDS="60"))
    # given a leader holding the lease that sent "gap" (every 10 s) 12 s ago and "later" (every 60 s) 5 s ago
    leader = LeaderLease(client, f"{prefix}:beat:leader", 30.0)
    assert leader.leading()
    now = datetime.now(UTC)
    runs = LastRuns(client, f"{prefix}:beat:runs")
    runs.record("gap", now - timedelta(seconds=12))
    runs.record("later", now - timedelta(seconds=5))
    # and a standby whose own schedule says both last ran an hour ago
    standby = LeaderScheduler(app=app, schedule_filename=str(tmp_path / "standby-schedule"))
    try:
        standby.update_from_dict({"gap": {"task": "probe.gap", "schedule": 10.0},
                                  "later": {"task": "probe.later", "schedule": 60.0}})
        for name in ("gap", "later"):
            standby.schedule[name].last_run_at = now - timedelta(hours=1)
        # when it ticks while the leader holds the lease, then after the leader let it go
        assert standby.tick() == pytest.approx(0.1)
        assert _sent(client) == []
        leader.release()
        time.sleep(0.15)
        for _ in range(5):
            standby.tick()
        # then it sends what fell due in the gap, once, and not what the leader sent 5 s ago
        assert [h["task"] for h in _sent(client)] == ["probe.gap"]
        assert standby.lease.leader() == standby.lease.token
        assert runs.read()["gap"] == pytest.approx(time.time(), abs=5)
    finally:
        standby.close()
        reset_runtime()


# --------------------------------------------------------------------------- two real beats

LEASE = 3.0
PERIODS = {"relay.sweep": 1.0, "relay.transfer.poll": 2.0, "relay.postal.poll": 3.0}


@dataclass(frozen=True)
class Sent:
    task: str
    at: float  # when the beat sent it (epoch seconds)
    pid: int


def _sends(client: redis.Redis) -> list[Sent]:
    """Every scheduled task in the control queue: its send time is its absolute expiry less its expiration."""
    out: list[Sent] = []
    for raw in client.lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        headers, expiration = message["headers"], float(message["properties"]["expiration"]) / 1000
        at = datetime.fromisoformat(headers["expires"]).timestamp() - expiration
        out.append(Sent(headers["task"], at, int(headers["origin"].split("@")[0].removeprefix("gen"))))
    return sorted(out, key=lambda s: s.at)


@pytest.mark.slow
@pytest.mark.timeout(BOTH_SECONDS + 120)  # the window, and the start and the take-over around it
def test_two_beats_send_each_job_once_per_period_and_the_standby_takes_over_from_a_killed_leader(
    tmp_path: Path,
) -> None:
    # given a private Redis, the shipped routing file (every service's job scheduled), a lease of 3 s, the
    # sweeper every 1 s, the exchange's poll every 2 s and the post's every 3 s, and no worker: what the beats
    # send stays in the queue to be counted
    server = RedisServer(tmp_path)
    server.start()
    client = redis.Redis.from_url(server.url)
    env = relay_env(f"sqlite:///{tmp_path}/relay.db", server.url, new_secret(), {}, DEFAULT_ROUTING_FILE,
                    MOTCUA_BEAT_LEASE_SECONDS=str(LEASE), MOTCUA_SWEEP_INTERVAL_SECONDS="1",
                    MOTCUA_TRANSFER_POLL_INTERVAL_SECONDS="2", MOTCUA_POSTAL_POLL_INTERVAL_SECONDS="3",
                    MOTCUA_REDIS_PREFIX="beats")
    logs = Path(os.environ.get("MOTCUA_TEST_ARTIFACTS", tmp_path))
    logs.mkdir(parents=True, exist_ok=True)
    beats = [RelayProcess(["beat", "--loglevel", "INFO"],
                          {**env, "MOTCUA_BEAT_SCHEDULE_FILE": str(tmp_path / f"beat-{n}")}, logs / f"beats-{n}.log")
             for n in (1, 2)]
    try:
        beats[0].start()
        wait_for(lambda: client.llen(QUEUE), 30, 0.1, "the first beat to send")
        beats[1].start()
        wait_for(lambda: "beat: Starting" in beats[1].log_path.read_text(), 30, 0.1, "the second beat to start")
        # when both run for 8 s (BOTH_SECONDS), then the one that sent last is SIGKILLed (a leader's lease lapses
        # by itself)
        both_from = time.time()
        time.sleep(BOTH_SECONDS)
        leader_pid = _sends(client)[-1].pid
        leader, standby = (beats[0], beats[1]) if beats[0].proc and beats[0].proc.pid == leader_pid else beats[::-1]
        assert standby.proc is not None
        standby_pid = standby.proc.pid
        killed_at = time.time()
        leader.kill()
        # then the standby leads within the lease and a check, and goes on sending every job
        wait_for(lambda: any(s.pid == standby_pid for s in _sends(client)), 30, 0.2, "the standby to send")
        time.sleep(6.5)
        sends = _sends(client)
    finally:
        for beat in beats:
            beat.kill()
        server.stop()
    before = [s for s in sends if s.at < killed_at]
    after = [s for s in sends if s.at >= killed_at]
    assert {s.pid for s in before} == {leader_pid}, "a standby sent while the leader lived"
    assert {s.pid for s in after} == {standby_pid}
    took_over = after[0].at - killed_at
    assert took_over <= LEASE + LEASE / 3 + 1.5, f"the standby took {took_over:.1f} s to take over"
    window = killed_at - both_from
    sweeps = [s for s in before if s.task == "relay.sweep" and s.at >= both_from]
    assert window - 2 <= len(sweeps) <= window + 1, f"{len(sweeps)} sweeps in {window:.1f} s with two beats"
    for task, period in PERIODS.items():
        times = [s.at for s in sends if s.task == task]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # no doubles, no burst when the standby took over, and no period skipped but the lease's lapse
        assert min(gaps) >= period * 0.6, f"{task} sent twice in a period: {gaps}"
        assert max(gaps) <= took_over + period + 1.0, f"{task} waited too long: {gaps}"
        assert any(s.task == task for s in after), f"the new leader never sent {task}"
    standby_log = standby.log_path.read_text()
    assert standby_log.index("beat.standing_by") < standby_log.index("beat.leading")
