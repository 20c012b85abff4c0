"""Operator accounts and sessions for the console.

Accounts come from the environment only: ``MOTCUA_CONSOLE_OPERATORS`` holds ``name:hash`` pairs separated by
commas or spaces, each hash made by ``motcua-relay console hash-password`` (PBKDF2-HMAC-SHA256, a random salt,
:data:`ITERATIONS` rounds). A session is a cookie ``name|expiry|mac``, the MAC an HMAC-SHA256 with
``MOTCUA_CONSOLE_SECRET``; it lasts :data:`SESSION_SECONDS` and is ``HttpOnly`` and ``SameSite=Strict``.
Forms that change something carry a token derived from the session (:func:`csrf_token`). Without a secret
or without an account the console is closed and says so; nothing is ever shown anonymously.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

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
    return hmac.compare_digest(expected.hex(), digest)


@dataclass(frozen=True)
class ConsoleAuth:
    operators: dict[str, str]
    secret: bytes

    @classmethod
    def from_env(cls) -> ConsoleAuth | None:
        """The console's accounts and secret, or ``None`` (closed) when either is missing."""
        secret = os.environ.get("MOTCUA_CONSOLE_SECRET", "")
        pairs = os.environ.get("MOTCUA_CONSOLE_OPERATORS", "").replace(",", " ").split()
        operators = dict(pair.split(":", 1) for pair in pairs if ":" in pair)
        if len(secret) < 16 or not operators:
            return None
        return cls(operators, secret.encode())

    def login(self, name: str, password: str) -> bool:
        stored = self.operators.get(name)
        if stored is None:
            check_password(password, hash_password("x", iterations=1000))  # the same work either way, roughly
            return False
        return check_password(password, stored)

    def _mac(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    def session(self, name: str, now: float | None = None) -> str:
        body = f"{name}|{int((now or time.time()) + SESSION_SECONDS)}"
        return f"{body}|{self._mac(body)}"

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator a session cookie names, if it is ours and has not expired."""
        if not cookie or cookie.count("|") != 2:
            return None
        name, expiry, mac = cookie.split("|")
        if not hmac.compare_digest(mac, self._mac(f"{name}|{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < (now or time.time()) or name not in self.operators:
            return None
        return name

    def csrf_token(self, cookie: str) -> str:
        return self._mac(f"csrf|{cookie}")[:32]

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(self.csrf_token(str(cookie)), str(token))
