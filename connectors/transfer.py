"""The LGSP's inter-level exchange: send a dossier, look a transfer up, read the units' answers, return a result.

SOAP 1.1 as :mod:`schemas.transfer` documents it, through :class:`connectors.soap.SoapService` (zeep, the WSDL
loaded once, a WS-Security UsernameToken). Documents go beside the envelope by HTTP: each is streamed from the
origin one-stop software's URL straight to the exchange, a MiB at a time, hashed on the way, never held whole
(:meth:`ExchangeConnector.upload`).

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
document 401                Permanent     the account is refused
document 5xx, 429, timeout  Retryable     (the base table)
==========================  ============  ======================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from connectors.base import DeliveryError, Permanent, Retryable, classify_http_status, excerpt, map_transport_errors
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


class ExchangeConnector:
    """Calls to the exchange with one integration account; safe to share between threads."""

    def __init__(self, *, base_url: str, username: str, password: SecretStr, client: httpx.Client,
                 connect_timeout: float, read_timeout: float) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LGSP exchange URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(username, password.get_secret_value())
        self._client = client
        self._soap = SoapService(name="LGSP exchange", wsdl_url=f"{self.base_url}{tx.ENDPOINT_PATH}?wsdl",
                                 table=TABLE, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                 username=username, password=password, result_codes=tx.RESULT_CODES)

    # ---- SOAP

    def send(self, request: tx.TransferRequest) -> bool:
        """Send one hop; False when the exchange had it already (an earlier attempt landed)."""
        fields = request.model_dump(exclude_none=True, exclude={"documents"})
        documents = {"Document": [d.model_dump() for d in request.documents]}
        result = self._soap.call(tx.SEND_DOSSIER, **fields, documents=documents)
        return self._soap.expect(tx.SEND_DOSSIER, result, tx.SUCCESS, tx.EXISTS) == tx.SUCCESS

    def get(self, transfer_id: str) -> tx.TransferState | None:
        result = self._soap.call(tx.GET_TRANSFER, transferId=transfer_id)
        if self._soap.expect(tx.GET_TRANSFER, result, tx.SUCCESS, tx.NOT_FOUND) == tx.NOT_FOUND:
            return None
        return self._soap.model(tx.TransferState, tx.GET_TRANSFER, result)

    def updates(self, after: int, most: int) -> tx.UpdatePage:
        result = self._soap.call(tx.LIST_UPDATES, afterId=after, maxItems=most)
        self._soap.expect(tx.LIST_UPDATES, result, tx.SUCCESS)
        rows = [{**row, "documents": (row.get("documents") or {}).get("Document") or []}
                for row in (result.get("updates") or {}).get("Update") or []]
        return self._soap.model(tx.UpdatePage, tx.LIST_UPDATES, {**result, "updates": rows})

    def return_result(self, transfer_id: str, outcome: str, documents: list[tx.DocumentRef]) -> bool:
        """Carry a result back down one hop; False when it was there already."""
        result = self._soap.call(tx.RETURN_RESULT, transferId=transfer_id, outcome=outcome,
                                 documents={"Document": [d.model_dump() for d in documents]})
        code = self._soap.expect(tx.RETURN_RESULT, result, tx.SUCCESS, tx.EXISTS, tx.NOT_FOUND)
        if code == tx.NOT_FOUND:
            raise Permanent(f"LGSP exchange ReturnResult: no transfer {transfer_id} to return the result down")
        return code == tx.SUCCESS

    # ---- documents

    def _document_url(self, transfer_id: str, index: int) -> str:
        return f"{self.base_url}{tx.DOCUMENTS_PATH}/{quote(transfer_id, safe='')}/{index}"

    def has_document(self, transfer_id: str, index: int, sha256: str) -> bool:
        with map_transport_errors():
            answer = self._client.head(self._document_url(transfer_id, index), auth=self._auth)
        if answer.status_code == 404:
            return False
        self._raise_for(answer, f"document {index}")
        return answer.headers.get(tx.SHA256_HEADER, "").lower() == sha256

    def upload(self, transfer_id: str, index: int, document: tx.DocumentRef, source_url: str) -> int:
        """Stream one document from ``source_url`` to the exchange, checking its SHA-256; the bytes sent."""
        digest = hashlib.sha256()
        sent = 0
        what = f"document {index} ({document.name})"

        with map_transport_errors(), self._client.stream("GET", source_url) as source:
            if source.status_code != 200:
                source.read()
                error = classify_http_status(source) or Permanent(f"HTTP {source.status_code}")
                raise error.within(f"{what}: the origin's file could not be read")

            def chunks() -> Iterator[bytes]:
                nonlocal sent
                for chunk in source.iter_bytes(CHUNK):
                    digest.update(chunk)
                    sent += len(chunk)
                    yield chunk

            answer = self._client.put(self._document_url(transfer_id, index), content=chunks(), auth=self._auth,
                                      headers={tx.SHA256_HEADER: document.sha256,
                                               "Content-Type": "application/octet-stream"})
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

