"""The postal service (VNPost through MITC's NGSP gateway): token, orders, cancellation, tracking.

The contract is :mod:`schemas.postal` (docs/contracts.md V1–V12). The token is OAuth2 ``client_credentials`` with
HTTP Basic, shared by every worker through :class:`~connectors.credentials.TokenCache` and, when the gateway
answers a call 401, renewed once under a lock before the call is repeated. This module knows the transport and
the answers, not what a dossier is (``adapters/postal.py``) nor how an order is created once
(``services/postal/deliver.py``).

Answer table (``ANSWERS``, by the meaning a ``Status`` has in the destination's ``answers``; tested row by row in
``tests/test_postal_connector.py``):

=========================  ============  ====================================================
answer                     class         why
=========================  ============  ====================================================
HTTP 200, Status "done"    success
"duplicate"                (returned)    create: the OrderNumber is held, an earlier attempt landed
"not_found"                (returned)    cancel: no order by that number
"invalid"                  Permanent     the gateway's message names the fields
"customer_refused"         Permanent     this CustomerCode is not the account's
"not_cancellable"          Permanent     the postman has it: the desk settles it with the post office
"busy", "error"            Retryable     the gateway's weather
a Status not in answers    Permanent     shown with the Status, never retried forever
token HTTP 401/400         Permanent     invalid_client / unsupported_grant_type: fix the keys
call HTTP 401              AuthExpired   renew the token once and repeat; twice: retry later
other HTTP, transport      (base table)  408/425/429/5xx, timeouts and resets retry; other 4xx do not
=========================  ============  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from connectors.base import (
    AuthExpired,
    DeliveryError,
    Permanent,
    Retryable,
    call_timeout,
    classify_http_status,
    excerpt,
    map_transport_errors,
)
from connectors.credentials import TokenCache, basic, call_renewing
from schemas.postal import (
    DEFAULT_ANSWERS,
    Meaning,
    PostalOrder,
    PostalResult,
    TokenAnswer,
    TrackingPage,
)
from schemas.wire import OAuthError

ANSWERS: dict[Meaning, type[DeliveryError] | None] = {
    "done": None,
    "duplicate": None,
    "not_found": None,
    "invalid": Permanent,
    "customer_refused": Permanent,
    "not_cancellable": Permanent,
    "busy": Retryable,
    "error": Retryable,
}
HINTS: dict[Meaning, str] = {
    "customer_refused": " (check the postal destination's customer_code)",
    "not_cancellable": ": the order cannot be cancelled any more (the postman has it); settle it with the post office",
}


class Answered:
    """An order's or a cancel's answer: its meaning in the destination's table, and what the gateway said."""

    def __init__(self, meaning: Meaning, result: PostalResult, status_code: int) -> None:
        self.meaning = meaning
        self.result = result
        self.status_code = status_code

    @property
    def message(self) -> str:
        return (self.result.Message or "").strip()[:300]

    def __repr__(self) -> str:
        return f"Answered({self.meaning!r}, Status={self.result.Status})"


def classify(what: str, result: PostalResult, status_code: int,
             answers: Mapping[int, Meaning] = DEFAULT_ANSWERS) -> Answered:
    """The answer's meaning, or the error of the table above (with the gateway's message)."""
    meaning = answers.get(result.Status)
    message = (result.Message or "").strip()[:300]
    reason = f"post {what}: Status {result.Status}" + (f" — {message}" if message else "")
    if meaning is None:
        raise Permanent(reason + " (a Status not in the destination's answers)", status_code=status_code,
                        excerpt=excerpt(result.model_dump_json()))
    error_class = ANSWERS[meaning]
    if error_class is not None:
        raise error_class(reason + HINTS.get(meaning, ""), status_code=status_code,
                          excerpt=excerpt(result.model_dump_json()))
    return Answered(meaning, result, status_code)


class PostalConnector:
    """Calls to one NGSP gateway with one consumer key and customer account."""

    def __init__(
        self,
        *,
        token_url: str,
        order_url: str,
        cancel_url: str,
        tracking_url: str,
        customer_code: str,
        consumer_key: str,
        consumer_secret: SecretStr,
        client: httpx.Client,
        tokens: TokenCache,
        credential_name: str,
        answers: Mapping[int, Meaning] = DEFAULT_ANSWERS,
    ) -> None:
        for url in (token_url, order_url, cancel_url, tracking_url):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"postal API URL must be http(s): {url!r}")
        self.token_url, self.order_url, self.cancel_url, self.tracking_url = (
            token_url, order_url, cancel_url, tracking_url)
        self.customer_code = customer_code
        self.answers = dict(answers)
        self._key = consumer_key
        self._secret = consumer_secret
        self._client = client
        self._tokens = tokens
        self._name = credential_name

    # ------------------------------------------------------------------ token

    def obtain_token(self) -> tuple[str, float]:
        """A new token (V1), as the ``Authorization`` value later calls carry (V2), and its lifetime."""
        headers = {"Authorization": basic(self._key, self._secret),
                   "Content-Type": "application/x-www-form-urlencoded"}
        response = self._send("POST", self.token_url, "token", content=b"grant_type=client_credentials",
                              headers=headers)
        payload = _json(response)
        if response.status_code == 200:
            try:
                token = TokenAnswer.model_validate(payload)
            except ValidationError:
                raise Retryable("post token: no token in the answer", status_code=200,
                                excerpt=excerpt(response.text)) from None
            return token.authorization, float(token.expires_in)
        if response.status_code in (400, 401):
            try:
                refused = OAuthError.model_validate(payload)
            except ValidationError:
                refused = OAuthError(error=f"HTTP {response.status_code}")
            raise Permanent(f"post token: refused ({refused.error}"
                            + (f": {refused.error_description}" if refused.error_description else "")
                            + "); check the postal destination's consumer key and secret",
                            status_code=response.status_code, excerpt=excerpt(response.text))
        raise _http_error(response, "token")

    def _token(self) -> str:
        return self._tokens.get(self._name) or self._tokens.renew(self._name, None, self.obtain_token)

    # ------------------------------------------------------------------ calls

    def create(self, order: PostalOrder) -> Answered:
        """Post the order (V3): ``done``, or ``duplicate`` when the gateway holds its OrderNumber already."""
        response = self._authorised("POST", self.order_url, "create", json=order.wire())
        answered = classify("create", _result(response, "create"), response.status_code, self.answers)
        if answered.meaning == "not_found":
            raise Permanent(f"post create: Status {answered.result.Status} — {answered.message}",
                            status_code=response.status_code)
        return answered

    def cancel(self, order_number: str) -> Answered:
        """Cancel by GET (V7): ``done``, or ``not_found`` when the gateway has no such order."""
        response = self._authorised("GET", self.cancel_url, "cancel",
                                    params={"CustomerCode": self.customer_code, "OrderNumber": order_number})
        answered = classify("cancel", _result(response, "cancel"), response.status_code, self.answers)
        if answered.meaning == "duplicate":
            raise Permanent(f"post cancel: Status {answered.result.Status} — {answered.message}",
                            status_code=response.status_code)
        return answered

    def tracking(self, last_id: str, page_size: int) -> TrackingPage:
        """The account's status records after ``last_id`` (V9, V10)."""
        response = self._authorised("GET", self.tracking_url, "tracking",
                                    params={"pagesize": page_size, "lastId": last_id})
        if response.status_code != 200:
            raise _http_error(response, "tracking")
        try:
            return TrackingPage.model_validate(_json(response))
        except ValidationError as exc:
            raise Retryable("post tracking: the page is not RESTHeart's shape",
                            excerpt=excerpt(response.text)) from exc

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport

    def _authorised(self, method: str, url: str, what: str, *, json: Any = None,
                    params: dict[str, Any] | None = None) -> httpx.Response:
        """One call with the token, renewed once if the gateway answers 401."""
        response: httpx.Response = call_renewing(
            lambda token: self._send(method, url, what, json=json, params=params, headers={"Authorization": token}),
            self._token(),
            renew=lambda stale: self._tokens.renew(self._name, stale, self.obtain_token),
            refused=lambda reply: reply.status_code == 401,
            log_event="postal.token_expired", call=what,
        )
        if response.status_code == 401:
            raise AuthExpired(f"post {what}: the token was refused right after its renewal", status_code=401,
                              excerpt=excerpt(response.text))
        return response

    def _send(self, method: str, url: str, what: str, *, json: Any = None, params: dict[str, Any] | None = None,
              content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        with map_transport_errors():
            return self._client.request(method, url, json=json, params=params, content=content, headers=headers,
                                        timeout=call_timeout(self._client.timeout))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _http_error(response: httpx.Response, what: str) -> DeliveryError:
    error = classify_http_status(response) or Retryable("the answer is not JSON", status_code=response.status_code,
                                                        excerpt=excerpt(response.text))
    return error.within(f"post {what}")


def _result(response: httpx.Response, what: str) -> PostalResult:
    """MResult from an HTTP 200 (the SDK takes any other status as a failure, V6)."""
    if response.status_code != 200:
        raise _http_error(response, what)
    try:
        return PostalResult.model_validate(_json(response))
    except ValidationError as exc:
        raise Retryable(f"post {what}: the answer is not MResult {{Status, Message}}", status_code=200,
                        excerpt=excerpt(response.text)) from exc
