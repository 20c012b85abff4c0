"""The national public service portal through the provincial LGSP: session login and integration calls.

JSON over HTTP(S), as OpenCPS integrates it (DOMAIN.md): log in with username and password
(header ``dstcode``) for a ``session``; every call carries the session, the unit code
(``madonvi``) and the ``service``. The session is shared by every worker through
:class:`~connectors.credentials.TokenCache`; when the portal says it expired, the connector
logs in again once and repeats the call. This module knows the transport and the answer
codes, not what a dossier is (that is ``adapters/portal.py``).

Answer table (``ANSWERS``; tested row by row in ``tests/test_portal_connector.py``):

=====================  ============  ========================================================
answer                 class         why
=====================  ============  ========================================================
0, "00"                success       both spellings occur
"01" session invalid   AuthExpired   log in again once and repeat; twice in a row: retry later
"02" login refused     Permanent     username, password or dstcode wrong: an operator fixes it
"03" invalid data      Permanent     a business rejection; the portal's message is the reason
"04" not found         Retryable     we create before we update: the next attempt looks up again
"05" bad transition    Permanent     the portal refuses the status change
"06" already exists    Retryable     created meanwhile: the next attempt looks up and updates
"09" unit refused      Permanent     this madonvi may not call the portal
"10" unknown service   Permanent     the contract differs: fix the connector's config
"96" busy, "99" error  Retryable     the portal's own weather
other codes            Permanent     unknown answers are shown, never retried forever
HTTP 401               AuthExpired   gateways in front of the portal answer so for a dead session
other HTTP, transport  (base table)  408/425/429/5xx, timeouts and resets retry; other 4xx do not
=====================  ============  ========================================================
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import (
    AuthExpired,
    DeliveryError,
    Permanent,
    Retryable,
    excerpt,
    post_json,
)
from connectors.credentials import TokenCache, call_renewing
from schemas.portal import (
    ALREADY_EXISTS,
    AUTH_PATH,
    BUSY,
    INTEGRATION_PATH,
    INVALID_DATA,
    INVALID_TRANSITION,
    LOGIN_REFUSED,
    LOOKUP,
    NOT_FOUND,
    ONLINE,
    PROGRESS,
    SESSION_INVALID,
    SUCCESS_CODES,
    SYNC,
    SYSTEM_ERROR,
    UNIT_REFUSED,
    UNKNOWN_SERVICE,
    PortalAnswer,
)

ANSWERS: dict[str, type[DeliveryError] | None] = {
    **dict.fromkeys(SUCCESS_CODES),
    SESSION_INVALID: AuthExpired,
    LOGIN_REFUSED: Permanent,
    INVALID_DATA: Permanent,
    NOT_FOUND: Retryable,
    INVALID_TRANSITION: Permanent,
    ALREADY_EXISTS: Retryable,
    UNIT_REFUSED: Permanent,
    UNKNOWN_SERVICE: Permanent,
    BUSY: Retryable,
    SYSTEM_ERROR: Retryable,
}


def classify_answer(service: str, answer: PortalAnswer, status_code: int = 200) -> DeliveryError | None:
    """``None`` for success, else the error class of the table above, with the portal's message."""
    if answer.ok:
        return None
    error_class = ANSWERS.get(answer.error_code, Permanent)
    known = answer.error_code in ANSWERS
    message = (answer.message or "").strip()[:500]
    reason = f"portal {service}: error_code {answer.error_code}" + (f" — {message}" if message else "")
    if not known:
        reason += " (unknown code)"
    assert error_class is not None
    return error_class(reason, status_code=status_code, excerpt=excerpt(answer.model_dump_json(exclude_none=True)))


class PortalConnector:
    """Calls to one portal (one LGSP adapter URL) with one account."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_path: str = AUTH_PATH,
        integration_path: str = INTEGRATION_PATH,
        dstcode: str,
        username: str,
        password: SecretStr,
        client: httpx.Client,
        tokens: TokenCache,
        credential_name: str,
        session_ttl: float,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"portal URL must be http(s): {base_url!r}")
        self.auth_url = base_url.rstrip("/") + auth_path
        self.integration_url = base_url.rstrip("/") + integration_path
        self._dstcode = dstcode
        self._username = username
        self._password = password
        self._client = client
        self._tokens = tokens
        self._name = credential_name
        self._ttl = session_ttl

    # ------------------------------------------------------------------ session

    def login(self) -> tuple[str, float]:
        """A new session and how long to trust it."""
        body = {"username": self._username, "password": self._password.get_secret_value()}
        answer, status = self._post(self.auth_url, body, "login")
        if answer.ok and answer.session:
            return answer.session, self._ttl
        if answer.ok:
            raise Retryable("portal login: success without a session", status_code=status)
        error = classify_answer("login", answer, status)
        if error is None or isinstance(error, AuthExpired):  # a login cannot need a login: the gateway's weather
            raise Retryable(f"portal login: error_code {answer.error_code}", status_code=status)
        if answer.error_code == LOGIN_REFUSED:
            error.reason += " (check the portal destination's username, password and dstcode)"
        raise error

    def _session(self) -> str:
        return self._tokens.get(self._name) or self._tokens.renew(self._name, None, self.login)

    # ------------------------------------------------------------------ calls

    def call(self, unit_code: str, service: str, accept: frozenset[str] = frozenset(), **fields: Any) -> PortalAnswer:
        """One integration call, logging in again once if the session has expired.

        An answer whose code is in ``accept`` is returned instead of raised.
        """
        answer, status = call_renewing(
            lambda session: self._post(self.integration_url, self._body(session, unit_code, service, fields), service),
            self._session(),
            renew=lambda stale: self._tokens.renew(self._name, stale, self.login),
            refused=lambda reply: reply[0].error_code == SESSION_INVALID,
            log_event="portal.session_expired", service=service,
        )
        error = None if answer.error_code in accept else classify_answer(service, answer, status)
        if error is not None:
            raise error
        return answer

    def lookup(self, unit_code: str, dossier_code: str) -> dict[str, Any] | None:
        """The dossier as the portal holds it (with ``QuaTrinhXuLy``), or ``None``."""
        answer = self.call(unit_code, LOOKUP, accept=frozenset({NOT_FOUND}), MaHoSo=dossier_code)
        if not answer.ok:
            return None
        rows = answer.data if isinstance(answer.data, list) else [answer.data] if answer.data else []
        return next((r for r in rows if isinstance(r, dict) and r.get("MaHoSo") == dossier_code), None)

    def sync(self, unit_code: str, record: dict[str, Any], *, updating: bool) -> PortalAnswer:
        """Create (``isUpdating`` "False") or update ("True") one dossier record."""
        return self.call(unit_code, SYNC, isUpdating="True" if updating else "False", data=[record])

    def progress(self, unit_code: str, entry: dict[str, Any]) -> PortalAnswer:
        """Append one progress entry."""
        return self.call(unit_code, PROGRESS, data=[entry])

    def online(self, unit_code: str, after: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Online dossiers of ``unit_code`` after cursor ``after``, and whether more follow."""
        answer = self.call(unit_code, ONLINE, TuThuTu=after, SoLuong=limit)
        rows = [r for r in (answer.data or []) if isinstance(r, dict)]
        more = bool((answer.model_extra or {}).get("ConTiep", False))
        return rows, more

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport

    @staticmethod
    def _body(session: str, unit_code: str, service: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {"session": session, "madonvi": unit_code, "service": service, **fields}

    def _post(self, url: str, body: dict[str, Any], service: str) -> tuple[PortalAnswer, int]:
        try:
            payload, response = post_json(self._client, url, f"portal {service}", json=body,
                                          headers={"dstcode": self._dstcode})
        except DeliveryError as exc:
            if exc.status_code == 401:  # gateways in front of the portal answer so for a dead session
                return PortalAnswer(error_code=SESSION_INVALID, message="HTTP 401"), 401
            raise
        try:
            return PortalAnswer.model_validate(payload), response.status_code
        except ValidationError as exc:
            raise Retryable(f"portal {service}: the answer is not the portal's JSON ({type(exc).__name__})",
                            status_code=response.status_code, excerpt=excerpt(response.text)) from exc
