"""The postal service (VNPost public-administration post): token, orders, cancellation, tracking.

JSON over HTTP(S) as :mod:`schemas.postal` documents it. The token comes from the consumer key
and secret, is shared by every worker through :class:`~connectors.credentials.TokenCache` and,
when the post says it is no longer valid, renewed once under a lock before the call is repeated.
This module knows the transport and the answer codes, not what a dossier is (that is
``adapters/postal.py``).

Answer table (``ANSWERS``; tested row by row in ``tests/test_postal_connector.py``):

=====================  ============  ========================================================
answer                 class         why
=====================  ============  ========================================================
"00"                   success
"01" token invalid     AuthExpired   renew the token once and repeat; twice in a row: retry later
"02" keys refused      Permanent     the consumer key or secret is wrong: an operator fixes it
"10" invalid data      Permanent     the post's message names the fields
"11" address refused   Permanent     a province or district code the post does not serve
"20" order exists      Retryable     created meanwhile (a timed-out attempt): ``create`` returns it
"21" order not found   Permanent     ``lookup`` answers ``None`` for it
"22" not cancellable   Permanent     collected already: the desk must call the post office
"30" customer refused  Permanent     this customer code may not use the API
"96" busy, "99" error  Retryable     the post's own weather
other codes            Permanent     unknown answers are shown, never retried forever
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
    request_envelope,
)
from connectors.credentials import TokenCache, call_renewing
from schemas.postal import (
    ADDRESS_NOT_SERVED,
    BUSY,
    CANCEL_PATH,
    CUSTOMER_REFUSED,
    INVALID_DATA,
    KEYS_REFUSED,
    NOT_CANCELLABLE,
    ORDER_EXISTS,
    ORDER_NOT_FOUND,
    ORDERS_PATH,
    SUCCESS,
    SYSTEM_ERROR,
    TOKEN_INVALID,
    TOKEN_PATH,
    TRACKING_PATH,
    CancelRequest,
    OrderView,
    PostalAnswer,
    PostalOrder,
    TokenAnswer,
    TrackingPage,
)

ANSWERS: dict[str, type[DeliveryError] | None] = {
    SUCCESS: None,
    TOKEN_INVALID: AuthExpired,
    KEYS_REFUSED: Permanent,
    INVALID_DATA: Permanent,
    ADDRESS_NOT_SERVED: Permanent,
    ORDER_EXISTS: Retryable,
    ORDER_NOT_FOUND: Permanent,
    NOT_CANCELLABLE: Permanent,
    CUSTOMER_REFUSED: Permanent,
    BUSY: Retryable,
    SYSTEM_ERROR: Retryable,
}


def classify_answer(what: str, answer: PostalAnswer, status_code: int) -> DeliveryError | None:
    """``None`` for success, else the error class of the table above, with the post's message."""
    if answer.ok:
        return None
    error_class = ANSWERS.get(answer.code, Permanent)
    assert error_class is not None
    message = answer.message.strip()[:500]
    reason = f"post {what}: code {answer.code}" + (f" — {message}" if message else "")
    if answer.code not in ANSWERS:
        reason += " (unknown code)"
    elif answer.code == KEYS_REFUSED:
        reason += " (check the postal destination's consumer key and secret)"
    return error_class(reason, status_code=status_code, excerpt=excerpt(answer.model_dump_json(exclude={"data"})))


class PostalConnector:
    """Calls to one postal API with one customer account."""

    def __init__(
        self,
        *,
        base_url: str,
        customer_code: str,
        consumer_key: str,
        consumer_secret: SecretStr,
        client: httpx.Client,
        tokens: TokenCache,
        credential_name: str,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"postal API URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.customer_code = customer_code
        self._key = consumer_key
        self._secret = consumer_secret
        self._client = client
        self._tokens = tokens
        self._name = credential_name

    # ------------------------------------------------------------------ token

    def obtain_token(self) -> tuple[str, float]:
        """A new token from the consumer key and secret, and its lifetime."""
        body = {"consumerKey": self._key, "consumerSecret": self._secret.get_secret_value()}
        payload, status = self._send("POST", TOKEN_PATH, "token", json=body)
        try:
            token = TokenAnswer.model_validate(payload)
        except ValidationError:
            answer = self._answer(payload, status, "token")
            error = classify_answer("token", answer, status)
            if error is None or isinstance(error, AuthExpired):  # a token call cannot need a token
                raise Retryable(f"post token: no token in the answer (code {answer.code})",
                                status_code=status) from None
            raise error from None
        return token.access_token, float(token.expires_in)

    def _token(self) -> str:
        return self._tokens.get(self._name) or self._tokens.renew(self._name, None, self.obtain_token)

    # ------------------------------------------------------------------ calls

    def call(self, method: str, path: str, what: str, *, accept: frozenset[str] = frozenset(),
             json: Any = None, params: dict[str, Any] | None = None) -> PostalAnswer:
        """One API call, renewing the token once if the post refuses it.

        An answer whose code is in ``accept`` is returned instead of raised.
        """
        answer, status = call_renewing(
            lambda token: self._call(method, path, what, token, json, params),
            self._token(),
            renew=lambda stale: self._tokens.renew(self._name, stale, self.obtain_token),
            refused=lambda reply: reply[0].code == TOKEN_INVALID,
            log_event="postal.token_expired", call=what,
        )
        error = None if answer.code in accept else classify_answer(what, answer, status)
        if error is not None:
            raise error
        return answer

    def lookup(self, order_number: str) -> OrderView | None:
        """The order as the post holds it, or ``None`` when it has none by that number."""
        answer = self.call("GET", f"{ORDERS_PATH}/{order_number}", "lookup", accept=frozenset({ORDER_NOT_FOUND}),
                           params={"customerCode": self.customer_code})
        return self._view(answer, "lookup") if answer.ok else None

    def create(self, order: PostalOrder) -> tuple[OrderView, bool]:
        """Create the order; ``(view, False)`` when the post already had it (an earlier attempt landed)."""
        answer = self.call("POST", ORDERS_PATH, "create", accept=frozenset({ORDER_EXISTS}),
                           json=order.model_dump(mode="json", exclude_none=True))
        if answer.code == ORDER_EXISTS:
            found = self.lookup(order.orderNumber)
            if found is None:
                raise Retryable(f"post create: {order.orderNumber} exists yet cannot be looked up")
            return found, False
        return self._view(answer, "create"), True

    def cancel(self, order_number: str, reason: str) -> OrderView:
        request = CancelRequest(customerCode=self.customer_code, orderNumber=order_number, reason=reason[:500])
        return self._view(self.call("POST", CANCEL_PATH, "cancel", json=request.model_dump(mode="json")), "cancel")

    def tracking(self, last_id: int, limit: int) -> TrackingPage:
        """Status records after ``last_id``, in order."""
        answer = self.call("GET", TRACKING_PATH, "tracking",
                           params={"customerCode": self.customer_code, "lastId": last_id, "limit": limit})
        try:
            return TrackingPage.model_validate(answer.data or {})
        except ValidationError as exc:
            raise Retryable("post tracking: the page is not the documented shape",
                            excerpt=excerpt(str(answer.data))) from exc

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport

    @staticmethod
    def _view(answer: PostalAnswer, what: str) -> OrderView:
        try:
            return OrderView.model_validate(answer.data)
        except ValidationError as exc:
            raise Retryable(f"post {what}: the order in the answer is not the documented shape") from exc

    def _call(self, method: str, path: str, what: str, token: str, json: Any,
              params: dict[str, Any] | None) -> tuple[PostalAnswer, int]:
        payload, status = self._send(method, path, what, json=json, params=params,
                                     headers={"Authorization": f"Bearer {token}"})
        return self._answer(payload, status, what), status

    def _send(self, method: str, path: str, what: str, *, json: Any = None, params: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> tuple[Any, int]:
        return request_envelope(self._client, method, self.base_url + path, f"post {what}", json=json,
                                params=params, headers=headers)

    @staticmethod
    def _answer(payload: Any, status: int, what: str) -> PostalAnswer:
        try:
            return PostalAnswer.model_validate(payload)
        except ValidationError as exc:
            raise Retryable(f"post {what}: the answer is not the post's envelope", status_code=status,
                            excerpt=excerpt(str(payload))) from exc
