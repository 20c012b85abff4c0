"""The national payment platform (KeyPay-style): register a transaction, query it, list a day's settlements.

JSON over HTTP(S) as :mod:`schemas.payment` documents it. Every request is signed with the partner's
request key (``check_sum``); the callback key only verifies what the platform sends (that is the API's
business). This module knows the transport and the answer codes, not what a fee is.

Answer table (``ANSWERS``; tested row by row in ``tests/test_payment_connector.py``):

====================  ============  ===========================================================
answer                class         why
====================  ============  ===========================================================
"00"                  success
"01" checksum         Permanent     the request key is wrong: an operator fixes it
"02" client refused   Permanent     this client_id may not use the platform
"03" invalid data     Permanent     the platform's message names the fields
"04" not found        Permanent     ``query`` answers ``None`` for it
"05" amount conflict  Permanent     the transaction id is taken with another amount
"96" busy, "99"       Retryable     the platform's own weather
other codes           Permanent     unknown answers are shown, never retried forever
other HTTP, transport (base table)  408/425/429/5xx, timeouts and resets retry; other 4xx do not
====================  ============  ===========================================================
"""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import DeliveryError, Permanent, Retryable, excerpt, request_envelope
from schemas.payment import (
    AMOUNT_CONFLICT,
    BUSY,
    CHECKSUM_INVALID,
    CLIENT_REFUSED,
    INVALID_DATA,
    NOT_FOUND,
    SETTLEMENTS_PATH,
    SUCCESS,
    SYSTEM_ERROR,
    TRANSACTIONS_PATH,
    BillInfo,
    PlatformAnswer,
    PlatformTransaction,
    SettledItem,
    request_checksum,
    settlement_checksum,
)

ANSWERS: dict[str, type[DeliveryError] | None] = {
    SUCCESS: None,
    CHECKSUM_INVALID: Permanent,
    CLIENT_REFUSED: Permanent,
    INVALID_DATA: Permanent,
    NOT_FOUND: Permanent,
    AMOUNT_CONFLICT: Permanent,
    BUSY: Retryable,
    SYSTEM_ERROR: Retryable,
}
HINTS = {
    CHECKSUM_INVALID: " (check the payment destination's request key)",
    CLIENT_REFUSED: " (check the payment destination's client_id)",
}


def classify_answer(what: str, answer: PlatformAnswer, status_code: int) -> DeliveryError | None:
    """``None`` for success, else the error class of the table above, with the platform's message."""
    if answer.ok:
        return None
    error_class = ANSWERS.get(answer.code, Permanent)
    assert error_class is not None
    message = answer.message.strip()[:500]
    reason = f"payment platform {what}: code {answer.code}" + (f" — {message}" if message else "")
    reason += HINTS.get(answer.code, "" if answer.code in ANSWERS else " (unknown code)")
    return error_class(reason, status_code=status_code, excerpt=excerpt(answer.model_dump_json()))


class PlatformConnector:
    """Calls to the payment platform with one partner account."""

    def __init__(self, *, base_url: str, client_id: str, request_key: SecretStr, client: httpx.Client) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"payment platform URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._key = request_key
        self._client = client

    def register(self, transaction_id: str, amount: int, return_url: str, bill: BillInfo) -> PlatformAnswer:
        """Register a transaction (again: the same id and amount answer the same ``payment_url``)."""
        request = PlatformTransaction(client_id=self.client_id, transaction_id=transaction_id, trans_amount=amount,
                                      return_url=return_url, bill_info=bill)
        answer = self._post(TRANSACTIONS_PATH, "register", self._signed(request))
        if not answer.payment_url:
            raise Retryable("payment platform register: success without a payment_url")
        return answer

    def query(self, transaction_id: str) -> PlatformAnswer | None:
        """The transaction as the platform holds it (``status`` 0 is paid), or ``None``."""
        request = PlatformTransaction(client_id=self.client_id, transaction_id=transaction_id, command="query",
                                      trans_amount=0)
        answer = self._post(TRANSACTIONS_PATH, "query", self._signed(request), accept=frozenset({NOT_FOUND}))
        return answer if answer.ok else None

    def settled(self, day: date) -> list[SettledItem]:
        """The payments the platform settled on ``day`` (Vietnam time)."""
        text = day.strftime("%Y%m%d")
        body = {"client_id": self.client_id, "date": text,
                "check_sum": settlement_checksum(self._key.get_secret_value(), self.client_id, text)}
        answer = self._post(SETTLEMENTS_PATH, "settlements", body)
        try:
            return [SettledItem.model_validate(row) for row in (answer.model_extra or {}).get("data") or []]
        except ValidationError as exc:
            raise Retryable("payment platform settlements: a row is not the documented shape") from exc

    def close(self) -> None:
        self._client.close()

    def _signed(self, request: PlatformTransaction) -> dict[str, Any]:
        request.check_sum = request_checksum(self._key.get_secret_value(), request)
        return request.model_dump(mode="json", exclude_none=True)

    def _post(self, path: str, what: str, body: dict[str, Any], accept: frozenset[str] = frozenset()) -> PlatformAnswer:
        payload, status = request_envelope(self._client, "POST", self.base_url + path, f"payment platform {what}",
                                           json=body)
        try:
            answer = PlatformAnswer.model_validate(payload)
        except ValidationError as exc:
            raise Retryable(f"payment platform {what}: the answer is not the platform's JSON", status_code=status,
                            excerpt=excerpt(str(payload))) from exc
        error = None if answer.code in accept else classify_answer(what, answer, status)
        if error is not None:
            raise error
        return answer
