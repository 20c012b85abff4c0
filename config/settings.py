"""Runtime settings: only from the environment (prefix ``MOTCUA_``), an optional ``.env`` and, for a secret, the
file its ``_FILE`` variable names (:mod:`config.environ`).

These are the relay's own; each service declares its own variables (a beat job's interval, ...) in its package
(``services.base.ServiceSettings``).

Secrets are :class:`pydantic.SecretStr`, so reprs and logs show them masked.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator

from config.environ import CARRIES_SECRET, EnvSettings
from config.redis_url import parse_sentinel
from schemas.events import CodePatterns

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROUTING_FILE = Path(__file__).resolve().parent / "relay.toml"


class Settings(EnvSettings):

    # URLs carry their passwords: each may also come from the file its _FILE variable names
    database_url: str = Field("sqlite:///./var/relay.db", json_schema_extra=CARRIES_SECRET,
                              description="the ledger: sqlite:///PATH, or postgresql://USER:PASSWORD@HOST/DB")
    broker_url: str = Field("redis://127.0.0.1:6379/0", json_schema_extra=CARRIES_SECRET,
                            description="Celery's broker: redis://… or sentinel://…")
    redis_url: str = Field("redis://127.0.0.1:6379/0", json_schema_extra=CARRIES_SECRET,
                           description="breakers, rate limits, tokens, doorbells, pauses, metrics: redis://… or "
                                       "sentinel://…")
    redis_prefix: str = Field("motcua", description="key prefix for breaker, rate-limit, metrics state")
    intake_secret: SecretStr | None = Field(
        None, description="one or more whsec_ secrets, comma or space separated (several during rotation)"
    )
    intake_max_body_bytes: int = 5 * 1024 * 1024
    routing_file: Path = Field(
        DEFAULT_ROUTING_FILE, description="the routing file: destinations and routes (default: config/relay.toml, "
                                          "packaged with the relay)")
    beat_schedule_file: Path = Path("var/celerybeat-schedule")
    beat_lease_seconds: float = Field(
        20.0, gt=0, description="the beats' leader lease: renewed every third of it, taken by a standby when it lapses")
    reports_dir: Path = Field(Path("var/reports"), description="where the reconciliation writes its CSV and xlsx")

    # delivery engine
    worker_concurrency: int = 64
    delivery_lease_seconds: float = Field(
        15.0, ge=3,
        description="a claimed delivery's lease, renewed while its attempt runs: a dead worker's work is due again "
                    "this long after it died")
    attempt_deadline_seconds: float = Field(
        90.0, gt=0, description="every call of one attempt ends within this (a hung call is cut, and retried)")
    requeue_after_seconds: float = 60.0
    sweep_interval_seconds: float = 2.0
    sweep_batch: int = 2000
    ledger_analyze: bool = Field(
        True, description="PostgreSQL: the sweep analyzes the ledger's busiest tables once they changed past "
                          "autovacuum's threshold and it has not (false: leave it to autovacuum)")
    delivery_batch: int = Field(
        100, ge=1, le=1000,
        description="deliveries of one destination a worker claims, attempts at once and records together")
    delivery_chain: bool = Field(
        True, description="an ordered stream's next delivery claimed as its predecessor's delivered end is "
                          "recorded, and sent by the same batch (false: the next claim finds it)")
    drain_seconds: float = Field(
        10.0, gt=0, description="how long one drain of a destination goes on before it hands over to a new task")
    ordering_gap_wait_seconds: float = 60.0
    visibility_timeout_seconds: int = 3600
    worker_stall_seconds: float = Field(
        120.0, description="work queued but no task started or finished this long: the worker exits (0 = never)"
    )

    celery_events: bool = Field(
        True, description="workers send task events (Flower, `celery events`); off saves a little Redis traffic"
    )

    # the unit directory the intake resolves closed unit codes with (config/units.csv by default)
    units_file: Path | None = Field(
        None, description="the unit directory: a closed code is resolved to its successor, or refused if it has none")

    # code shapes (a province's own formats)
    unit_code_pattern: str | None = None
    dossier_code_pattern: str | None = None
    procedure_code_pattern: str | None = None

    # the operator console's log-in lock-out (its accounts and secret: MOTCUA_CONSOLE_OPERATORS, _SECRET)
    console_lockout_account: int = Field(5, ge=1, description="failed log-ins of one account that lock it out")
    console_lockout_address: int = Field(20, ge=1, description="failed log-ins from one address that lock it out")
    console_lockout_seconds: float = Field(
        900.0, gt=0, description="failed log-ins closer than this add up; a lock-out lasts this long after the last")

    # the audit chain (docs/audit.md): every attempt and outcome hash-chained, the heads signed every minute
    audit_chain: bool = Field(
        True, description="append every attempt and final outcome to its destination's hash chain (docs/audit.md)")
    audit_signing_key: SecretStr | None = Field(
        None, description="the checkpoints' Ed25519 key: the base64 of its 32 bytes, or a PEM "
                          "(`motcua-relay audit keygen` makes one); without it no checkpoint is made")
    audit_checkpoint_seconds: float = Field(
        60.0, gt=0, le=60, description="how often a checkpoint of the chains' heads is made while they grow")
    audit_idle_checkpoint_seconds: float = Field(
        3600.0, gt=0, le=3600, description="a checkpoint is made at least this often, even when nothing moved")
    audit_tsa_url: str | None = Field(
        None, json_schema_extra=CARRIES_SECRET,
        description="an RFC 3161 time-stamping authority that stamps each checkpoint (none: signed only)")
    audit_tsa_certificate_file: Path | None = Field(
        None, description="the time-stamping authority's certificates (PEM): its tokens are checked against them, "
                          "and archives carry them")
    audit_fail_closed: bool = Field(
        False, description="stop delivering while no complete checkpoint (signed, and stamped when an authority is "
                           "set) was made for MOTCUA_AUDIT_FAIL_CLOSED_AFTER_SECONDS, as X-Road does")
    audit_fail_closed_after_seconds: float = Field(
        300.0, gt=0, description="how old the last complete checkpoint may grow before fail-closed stops deliveries")

    log_format: str = Field("auto", description="auto | json | console")
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return one_host_per_parameter(value) if value.startswith("postgresql") else value

    @field_validator("broker_url", "redis_url")
    @classmethod
    def _sentinel(cls, value: str) -> str:
        parse_sentinel(value)  # a sentinel URL that cannot be used stops the relay at start-up, saying why
        return value

    @field_validator("unit_code_pattern", "dossier_code_pattern", "procedure_code_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value:  # a broken pattern stops the relay at start-up, not at its first event
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @property
    def code_patterns(self) -> CodePatterns:
        """The shapes the intake checks codes against: the province's own where set, else the national ones."""
        return CodePatterns.of(self.unit_code_pattern, self.dossier_code_pattern, self.procedure_code_pattern)

    def intake_secrets(self) -> list[str]:
        if self.intake_secret is None:
            return []
        raw = self.intake_secret.get_secret_value().replace(",", " ")
        return [s for s in raw.split() if s]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def one_host_per_parameter(url: str) -> str:
    """A PostgreSQL URL naming several hosts in the one spelling SQLAlchemy hands to psycopg whole:
    ``?host=H1:P1&host=H2:P2``. libpq's ``postgresql://U@H1:P1,H2:P2/DB`` (which SQLAlchemy cannot read) and
    ``?host=H1:P1,H2:P2`` (whose ports it would leave in the host names) are rewritten to it; any other URL,
    ``?host=H1,H2&port=P1,P2`` included, is returned as it is."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "host"]
    if "," in hosts:
        listed, netloc = hosts.split(","), userinfo + at
    elif len(named) == 1 and "," in named[0] and ":" in named[0] and all(key != "port" for key, _ in query):
        listed, netloc = named[0].split(","), parts.netloc
    else:
        return url
    rest = [(key, value) for key, value in query if key != "host"]
    hosts_query = [("host", host.strip()) for host in listed if host.strip()]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(hosts_query + rest, safe=":,/")))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
