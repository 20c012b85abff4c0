"""Redis URLs: one server, or a master found through Redis Sentinel, in the one string a setting carries.

``MOTCUA_REDIS_URL`` and ``MOTCUA_BROKER_URL`` take what redis-py's ``Redis.from_url`` reads (``redis://``,
``rediss://``, ``unix://``: unchanged), or a sentinel URL::

    sentinel://[[USER]:PASSWORD@]HOST[:PORT][;HOST[:PORT]…][/DB]?master_name=NAME[&sentinel_password=SECRET]

``redis+sentinel://`` is the same. The hosts are the sentinels (port 26379 when left out), separated by ``;`` or
``,``; kombu's own spelling, ``sentinel://h1:26379;sentinel://h2:26379``, is read too. USER and PASSWORD are the
Redis servers' (the master's and its replicas', as in a ``redis://`` URL), ``sentinel_password`` the sentinels'
own when they have a ``requirepass``; both are percent-encoded like any URL's. DB is the database number on the
master (0 when left out), ``master_name`` the name the sentinels monitor it by.

:func:`parse_sentinel` reads it; :func:`connect` makes the relay's client of it, :func:`celery_broker` the URL and
transport options kombu's Sentinel transport takes, :func:`masked` the form that may be printed.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
from pydantic import BaseModel, ConfigDict, SecretStr
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("sentinel", "redis+sentinel")
SENTINEL_PORT = 26379
# kombu's Sentinel transport: how long a connection to a sentinel or the master may take, and a reply (its
# BRPOP waits 1 s at a time); without them a host that vanished without a reset would hang a worker for minutes
BROKER_SOCKET_OPTIONS = {"socket_connect_timeout": 3, "socket_timeout": 10}
FORM = "sentinel://[:PASSWORD@]HOST[:PORT][;HOST[:PORT]…][/DB]?master_name=NAME[&sentinel_password=SECRET]"

_HOST = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/]+)(?::(?P<port>\d+))?$")
_KOMBU_SEPARATOR = re.compile(r"[;,]\s*(?:redis\+)?sentinel://", re.IGNORECASE)
_USERINFO_PASSWORD = re.compile(r"(://[^:/@;]*:)[^@/;]*@")
_QUERY_PASSWORD = re.compile(r"([?&][^=&]*password=)[^&]*", re.IGNORECASE)


class SentinelURL(BaseModel):
    """A Redis master named by Sentinel: where the sentinels are, the master's name, the database and secrets."""

    model_config = ConfigDict(frozen=True)

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: SecretStr | None = None
    sentinel_password: SecretStr | None = None

    def server_credentials(self) -> dict[str, str]:
        """``username`` and ``password`` for the master's connections, those that are set."""
        found = {"username": self.username, "password": _plain(self.password)}
        return {key: value for key, value in found.items() if value}

    def sentinel_options(self, socket_options: dict[str, Any]) -> dict[str, Any]:
        """The connection options of the sentinels themselves: the socket timeouts, and their password if any."""
        options = {key: value for key, value in socket_options.items() if key.startswith("socket_")}
        if self.sentinel_password is not None:
            options["password"] = self.sentinel_password.get_secret_value()
        return options

    def kombu_url(self) -> str:
        """kombu's spelling: every sentinel as a URL of its own, with the servers' credentials and the database
        (kombu moves to the next one when a connection fails, so each must be complete)."""
        userinfo = ""
        if self.username or self.password is not None:
            userinfo = f"{quote(self.username or '', safe='')}:{quote(_plain(self.password) or '', safe='')}@"
        return ";".join(f"sentinel://{userinfo}{host}:{port}/{self.db}" for host, port in self.sentinels)


def parse_sentinel(url: str) -> SentinelURL | None:
    """The sentinel URL ``url`` read, or ``None`` when it is not one (a ``redis://`` URL, ``memory://``…).

    Raises :class:`ValueError` naming what is wrong and never the secrets.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        return None
    parts = urlsplit("//" + _KOMBU_SEPARATOR.sub(";", rest))
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = tuple(_sentinel(host, url) for host in re.split(r"[;,]", hosts) if host.strip())
    if not sentinels:
        raise ValueError(f"no sentinel host in {masked(url)}: {FORM}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database in {masked(url)} must be a number, not {path!r}: {FORM}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"master_name", "sentinel_password"})
    if unknown:
        raise ValueError(f"unknown option {', '.join(unknown)} in {masked(url)}: a sentinel URL takes master_name "
                         "and sentinel_password")
    master_name = query.get("master_name", [""])[-1]
    if not master_name:
        raise ValueError(f"no master_name in {masked(url)}: name the master the sentinels monitor, {FORM}")
    username, has_password, password = userinfo.partition(":")
    sentinel_password = query.get("sentinel_password")
    return SentinelURL(
        sentinels=sentinels, master_name=master_name, db=int(path or 0),
        username=unquote(username) or None,
        password=SecretStr(unquote(password)) if has_password and password else None,
        sentinel_password=SecretStr(sentinel_password[-1]) if sentinel_password and sentinel_password[-1] else None,
    )


def _sentinel(host: str, url: str) -> tuple[str, int]:
    match = _HOST.match(host.strip())
    if match is None:
        raise ValueError(f"cannot read the sentinel {host.strip()!r} in {masked(url)}: HOST or HOST:PORT, {FORM}")
    return match["host"].strip("[]"), int(match["port"] or SENTINEL_PORT)


def _plain(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def is_redis(url: str) -> bool:
    """Whether ``url`` names a Redis (a server or a sentinel URL), not ``memory://`` or another broker."""
    return url.lower().startswith(("redis", "sentinel://"))


def connect(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url``; ``options`` (the timeouts…) apply to every connection it opens.

    For a sentinel URL it is the master's client: its pool asks the sentinels where the master is for every new
    connection, and a connection that fails (the master died, or was made a replica and answers ``READONLY``)
    is dropped, so the next command, or redis-py's own retry, reaches the master the sentinels elected.
    """
    target = parse_sentinel(url)
    if target is None:
        return redis.Redis.from_url(url, **options)
    sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_options(options))
    server: dict[str, Any] = {**target.server_credentials(), **options}  # one Any mapping: redis 8 types each keyword
    return sentinels.master_for(target.master_name, db=target.db, **server)


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """The broker URL Celery is given for ``url``, and the transport options it needs beside it (kombu's
    Sentinel transport reads the master's name and the sentinels' password from them, not from the URL)."""
    target = parse_sentinel(url)
    if target is None:
        return url, {}
    options: dict[str, Any] = {"master_name": target.master_name, **BROKER_SOCKET_OPTIONS,
                               "sentinel_kwargs": target.sentinel_options(BROKER_SOCKET_OPTIONS)}
    return target.kombu_url(), options


def masked(url: str) -> str:
    """``url`` with its passwords (the servers', in any host's user part, and any ``…password=`` option) shown as
    ``***``: what logs and the console may print."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))
