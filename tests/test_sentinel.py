"""Redis Sentinel: the URL the settings carry, and the relay through real failovers.

Real servers: a Redis master and its replica, and three sentinels (quorum 2, a master down after 1 s), all with
passwords, started once for the module on ``MOTCUA_TEST_SENTINEL_PORT`` (default 6395) and up (the sentinels on
20000 more); the relay reaches them only through a ``sentinel://`` URL, for its broker and its own state alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection
from pydantic import ValidationError

import tasks.app  # noqa: F401  (importing the app points the sentinel transport at tasks.broker)
from config.celery import celery_config
from config.redis_url import celery_broker, connect, is_redis, masked, parse_sentinel
from config.routing import RoutingConfig
from config.settings import Settings
from store.db import get_engine
from store.queries import status_counts
from tasks.broker import Transport
from tests.conftest import _fresh_pg
from tests.failover import SteadySender, assert_each_effect_once, relay_stack, switch_and_time, workload
from tests.harness import wait_for

MASTER = "mymaster"
PASSWORD = "r3dis:p@ss"  # the servers' (percent-encoded in the URL)
SENTINEL_PASSWORD = "sentinel-secret"
BASE_PORT = int(os.environ.get("MOTCUA_TEST_SENTINEL_PORT", "6395"))


@pytest.mark.parametrize(("url", "expected"), [
    ("sentinel://h1:26379;h2:26380;h3/0?master_name=mymaster",
     {"sentinels": (("h1", 26379), ("h2", 26380), ("h3", 26379)), "master_name": "mymaster", "db": 0}),
    ("redis+sentinel://:pw@h1,h2:26380/3?master_name=relay",
     {"sentinels": (("h1", 26379), ("h2", 26380)), "master_name": "relay", "db": 3, "password": "pw"}),
    ("sentinel://relay:p%40ss@10.0.0.1:26379/1?master_name=m&sentinel_password=s%26t",
     {"sentinels": (("10.0.0.1", 26379),), "db": 1, "username": "relay", "password": "p@ss",
      "sentinel_password": "s&t"}),
    # kombu's own spelling: the scheme repeated before every host
    ("sentinel://h1:26379;sentinel://h2:26379?master_name=m", {"sentinels": (("h1", 26379), ("h2", 26379))}),
    ("sentinel://[::1]:26379;[fe80::2]?master_name=m", {"sentinels": (("::1", 26379), ("fe80::2", 26379))}),
])
def test_a_sentinel_url_is_read(url: str, expected: dict[str, Any]) -> None:
    target = parse_sentinel(url)
    assert target is not None
    seen = {key: getattr(target, key) for key in expected}
    for key in ("password", "sentinel_password"):
        if key in seen:
            seen[key] = seen[key].get_secret_value()
    assert seen == expected


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1", "memory://",
                                 "unix:///run/redis.sock"])
def test_other_urls_are_not_sentinel_urls(url: str) -> None:
    assert parse_sentinel(url) is None
    assert celery_broker(url) == (url, {})


@pytest.mark.parametrize(("url", "says"), [
    ("sentinel://h1:26379", "no master_name"),
    ("sentinel://:secret@h1:26379/0?master_name=", "no master_name"),
    ("sentinel://:secret@/0?master_name=m", "no sentinel host"),
    ("sentinel://:secret@h1:26379/zero?master_name=m", "must be a number"),
    ("sentinel://:secret@h1:port?master_name=m", "cannot read the sentinel 'h1:port'"),
    ("sentinel://:secret@h1?master_name=m&service_name=x", "unknown option service_name"),
])
def test_a_broken_sentinel_url_stops_the_settings_saying_why_and_not_the_password(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=url)
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("sentinel://:pw@h1:26379;h2/0?master_name=m&sentinel_password=sp",
     "sentinel://:***@h1:26379;h2/0?master_name=m&sentinel_password=***"),
    ("sentinel://u:pw@h1;sentinel://u:pw@h2?master_name=m", "sentinel://u:***@h1;sentinel://u:***@h2?master_name=m"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0?password=pw", "redis://127.0.0.1:6379/0?password=***"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("memory://", "memory://"),
])
def test_urls_are_printed_without_their_passwords(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_celery_gets_kombus_spelling_and_the_sentinel_options() -> None:
    # given a sentinel broker URL with the servers' and the sentinels' passwords
    url = "sentinel://:p%40ss@h1:26379;h2:26380/2?master_name=relay&sentinel_password=st"
    # when the Celery configuration is made from it
    config = celery_config(Settings(broker_url=url), RoutingConfig(destinations={}, routes=[]))
    # then every sentinel is a complete kombu URL, and the master's name and the sentinels' password are options
    assert config["broker_url"] == "sentinel://:p%40ss@h1:26379/2;sentinel://:p%40ss@h2:26380/2"
    options = config["broker_transport_options"]
    assert options["master_name"] == "relay"
    assert options["sentinel_kwargs"] == {"password": "st", "socket_connect_timeout": 3, "socket_timeout": 10}
    assert options["visibility_timeout"] >= 3600
    assert is_redis(url) and is_redis("redis://h") and not is_redis("memory://")


# --------------------------------------------------------------------------- a real sentinel group


class SentinelGroup:
    """A master and a replica (``redis-server``, no persistence) watched by three sentinels, all on loopback."""

    def __init__(self, workdir: Path, base_port: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (the README's test command installs it)")
        self.binary = binary
        self.workdir = workdir
        self.ports = [base_port, base_port + 1]
        self.sentinel_ports = [20000 + base_port + i for i in range(3)]
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ";".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return (f"sentinel://:r3dis%3Ap%40ss@{hosts}/0?master_name={MASTER}"
                f"&sentinel_password={SENTINEL_PASSWORD}")

    def start_server(self, port: int, replica_of: int | None) -> None:
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0",
                "--requirepass", PASSWORD,
                "--masterauth", PASSWORD]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _answers(self.server(port)), 10, 0.05, f"redis-server on {port}")

    def start(self) -> SentinelGroup:
        self.start_server(self.ports[0], None)
        self.start_server(self.ports[1], self.ports[0])
        wait_for(lambda: self._replicating(self.ports[1]), 10, 0.05, "the replica to sync")
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text("\n".join([
                f"port {port}", "bind 127.0.0.1", f"dir {self.workdir}", f"requirepass {SENTINEL_PASSWORD}",
                f"sentinel monitor {MASTER} 127.0.0.1 {self.ports[0]} 2",
                f"sentinel auth-pass {MASTER} {PASSWORD}", f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                f"sentinel down-after-milliseconds {MASTER} 1000", f"sentinel failover-timeout {MASTER} 3000",
                f"sentinel parallel-syncs {MASTER} 1", "",
            ]))
            self.sentinels.append(subprocess.Popen([self.binary, str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for i in range(3):
            # a sentinel reads a server's INFO every 10 s and greets its peers every 2 s: a failover's last step
            # (the former master told to follow) would wait that long; and a timer late by 2 s on a busy
            # machine would make it stop acting for 30 s ("tilt")
            _eventually(lambda i=i: self.sentinel(i).execute_command(
                "SENTINEL", "DEBUG", "INFO-PERIOD", 500, "PUBLISH-PERIOD", 250, "TILT-TRIGGER", 10000), 10)
        wait_for(self._settled, 20, 0.1, "the sentinels to know the replica and each other")
        return self

    def server(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=2)

    def sentinel(self, i: int) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[i], password=SENTINEL_PASSWORD, socket_timeout=2)

    def master_port(self, i: int = 0) -> int:
        return int(self.sentinel(i).sentinel_get_master_addr_by_name(MASTER)[1])

    def _settled(self) -> bool:
        """Every sentinel knows the other two and sees one replica up and in sync: ready for a failover."""
        try:
            for i in range(3):
                replicas = self.sentinel(i).sentinel_slaves(MASTER)
                if len(self.sentinel(i).sentinel_sentinels(MASTER)) != 2 or len(replicas) != 1:
                    return False
                if replicas[0]["is_sdown"] or replicas[0].get("master-link-status") != "ok":
                    return False
            return True
        except redis.RedisError:
            return False

    def _elected(self, old: int) -> bool:
        """Every sentinel names a master other than ``old``, and that one says it is the master."""
        try:
            ports = {self.master_port(i) for i in range(3)}
            if len(ports) != 1 or ports == {old}:
                return False
            return bool(self.server(ports.pop()).info("replication")["role"] == "master")
        except redis.RedisError:
            return False

    def failover(self) -> int:
        """A graceful failover (``SENTINEL FAILOVER``): the replica promoted, the master made its replica."""
        old = self.master_port()
        wait_for(self._asked_to_fail_over, 20, 0.1, "a sentinel to take the failover")
        wait_for(lambda: self._elected(old), 20, 0.05, "the sentinels to elect a new master")
        wait_for(lambda: self._replicating(old), 20, 0.05, "the former master to replicate the new one")
        return self.master_port()

    def _asked_to_fail_over(self) -> bool:
        """``SENTINEL FAILOVER`` taken; False while the sentinel still ends an earlier one (it answers ``INPROG``
        until its failover's last step, after the servers have already switched) or has not yet read a fresh
        INFO from the replica (``NOGOODSLAVE``: a replica restarted a moment ago is not yet a candidate)."""
        try:
            self.sentinel(0).execute_command("SENTINEL", "FAILOVER", MASTER)
            return True
        except redis.ResponseError as exc:
            if str(exc).startswith(("INPROG", "NOGOODSLAVE")):
                return False
            raise

    def _replicating(self, port: int) -> bool:
        try:
            return self.server(port).info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def kill_master(self) -> int:
        """The master SIGKILLed: the sentinels see it down after 1 s and promote the replica."""
        old = self.master_port()
        self.servers[old].kill()
        self.servers[old].wait(10)
        wait_for(lambda: self._elected(old), 30, 0.05, "the sentinels to elect a new master")
        return self.master_port()

    def restart_as_replica(self, port: int) -> None:
        """A killed server back; the sentinels make it a replica of the master they elected."""
        self.start_server(port, self.master_port())
        wait_for(lambda: self._replicating(port), 20, 0.05, "the restarted server to replicate the master")
        wait_for(self._settled, 20, 0.1, "the sentinels to know the replica again")

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.servers.values()]:
            proc.kill()
            proc.wait(10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    sentinels = SentinelGroup(tmp_path_factory.mktemp("sentinel"), BASE_PORT)
    try:
        yield sentinels.start()
    finally:
        sentinels.stop()


def _healed(group: SentinelGroup) -> None:
    """Both servers up, one replica of the other, whatever an earlier test killed."""
    for port in group.ports:
        if group.servers[port].poll() is not None:
            group.restart_as_replica(port)


def _eventually(step: Any, timeout: float = 15.0) -> Any:
    """``step()``'s result once it stops raising a Redis error (while the sentinels elect a master)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_relays_client_writes_to_whichever_server_the_sentinels_name(group: SentinelGroup) -> None:
    _healed(group)
    # given the relay's client of the sentinel URL, which has written a key
    client = connect(group.url, socket_timeout=5, socket_connect_timeout=3)
    client.set("ha:key", "before")
    first = group.master_port()
    # when the sentinels fail over, gracefully and then by the master's death
    promoted = group.failover()
    # (once the old master is a replica: a write it took in the moment before would be lost when it resyncs, as
    # Redis's asynchronous replication allows; that moment is Redis's, not the client's)
    wait_for(lambda: group.server(first).info("replication")["role"] == "slave", 15, 0.1, "the old master demoted")
    _eventually(lambda: client.set("ha:key", "after a failover"))
    # (and once the replica has it: replication is asynchronous, so a master killed before its replica read the
    # write loses it, whatever the client; WAIT is how a writer that must not lose it makes sure)
    assert _eventually(lambda: client.execute_command("WAIT", 1, 5000)) == 1
    survivor = group.kill_master()
    # then the same client goes on writing, each time to the new master, and nothing it wrote was lost
    assert _eventually(lambda: client.incr("ha:count")) == 1
    assert first != promoted and survivor == first
    assert group.server(survivor).get("ha:key") == b"after a failover"
    group.restart_as_replica(promoted)


def _replicated(master: redis.Redis) -> None:
    """Wait until every replica of ``master`` has read all that it had written so far."""
    written = master.info("replication")["master_repl_offset"]
    wait_for(lambda: all(replica["offset"] >= written for name, replica in master.info("replication").items()
                         if name.startswith("slave")), 10, 0.05, "the replica to read the first message")


def test_a_broker_on_sentinels_carries_messages_across_a_failover(group: SentinelGroup) -> None:
    _healed(group)
    # given kombu connected as Celery is configured for the sentinel broker URL
    url, options = celery_broker(group.url)
    with Connection(url, transport_options=options) as conn:
        queue = conn.SimpleQueue("ha.probe")
        queue.put({"n": 1})
        # (and the replica holds it: replication is asynchronous, and SENTINEL FAILOVER does not wait for the
        # replica to catch up, so a failover in the moment after the put could leave the first message behind)
        _replicated(group.server(group.master_port()))
        # when the master fails over between a message sent and one more
        group.failover()
        _eventually(lambda: conn.ensure_connection(max_retries=20, interval_start=0.2, interval_step=0.2))
        queue = conn.SimpleQueue("ha.probe")
        _eventually(lambda: queue.put({"n": 2}))
        # then both are there to take from the new master (the first was replicated before the switch)
        received = sorted(queue.get(timeout=5).payload["n"] for _ in range(2))
        queue.close()
    assert received == [1, 2]


def test_a_channel_closed_again_after_its_connection_was_released_raises_a_connection_error(
    group: SentinelGroup,
) -> None:
    _healed(group)
    # given a worker's channel holding a message it has not acknowledged (a task running), on the app's transport
    url, options = celery_broker(group.url)
    conn = Connection(url, transport_options=options)
    assert isinstance(conn.transport, Transport)
    queue = conn.SimpleQueue("ha.unacked")
    queue.put({"n": 1})
    held = queue.get(timeout=5)
    # when Celery handles the master's death: the first close failed on the dead socket and released the
    # transport (kombu's collect()), and the connection is closed once more
    conn._do_close_transport()
    conn.close()  # kombu's own channel raised AttributeError here, and the worker stopped
    # then nothing was raised, and the message waits among the unacknowledged ones for the visibility timeout
    assert held.payload == {"n": 1}
    master = group.server(group.master_port())
    assert master.hlen("unacked") == 1
    master.delete("unacked", "unacked_index", "ha.unacked")


@pytest.mark.slow
def test_failovers_under_load_lose_nothing_and_deliver_nothing_twice(
    group: SentinelGroup, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _healed(group)
    database_url = _fresh_pg(pg_url)
    events = workload(800)
    with relay_stack("sentinel", tmp_path, monkeypatch, database_url=database_url, redis_url=group.url) as stack:
        # given a worker, beat and the API on the sentinel URL (broker and state), 50 events a second for 16 s
        sender = SteadySender(stack, events).start()
        wait_for(lambda: sender.accepted >= 120 and stack.delivered() >= 100, 60, 0.1, "the first deliveries")
        # when the master is failed over gracefully, and later killed, while events keep arriving
        graceful = switch_and_time(stack, sender, group.failover, "SENTINEL FAILOVER")
        wait_for(lambda: sender.accepted >= 420, 60, 0.1, "more events")
        killed = switch_and_time(stack, sender, group.kill_master, "the master's death")
        sender.join(120)
        # then every event is delivered, each effect happened once, and the ledger agrees
        stats = assert_each_effect_once(stack, events)
        assert stack.worker.restarts == 0, "a failover stopped the worker"
        assert {k: v for k, v in stack.readiness().items() if k != "workers"} == {
            "status": 200, "database": "ok", "redis": "ok"}
        wait_for(lambda: status_counts(get_engine(database_url)) == {"warehouse": {"delivered": len(events)}}, 30,
                 0.5, "the ledger to record every delivery")
    print(f"sentinel failover: resumed {graceful} s after SENTINEL FAILOVER, {killed} s after the master's death; "
          f"{stats['distinct']} effects, {stats['duplicates']} redeliveries recognised; "
          f"worker restarts {stack.worker.restarts}")
