"""The LGSP's inter-level exchange: send a dossier, look a transfer up, read the units' answers, return a result.

SOAP 1.1 as :mod:`schemas.transfer` documents it, through :class:`connectors.soap.SoapService` (zeep, the WSDL
loaded once, a WS-Security UsernameToken). Documents go beside the envelope by HTTP: each is streamed from the
origin one-stop software's URL straight to the exchange, a MiB at a time, hashed on the way, never held whole
(:meth:`ExchangeConnector.upload`).

In front of the exchange, the LGSP's API gateway (:class:`GatewayToken`, when the destination has a consumer
key): an OAuth2 client-credentials token obtained as OpenCPS's ``LGSPRestClient`` does (a form with
``grant_type``, ``client_id`` and ``client_secret``), shared by every worker through
:class:`~connectors.credentials.TokenCache`, sent as ``Authorization: Bearer`` on every SOAP call (the WSDL's
too) and every document call; a call the gateway answers 401 renews it once and is repeated
(:func:`~connectors.credentials.call_renewing`).

Error table (faults: :data:`FAULTS`; the rest as :mod:`connectors.soap` says):

==========================  ============  ======================================================
answer                      class         why
==========================  ============  ======================================================
resultCode "00", "01"       success       ``send``: sent now, or by an earlier attempt that landed
resultCode "04"             success       ``get`` answers ``None``
fault AUTH_FAILED           Permanent     the integration account is refused: an operator fixes it
fault INVALID_REQUEST       Permanent     the exchange's message names the element
fault UNIT_UNKNOWN          Permanent     a unit the exchange does not serve: the directory is wrong
fault TRANSFER_CONFLICT     Permanent     the hop was sent before with other content
fault DOCUMENT_INVALID      Permanent     a document missing or not matching its SHA-256
fault UNIT_UNAVAILABLE      Retryable     the target's one-stop system is down: try later
fault SYSTEM_BUSY           Retryable
document 422                Permanent     the exchange hashed other bytes than the event's SHA-256
document hash differs       Permanent     the origin served other bytes than its own event says
document 5xx, 429, timeout  Retryable     (the base table)
token 200                   (cached)      for 90 % of its ``expires_in`` (an hour when not given)
token 400, 401              Permanent     invalid_client, unsupported_grant_type, invalid_request:
                                          check the consumer key and secret (never shown)
token 5xx, 429, timeout     Retryable     (the base table); a 200 without a token too
call 401, with a token      AuthExpired   renewed once and the call repeated; refused again: later
call 401, without a token   Permanent     the gateway wants one (or, for a document, the account
                                          is refused): set consumer_key and its secret
==========================  ============  ======================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import (
    AuthExpired,
    DeliveryError,
    Permanent,
    Retryable,
    build_http_client,
    call_timeout,
    classify_http_status,
    excerpt,
    map_transport_errors,
)
from connectors.credentials import TokenCache, basic, call_renewing
from connectors.soap import FaultTable, SoapService
from schemas import transfer as tx

FAULTS: dict[str, type[DeliveryError]] = {
    tx.AUTH_FAILED: Permanent,
    tx.INVALID_REQUEST: Permanent,
    tx.UNIT_UNKNOWN: Permanent,
    tx.TRANSFER_CONFLICT: Permanent,
    tx.DOCUMENT_INVALID: Permanent,
    tx.UNIT_UNAVAILABLE: Retryable,
    tx.SYSTEM_BUSY: Retryable,
}
HINTS = {
    tx.AUTH_FAILED: " (check the transfer destination's username and password)",
    tx.UNIT_UNKNOWN: " (check the unit directory against the exchange's)",
}
TABLE = FaultTable(FAULTS, HINTS)
CHUNK = 1 << 20

TokenAuth = Literal["client_secret_post", "client_secret_basic"]
KEYS_HINT = "check the transfer destination's consumer_key and consumer_secret"
TOKEN_HINTS = {
    "unsupported_grant_type": "its application at the LGSP must allow the client-credentials grant; " + KEYS_HINT,
    "unauthorized_client": "its application at the LGSP must allow the client-credentials grant; " + KEYS_HINT,
}
SET_KEYS = "set the transfer destination's consumer_key and consumer_secret"
NO_TOKEN_HINT = f" (the LGSP's gateway refuses calls without its OAuth2 token: {SET_KEYS})"
NO_TOKEN_DOCUMENT_HINT = (" (the exchange refused the username and password, or the LGSP's gateway wants its OAuth2 "
                          f"token: {SET_KEYS})")
_T = TypeVar("_T")


class GatewayToken:
    """The LGSP gateway's OAuth2 client-credentials token for one consumer key, shared by every worker.

    Obtained as ``LGSPRestClient.getToken`` does: ``POST`` to ``token_url`` a form ``grant_type=client_credentials``
    with the key and secret as ``client_id`` and ``client_secret`` (``client_secret_post``; ``client_secret_basic``
    sends them as HTTP Basic instead, which RFC 6749 has every server take). Cached under ``credential_name`` as
    the ``Authorization`` value calls carry (``Bearer`` whatever ``token_type`` says, as OpenCPS sends it).
    """

    def __init__(self, *, token_url: str, consumer_key: str, consumer_secret: SecretStr, client: httpx.Client,
                 tokens: TokenCache, credential_name: str, auth: TokenAuth = "client_secret_post") -> None:
        if not token_url.startswith(("http://", "https://")):
            raise ValueError(f"LGSP token URL must be http(s): {token_url!r}")
        self.token_url = token_url
        self._key, self._secret, self._auth = consumer_key, consumer_secret, auth
        self._client = client
        self._tokens = tokens
        self._name = credential_name

    def obtain(self) -> tuple[str, float]:
        """A new token, as the ``Authorization`` value, and how long the gateway says it lives."""
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if self._auth == "client_secret_basic":
            headers["Authorization"] = basic(self._key, self._secret)
        else:
            form |= {"client_id": self._key, "client_secret": self._secret.get_secret_value()}
        try:
            with map_transport_errors():
                response = self._client.post(self.token_url, data=form, headers=headers,
                                             timeout=call_timeout(self._client.timeout))
        except DeliveryError as exc:
            raise exc.within("LGSP gateway token") from exc.__cause__
        body = self._scrubbed(response.text)
        if response.status_code == 200:
            try:
                token = tx.GatewayToken.model_validate_json(response.content)
            except ValidationError:
                raise Retryable("LGSP gateway token: no token in the answer", status_code=200,
                                excerpt=excerpt(body)) from None
            return f"Bearer {token.access_token}", float(token.expires_in)
        if response.status_code in (400, 401):
            try:
                refusal = tx.TokenRefusal.model_validate_json(response.content)
            except ValidationError:
                refusal = tx.TokenRefusal(error=f"HTTP {response.status_code}")
            said = refusal.error + (f": {refusal.error_description}" if refusal.error_description else "")
            raise Permanent(f"LGSP gateway token: refused ({said[:300]}); "
                            + TOKEN_HINTS.get(refusal.error, KEYS_HINT),
                            status_code=response.status_code, excerpt=excerpt(body))
        error = classify_http_status(response) or Retryable(f"HTTP {response.status_code} without a token",
                                                            status_code=response.status_code)
        error.excerpt = excerpt(body)
        raise error.within("LGSP gateway token")

    def _scrubbed(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        return text.replace(secret, "***") if secret else text

    def current(self) -> str:
        """The live token (this process's copy, the workers' in Redis, or a new one)."""
        return self._tokens.get(self._name) or self._tokens.renew(self._name, None, self.obtain)

    def renew(self, stale: str) -> str:
        """A token other than ``stale``: another worker's renewal, or a new one."""
        return self._tokens.renew(self._name, stale, self.obtain)

    def close(self) -> None:
        self._client.close()


class _Refused:
    """A call the gateway answered 401."""

    def __init__(self, error: DeliveryError) -> None:
        self.error = error


class ExchangeConnector:
    """Calls to the exchange with one integration account (through the LGSP's gateway when ``gateway`` is given);
    safe to share between threads."""

    def __init__(self, *, base_url: str, username: str, password: SecretStr, client: httpx.Client,
                 connect_timeout: float, read_timeout: float, gateway: GatewayToken | None = None,
                 origin: httpx.Client | None = None) -> None:
        """``client`` calls the exchange; ``origin`` (by default a client of its own) reads the documents from the
        one-stop software. Two pools, not one: an upload holds its source's
        connection while its PUT waits for one, and with as many uploads at once as one pool has connections,
        every PUT would wait for a connection that no upload gives back (httpx's PoolTimeout, for ever)."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LGSP exchange URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._basic = basic(username, password)
        self._client = client
        self._origin = origin or build_http_client(connect_timeout, read_timeout)
        self._gateway = gateway
        self._soap = SoapService(name="LGSP exchange", wsdl_url=f"{self.base_url}{tx.ENDPOINT_PATH}?wsdl",
                                 table=TABLE, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                 username=username, password=password, result_codes=tx.RESULT_CODES)

    # ---- the gateway

    def _authorised(self, what: str, call: Callable[[dict[str, str]], _T], *, document: bool) -> _T:
        """``call(headers)`` with the gateway's ``Authorization`` (without a consumer key: none for SOAP, whose
        account is in the envelope, the account's Basic for a ``document``); a call the gateway answers 401
        (``call`` raises with ``status_code`` 401) renews the token once and is repeated."""
        gateway = self._gateway
        if gateway is None:
            try:
                return call({"Authorization": self._basic} if document else {})
            except DeliveryError as exc:
                if exc.status_code != 401:
                    raise
                raise Permanent(exc.reason + (NO_TOKEN_DOCUMENT_HINT if document else NO_TOKEN_HINT),
                                status_code=401, excerpt=exc.excerpt) from exc

        def attempt(token: str) -> _T | _Refused:
            try:
                return call({"Authorization": token})
            except DeliveryError as exc:
                if exc.status_code != 401:
                    raise
                return _Refused(exc)

        answer = call_renewing(attempt, gateway.current(), renew=gateway.renew,
                               refused=lambda reply: isinstance(reply, _Refused),
                               log_event="transfer.token_refused", call=what)
        if isinstance(answer, _Refused):
            raise AuthExpired(f"{answer.error.reason}: the LGSP gateway refused its token right after renewing it",
                              status_code=401, excerpt=answer.error.excerpt) from answer.error
        return answer

    def _call(self, operation: str, **fields: Any) -> dict[str, Any]:
        return self._authorised(operation, lambda headers: self._soap.call(operation, headers, **fields),
                                document=False)

    # ---- SOAP

    def send(self, request: tx.TransferRequest) -> bool:
        """Send one hop; False when the exchange had it already (an earlier attempt landed)."""
        fields = request.model_dump(exclude_none=True, exclude={"documents"})
        documents = {"Document": [d.model_dump() for d in request.documents]}
        result = self._call(tx.SEND_DOSSIER, **fields, documents=documents)
        return self._soap.expect(tx.SEND_DOSSIER, result, tx.SUCCESS, tx.EXISTS) == tx.SUCCESS

    def get(self, transfer_id: str) -> tx.TransferState | None:
        result = self._call(tx.GET_TRANSFER, transferId=transfer_id)
        if self._soap.expect(tx.GET_TRANSFER, result, tx.SUCCESS, tx.NOT_FOUND) == tx.NOT_FOUND:
            return None
        return self._soap.model(tx.TransferState, tx.GET_TRANSFER, result)

    def updates(self, after: int, most: int) -> tx.UpdatePage:
        result = self._call(tx.LIST_UPDATES, afterId=after, maxItems=most)
        self._soap.expect(tx.LIST_UPDATES, result, tx.SUCCESS)
        rows = [{**row, "documents": (row.get("documents") or {}).get("Document") or []}
                for row in (result.get("updates") or {}).get("Update") or []]
        return self._soap.model(tx.UpdatePage, tx.LIST_UPDATES, {**result, "updates": rows})

    def return_result(self, transfer_id: str, outcome: str, documents: list[tx.DocumentRef]) -> bool:
        """Carry a result back down one hop; False when it was there already."""
        result = self._call(tx.RETURN_RESULT, transferId=transfer_id, outcome=outcome,
                            documents={"Document": [d.model_dump() for d in documents]})
        code = self._soap.expect(tx.RETURN_RESULT, result, tx.SUCCESS, tx.EXISTS, tx.NOT_FOUND)
        if code == tx.NOT_FOUND:
            raise Permanent(f"LGSP exchange ReturnResult: no transfer {transfer_id} to return the result down")
        return code == tx.SUCCESS

    # ---- documents

    def _document_url(self, transfer_id: str, index: int) -> str:
        return f"{self.base_url}{tx.DOCUMENTS_PATH}/{quote(transfer_id, safe='')}/{index}"

    def has_document(self, transfer_id: str, index: int, sha256: str) -> bool:
        what = f"document {index}"

        def head(headers: dict[str, str]) -> bool:
            with map_transport_errors():
                answer = self._client.head(self._document_url(transfer_id, index), headers=headers)
            if answer.status_code == 404:
                return False
            self._raise_for(answer, what)
            return answer.headers.get(tx.SHA256_HEADER, "").lower() == sha256

        return self._authorised(what, head, document=True)

    def upload(self, transfer_id: str, index: int, document: tx.DocumentRef, source_url: str) -> int:
        """Stream one document from ``source_url`` to the exchange, checking its SHA-256; the bytes sent (read from
        the origin again if the gateway refused the token of the first try)."""
        what = f"document {index} ({document.name})"
        return self._authorised(what, lambda headers: self._stream(transfer_id, index, document, source_url,
                                                                    headers, what), document=True)

    def _stream(self, transfer_id: str, index: int, document: tx.DocumentRef, source_url: str,
                headers: dict[str, str], what: str) -> int:
        digest = hashlib.sha256()
        sent = 0
        with map_transport_errors(), self._origin.stream("GET", source_url) as source:
            if source.status_code != 200:
                source.read()
                error = classify_http_status(source) or Permanent(f"HTTP {source.status_code}")
                error.status_code = None  # the reason says the origin's; a 401 of it is no gateway's refusal
                raise error.within(f"{what}: the origin's file could not be read")

            def chunks() -> Iterator[bytes]:
                nonlocal sent
                for chunk in source.iter_bytes(CHUNK):
                    digest.update(chunk)
                    sent += len(chunk)
                    yield chunk

            answer = self._client.put(self._document_url(transfer_id, index), content=chunks(),
                                      headers={**headers, tx.SHA256_HEADER: document.sha256,
                                               "Content-Type": "application/octet-stream"})
        # refused before the bytes were judged (a gateway's 401, a 503): they may not all have been read
        if not answer.is_success and answer.status_code != 422:
            self._raise_for(answer, what)
        if digest.hexdigest() != document.sha256:
            raise Permanent(f"{what}: checksum mismatch, the origin served {sent} bytes with SHA-256 "
                            f"{digest.hexdigest()[:16]}…, the dossier says {document.sha256[:16]}…; nothing kept")
        self._raise_for(answer, what)
        return sent

    @staticmethod
    def _raise_for(answer: httpx.Response, what: str) -> None:
        if answer.is_success:
            return
        if answer.status_code == 422:
            raise Permanent(f"LGSP exchange {what}: checksum mismatch, the exchange refused it",
                            status_code=422, excerpt=excerpt(answer.text))
        error = classify_http_status(answer) or Permanent(f"HTTP {answer.status_code}")
        raise error.within(f"LGSP exchange {what}")

    def close(self) -> None:
        self._soap.close()
        self._client.close()
        self._origin.close()
        if self._gateway is not None:
            self._gateway.close()

