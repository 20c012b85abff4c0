"""The national payment platform (KeyPay for DVCQG): create a transaction, ask for its detail.

JSON over HTTP(S) as :mod:`schemas.payment` documents it (docs/contracts.md M1–M11). The create and the detail are
two endpoints, each a full URL the destination configures, and each request has its own checksum with the
partner's hash_key_1 (the destination's ``request_key``); hash_key_2 only verifies what the platform sends,
which is the API's business. The day's settlement list is no contract of the platform's: it is read by
``connectors/settlement.py``. This module knows the transport and the answer codes, not what a fee is.

Answer table (``ANSWERS``; tested row by row in ``tests/test_payment_connector.py``; only ``"0"`` is
OpenCPS's, the other codes are the simulator's, assumed):

====================  ============  ===========================================================
``error``             class         why
====================  ============  ===========================================================
"0"                   success
"1" checksum          Permanent     hash_key_1 is wrong: an operator fixes it
"2" client refused    Permanent     this client_id may not use the platform
"3" invalid data      Permanent     the platform's message names the fields
"4" not found         Permanent     ``detail`` answers ``None`` for it
"5" amount conflict   Permanent     the transaction id is taken with another amount
"96" busy, "99"       Retryable     the platform's own weather
other codes           Permanent     unknown answers are shown, never retried forever
HTTP other than 2xx   (base table)  408/425/429/5xx, timeouts and resets retry; other 4xx do not (M10: the
                                    platform answers HTTP 200, its verdict in ``error``)
====================  ============  ===========================================================
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import DeliveryError, Permanent, Retryable, excerpt, post_json
from schemas.payment import (
    AMOUNT_CONFLICT,
    BUSY,
    CHECKSUM_INVALID,
    CLIENT_REFUSED,
    COMMAND,
    CURRENCY,
    INVALID_DATA,
    NOT_FOUND,
    SUCCESS,
    SYSTEM_ERROR,
    VERSION,
    BillInfo,
    CreateAnswer,
    CreateTransaction,
    DetailAnswer,
    DetailRequest,
    detail_checksum,
    transaction_checksum,
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
    CHECKSUM_INVALID: " (check the payment destination's request key, hash_key_1)",
    CLIENT_REFUSED: " (check the payment destination's client_id)",
}
A = TypeVar("A", CreateAnswer, DetailAnswer)


def classify_answer(what: str, error: str, message: str, status_code: int,
                    body: str | None = None) -> DeliveryError | None:
    """``None`` for success, else the error class of the table above, with the platform's message."""
    if error == SUCCESS:
        return None
    error_class = ANSWERS.get(error, Permanent)
    assert error_class is not None
    message = message.strip()[:500]
    reason = f"payment platform {what}: error {error}" + (f" — {message}" if message else "")
    reason += HINTS.get(error, "" if error in ANSWERS else " (unknown code)")
    return error_class(reason, status_code=status_code, excerpt=excerpt(body))


class PlatformConnector:
    """Calls to the payment platform with one partner account (its ``client_id``, hash_key_1 and the values of
    its registration: ``command``, ``version``, ``locale``, ``country_code``, ``environment``)."""

    def __init__(self, *, create_url: str, detail_url: str, client_id: str, request_key: SecretStr,
                 client: httpx.Client, command: str = COMMAND, version: str = VERSION, locale: str = "vn",
                 country_code: str = "vi", environment: str = "1") -> None:
        for url in (create_url, detail_url):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"payment platform URL must be http(s): {url!r}")
        self.create_url, self.detail_url = create_url, detail_url
        self.client_id = client_id
        self.command, self.version = command, version
        self.locale, self.country_code, self.environment = locale, country_code, environment
        self._key = request_key
        self._client = client

    def transaction(self, transaction_id: str, amount: int, description: str, bill: BillInfo, return_url: str,
                    addition_fee: int = 0) -> CreateTransaction:
        """The signed create-transaction request (M1–M5): exactly its fourteen fields."""
        check_sum = transaction_checksum(self._key.get_secret_value(), addition_fee, self.client_id, self.command,
                                         amount, transaction_id, self.version)
        return CreateTransaction.model_validate({
            "client_id": self.client_id, "transaction_id": transaction_id, "trans_amount": str(amount),
            "command": self.command, "version": self.version, "description": description, "locale": self.locale,
            "country_code": self.country_code, "currency_code": CURRENCY, "environment": self.environment,
            "bill_info": bill, "return_url": return_url, "addition_fee": str(addition_fee), "check_sum": check_sum})

    def create(self, transaction_id: str, amount: int, description: str, bill: BillInfo, return_url: str,
               addition_fee: int = 0) -> CreateAnswer:
        """Create a transaction (again: the same id and amount answer the same ``payment_url``)."""
        request = self.transaction(transaction_id, amount, description, bill, return_url, addition_fee)
        answer = self._post(self.create_url, "create", request.model_dump(mode="json", exclude_none=True),
                            CreateAnswer)
        if not answer.payment_url:
            raise Retryable("payment platform create: success without a payment_url")
        return answer

    def detail(self, transaction_id: str) -> DetailAnswer | None:
        """The transaction as the platform holds it (``status`` 0 is paid), or ``None`` when it holds none."""
        request = DetailRequest(client_id=self.client_id, transaction_id=transaction_id, command=self.command,
                                check_sum=detail_checksum(self._key.get_secret_value(), self.client_id,
                                                          self.command, transaction_id))
        answer = self._post(self.detail_url, "detail", request.model_dump(mode="json"), DetailAnswer,
                            accept=frozenset({NOT_FOUND}))
        return answer if answer.ok else None

    def close(self) -> None:
        self._client.close()

    def _post(self, url: str, what: str, body: dict[str, Any], model: type[A],
              accept: frozenset[str] = frozenset()) -> A:
        payload, response = post_json(self._client, url, f"payment platform {what}", json=body)
        status = response.status_code
        try:
            answer = model.model_validate(payload)
        except ValidationError as exc:
            raise Retryable(f"payment platform {what}: the answer is not the platform's JSON", status_code=status,
                            excerpt=excerpt(str(payload))) from exc
        error = None if answer.error in accept else classify_answer(what, answer.error, answer.msg, status,
                                                                    answer.model_dump_json())
        if error is not None:
            raise error
        return answer
