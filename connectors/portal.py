"""The national public service portal through the provincial LGSP: session login and integration calls.

JSON over HTTP(S), as OpenCPS integrates it (``schemas/portal.py``): log in with username and password for a
``session``; every call carries the session, the unit code (``madonvi``) and the ``service``, every request
the ``dstcode`` header. Both endpoints are configured as OpenCPS configures them: the adapter's URL and each
endpoint's path (or a full URL of its own). The session is shared by every worker through
:class:`~connectors.credentials.TokenCache`; when the portal says it expired, the connector logs in again once
and repeats the call. This module knows the transport and the answer codes, not what a dossier is (that is
``adapters/portal.py``).

Answer table (:data:`ANSWERS`, by service and ``error_code``; ``*`` is every service; tested row by row in
``tests/test_portal_connector.py``):

=====================  ===================  ============  ===================================================
answer                 service              meaning       why
=====================  ===================  ============  ===================================================
0, "00"                *                    success       OpenCPS takes 0; "00" occurs at some gateways
"01" session invalid   *                    AuthExpired   log in again once and repeat; twice in a row: later
"02" login refused     *                    Permanent     username, password or dstcode wrong: an operator
"03" invalid data      *                    Permanent     a business rejection; the portal's message says why
"04" not found         TraCuuHoSo           absent        the dossier is not held (like an empty ``result``)
"04" not found         *                    Retryable     updated before created: the next attempt looks up
"05" bad transition    *                    Permanent     the portal refuses the status change
"06" already exists    CapNhatTienDoHoSoMC  held          the entry is held: the repeat after an unanswered call
"06" already exists    *                    Retryable     created meanwhile: the next attempt looks up, updates
"09" unit refused      *                    Permanent     madonvi missing or not allowed
"10" unknown service   *                    Permanent     the contract differs: fix the destination's options
"96" busy, "99" error  *                    Retryable     the portal's own weather
other codes            *                    Permanent     unknown answers are shown, never retried forever
HTTP 401               *                    AuthExpired   gateways in front of the portal answer so for a dead session
other HTTP, transport  *                    (base table)  408/425/429/5xx, timeouts, resets retry; other 4xx not
=====================  ===================  ============  ===================================================

:func:`may_have_landed` tells a failed call that the portal may have applied (the answer was lost) from one
it cannot have (refused, or never sent): the deliverer keeps that in the ledger for its progress entries.
"""

from __future__ import annotations

from typing import Any, Literal

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
    PROCEDURE,
    PROGRESS,
    SESSION_INVALID,
    SUCCESS_CODES,
    SYNC,
    SYSTEM_ERROR,
    UNIT_REFUSED,
    UNKNOWN_SERVICE,
    PortalAnswer,
    ProcedureRow,
)

ANY = "*"
OK: Literal["ok"] = "ok"
ABSENT: Literal["absent"] = "absent"
HELD: Literal["held"] = "held"
Meaning = type[DeliveryError] | Literal["ok", "absent", "held"]

ANSWERS: dict[tuple[str, str], Meaning] = {
    **{(ANY, code): OK for code in SUCCESS_CODES},
    (ANY, SESSION_INVALID): AuthExpired,
    (ANY, LOGIN_REFUSED): Permanent,
    (ANY, INVALID_DATA): Permanent,
    (LOOKUP, NOT_FOUND): ABSENT,
    (ANY, NOT_FOUND): Retryable,
    (ANY, INVALID_TRANSITION): Permanent,
    (PROGRESS, ALREADY_EXISTS): HELD,
    (ANY, ALREADY_EXISTS): Retryable,
    (ANY, UNIT_REFUSED): Permanent,
    (ANY, UNKNOWN_SERVICE): Permanent,
    (ANY, BUSY): Retryable,
    (ANY, SYSTEM_ERROR): Retryable,
}


def meaning(service: str, code: str) -> Meaning | None:
    """What ``error_code`` ``code`` means for ``service`` (its own row first), or ``None`` for a code not in the
    table."""
    return ANSWERS.get((service, code)) or ANSWERS.get((ANY, code))


def classify_answer(service: str, answer: PortalAnswer, status_code: int = 200) -> DeliveryError | None:
    """``None`` for an answer that is not an error for ``service`` (success, absent, held), else the error
    class of the table above, with the portal's message."""
    found = meaning(service, answer.error_code)
    if isinstance(found, str):
        return None
    message = (answer.message or "").strip()[:500]
    reason = f"portal {service}: error_code {answer.error_code}" + (f" — {message}" if message else "")
    if found is None:
        reason += " (unknown code)"
    error_class = found or Permanent
    return error_class(reason, status_code=status_code, excerpt=excerpt(answer.model_dump_json(exclude_none=True)))


def may_have_landed(error: DeliveryError) -> bool:
    """Whether the failed call may have been applied by the portal although no answer says so: the request went
    out and the answer was lost (a read or write timeout, the connection dropped mid-call, a gateway's 502/504).
    A refusal, a connection that never opened or the attempt's clock running out before the call cannot have."""
    cause = error.__cause__
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol):
        return False
    if isinstance(cause, httpx.TransportError):
        return True
    return error.status_code in (502, 504)


def _endpoint(base: str, path: str) -> str:
    """OpenCPS's ``adapter_url + endpoint``; an endpoint given as a full URL stands alone."""
    if path.startswith(("http://", "https://")):
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


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
        self.auth_url = _endpoint(base_url, auth_path)
        self.integration_url = _endpoint(base_url, integration_path)
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
            error.args = (error.reason,)
        raise error

    def _session(self) -> str:
        return self._tokens.get(self._name) or self._tokens.renew(self._name, None, self.login)

    # ------------------------------------------------------------------ calls

    def call(self, unit_code: str, service: str, **params: Any) -> PortalAnswer:
        """One integration call ``{session, madonvi, service, **params}``, logging in again once if the session
        has expired. Returns the answer unless the table makes it an error for ``service``, raised."""
        answer, status = call_renewing(
            lambda session: self._post(self.integration_url, self._body(session, unit_code, service, params),
                                       service),
            self._session(),
            renew=lambda stale: self._tokens.renew(self._name, stale, self.login),
            refused=lambda reply: reply[0].error_code == SESSION_INVALID,
            log_event="portal.session_expired", service=service,
        )
        error = classify_answer(service, answer, status)
        if error is not None:
            raise error
        return answer

    def lookup(self, unit_code: str, dossier_code: str) -> dict[str, Any] | None:
        """``TraCuuHoSo``: the portal's row for the dossier when it holds it, else ``None`` (P5: only whether
        ``result`` is empty is the contract; the row's fields are not relied on)."""
        answer = self.call(unit_code, LOOKUP, mahoso=dossier_code)
        if meaning(LOOKUP, answer.error_code) == ABSENT:
            return None
        rows = answer.rows()
        return rows[0] if rows else None

    def procedure(self, unit_code: str, national_code: str) -> ProcedureRow | None:
        """``LayThuTuc`` (P6): the national catalogue's first row for the procedure, or ``None``."""
        rows = self.call(unit_code, PROCEDURE, maTTHC=national_code).rows()
        try:
            return ProcedureRow.model_validate(rows[0]) if rows else None
        except ValidationError as exc:
            raise Retryable(f"portal {PROCEDURE}: the row is not the catalogue's ({type(exc).__name__})") from exc

    def sync(self, unit_code: str, record: dict[str, Any], *, updating: bool) -> PortalAnswer:
        """``DongBoHoSoMC`` (P7): create (``isUpdating`` "False") or replace ("True") one dossier record."""
        return self.call(unit_code, SYNC, isUpdating="True" if updating else "False", data=[record])

    def progress(self, unit_code: str, entry: dict[str, Any]) -> Literal["taken", "held"]:
        """``CapNhatTienDoHoSoMC`` (P18): append one progress entry; ``"held"`` when the portal answers that it
        already holds it (an earlier call landed without its answer)."""
        answer = self.call(unit_code, PROGRESS, data=[entry])
        return "held" if meaning(PROGRESS, answer.error_code) == HELD else "taken"

    def online(self, unit_code: str, after: int, limit: int, service: str = ONLINE
               ) -> tuple[list[dict[str, Any]], bool]:
        """Online dossiers of ``unit_code`` after cursor ``after``, and whether more follow (not in OpenCPS: the
        simulator's ``LayHoSoTrucTuyen``, ``service`` being the province's name for it)."""
        answer = self.call(unit_code, service, TuThuTu=after, SoLuong=limit)
        more = bool((answer.model_extra or {}).get("ConTiep", False))
        return answer.rows(), more

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport

    @staticmethod
    def _body(session: str, unit_code: str, service: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"session": session, "madonvi": unit_code, "service": service, **params}

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
