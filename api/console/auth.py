"""Operator accounts and sessions for the console.

Accounts come from the configuration only (the environment, ``.env``, or the file ``*_FILE`` names:
:mod:`config.environ`): ``MOTCUA_CONSOLE_OPERATORS`` holds ``name:hash`` pairs separated by commas or spaces, each
hash made by ``motcua-relay console hash-password`` (PBKDF2-HMAC-SHA256, a random salt, :data:`ITERATIONS`
rounds). A hash holds ``$`` signs, which a shell expands unless the value is in single quotes: an account whose
hash is not in its form is logged once, by name, with how to write it (the log-in page says only that the name
or the password is wrong). A log-in costs the same whether the name is an account or not: an unknown name is
checked against a dummy hash as slow as the slowest account's, so the answer's time does not tell names apart.

A session is a cookie ``name|expiry|session id|mac``, the MAC an HMAC-SHA256 with ``MOTCUA_CONSOLE_SECRET`` over
the name, the expiry, the id and a fingerprint of the account's hash (a new password ends the account's
sessions); it lasts :data:`SESSION_SECONDS` and is ``HttpOnly`` and ``SameSite=Strict``. The cookie alone is not
enough: the session id must also be open in the console's state (:mod:`api.console.state`), which log-out
closes. Forms that change something carry a token derived from the session (:meth:`ConsoleAuth.csrf_token`).
Without a secret or without an account the console is closed and says so; nothing is ever shown anonymously.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

import structlog

from config.environ import EnvironError, lookup_secret

log = structlog.get_logger(__name__)

ITERATIONS = 240_000
SESSION_SECONDS = 8 * 3600
COOKIE = "motcua_console"


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        expected = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return _same(expected.hex(), digest)


SECRET_MIN = 16  # characters of MOTCUA_CONSOLE_SECRET, or the console stays closed


def configured() -> tuple[str, dict[str, str]]:
    """The console's key and its accounts (``name → hash``) as configured; :class:`EnvironError` when a
    variable cannot be read."""
    secret = lookup_secret("MOTCUA_CONSOLE_SECRET") or ""
    pairs = (lookup_secret("MOTCUA_CONSOLE_OPERATORS") or "").replace(",", " ").split()
    return secret, dict(pair.split(":", 1) for pair in pairs if ":" in pair)


def malformed(operators: dict[str, str]) -> list[str]:
    """The accounts whose hash is not ``pbkdf2_sha256$ROUNDS$SALT$DIGEST`` (a shell expanded its ``$``, or it was
    cut), by name: no password can open them."""
    return sorted(name for name, stored in operators.items()
                  if not (stored.startswith("pbkdf2_sha256$") and _iterations(stored) > 0))


@lru_cache(maxsize=4)
def _warn_malformed(names: tuple[str, ...]) -> None:
    """Logged once per process and set of accounts, not at every request."""
    log.warning("console.account_malformed", accounts=list(names),
                hint="its hash must read pbkdf2_sha256$ROUNDS$SALT$DIGEST, as `motcua-relay console hash-password` "
                     "printed it: in a shell, quote it in single quotes, or write it in .env")


def _iterations(stored: str) -> int:
    parts = stored.split("$")
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else 0


@lru_cache(maxsize=8)
def _dummy_hash(iterations: int) -> str:
    """A hash of a password nobody knows, checked for names that are no account (one per cost, made once)."""
    return hash_password(secrets.token_urlsafe(24), iterations=iterations)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(errors="surrogatepass"), b.encode(errors="surrogatepass"))


@dataclass(frozen=True)
class Session:
    """What a valid cookie says: who, until when (epoch seconds), and the id the console's state knows it by."""

    operator: str
    expires: int
    sid: str

    def remaining(self, now: float | None = None) -> int:
        return max(1, int(self.expires - (time.time() if now is None else now)))


@dataclass(frozen=True)
class ConsoleAuth:
    operators: dict[str, str]
    secret: bytes

    @classmethod
    def from_env(cls) -> ConsoleAuth | None:
        """The console's accounts and secret, or ``None`` (closed) when either is missing."""
        try:
            secret, operators = configured()
        except EnvironError as exc:
            log.error("console.configuration_unreadable", error=str(exc))
            return None
        if len(secret) < SECRET_MIN or not operators:
            return None
        if bad := malformed(operators):
            _warn_malformed(tuple(bad))
        return cls(operators, secret.encode())

    def _stored(self, name: str) -> str | None:
        """The account's hash, every name compared in constant time (no early exit on the one that matches)."""
        found = None
        for known, stored in self.operators.items():
            if _same(known, name):
                found = stored
        return found

    def login(self, name: str, password: str) -> bool:
        """Whether ``password`` is the account's; the same PBKDF2 work for a name that is no account."""
        stored = self._stored(name)
        if stored is None:
            slowest = max((_iterations(s) for s in self.operators.values()), default=0) or ITERATIONS
            check_password(password, _dummy_hash(slowest))
            return False
        return check_password(password, stored)

    def _mac(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(errors="surrogatepass"), hashlib.sha256).hexdigest()

    def _signed(self, name: str, expiry: str, sid: str) -> str:
        account = hashlib.sha256(self.operators.get(name, "").encode()).hexdigest()[:16]
        return self._mac(f"{name}|{expiry}|{sid}|{account}")

    def session(self, name: str, now: float | None = None) -> tuple[str, Session]:
        """A new session of ``name``: its cookie and what it says (open it in the state before handing it out)."""
        made = Session(name, int((time.time() if now is None else now) + SESSION_SECONDS), secrets.token_urlsafe(18))
        body = f"{made.operator}|{made.expires}|{made.sid}"
        return f"{body}|{self._signed(made.operator, str(made.expires), made.sid)}", made

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, if it is ours, unexpired and of an account whose hash has not changed
        (whether it is still open is the state's to say)."""
        if not cookie or cookie.count("|") < 3:
            return None
        name, expiry, sid, mac = cookie.rsplit("|", 3)
        if not _same(mac, self._signed(name, expiry, sid)):
            return None
        if not expiry.isdigit() or int(expiry) < (time.time() if now is None else now) or name not in self.operators:
            return None
        return Session(name, int(expiry), sid)

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator a session cookie names, if it is ours and has not expired."""
        found = self.read(cookie, now)
        return found.operator if found else None

    def csrf_token(self, cookie: str) -> str:
        return self._mac(f"csrf|{cookie}")[:32]

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and _same(self.csrf_token(str(cookie)), str(token))
