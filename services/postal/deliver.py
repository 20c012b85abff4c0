"""The post's deliverer: pickup and delivery orders out, created once; cancelled on a withdrawal or a hand-over.

**Created once, without a look-up.** The NGSP gateway has no look-up of an order by number (V8), so the ledger
keeps what the relay knows of each order it sent, in the marks table (``store/marks.py``, entry
``order:<OrderNumber>``):

- before the order is posted its mark is ``sent``; once the gateway answers ``done`` it is ``taken``;
- a status of the order on the tracking list or in a push makes a ``sent`` mark ``taken`` (``inbound.py``): the
  post holds the order;
- an attempt that timed out after sending leaves ``sent``. The next attempt finds the mark and, unless the
  tracking list showed the order meanwhile, posts the same ``OrderNumber`` again (``ambiguous_order =
  "resend"``): the gateway answers a number it holds as a duplicate (``answers``, default Status 409), which
  settles it as ``taken``, and a first order that never arrived is created now. Either way the post holds one
  order: the number is the customer's key at the gateway.
- ``ambiguous_order = "wait"`` is for a gateway that would not refuse a repeated number: nothing is posted
  again; the attempt waits for the tracking list to show the order, and after ``ambiguous_wait`` the delivery
  is a dead letter asking the desk to check with the post office (never a second order).

**Cancelled from what the relay knows.** A withdrawal, or a result handed over other than by post, cancels the
dossier's orders it asked for (by GET, V7). The last status the post reported of each decides first: one
delivered or returned needs nothing, one the postman has is a permanent error the desk settles with the post
office. The gateway's own refusal (``not_cancellable``) says the same, and ``not_found`` means no order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from pydantic import Field, SecretStr, ValidationError, model_validator

from adapters.postal import (
    REQUEST_TYPES,
    AddressError,
    OrderError,
    PostalMapping,
    cancellations,
    order_for,
    order_number,
    takes,
)
from config.admin_units import load_admin_units
from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination, parse_duration
from connectors.base import ConnectorResult, Permanent, Retryable, build_http_client
from connectors.credentials import TokenCache
from connectors.postal import PostalConnector
from schemas.events import DossierReturned, DossierWithdrawn, Event, PostalRequest
from schemas.postal import CANCEL_PATH, ORDER_PATH, TOKEN_PATH, TRACKING_PATH, PostalOrder
from schemas.privacy import error_fields
from services.base import Context, Deliverer
from services.checks import Finding, reach, then
from store import queries
from store.marks import get_mark, mark_changed_at, set_mark

log = structlog.get_logger(__name__)

POLL_PAGE = 200
SENT, TAKEN = "sent", "taken"
NOTHING_TO_CANCEL = {"delivered": "delivered", "returned_to_sender": "returned to the sender"}
UNDER_WAY = {"collected": "collected", "in_transit": "in transit", "failed_delivery": "failed at delivery"}


def order_mark(number: str) -> str:
    """The mark of one order in the marks table."""
    return f"order:{number}"


class PostalOptions(ServiceOptions):
    """A postal destination: the gateway's endpoints and the agency's customer account, its desks, and how order
    numbers, answers and status codes map (``adapters.postal.PostalMapping``)."""

    url: HttpUrl
    token_url: HttpUrl | None = None  # OpenCPS's apiGetToken; default url + /token
    order_url: HttpUrl | None = None  # apiPostOrder
    cancel_url: HttpUrl | None = None  # apiCancelOrder
    tracking_url: HttpUrl | None = None  # apiGetOrderTracking
    customer_code: str
    consumer_key: Annotated[SecretStr, Secret("MOTCUA_POSTAL_CONSUMER_KEY")]  # the relay's API keys at the post
    consumer_secret: Annotated[SecretStr, Secret("MOTCUA_POSTAL_CONSUMER_SECRET")]
    # whsec_ secret(s) the post signs its pushes with
    callback_secret: Annotated[SecretStr | None, Secret("MOTCUA_POSTAL_CALLBACK_SECRET", required=False)] = None
    admin_units_file: str | None = None
    poll: bool = True
    poll_page: int = Field(POLL_PAGE, ge=1, le=1000)
    agency: dict[str, Any]
    agencies: dict[str, dict[str, Any]] = Field(default_factory=dict)
    order_suffixes: dict[str, str] = Field(default_factory=dict)
    status_map: dict[str, str] = Field(default_factory=dict)
    answers: dict[str, str] = Field(default_factory=dict)
    ambiguous_order: Literal["resend", "wait"] = "resend"
    ambiguous_wait: str = "2h"
    require_district: bool = False
    service_code: str | None = None  # no longer sent: MOrder has no such field (kept so old files load)

    @model_validator(mode="after")
    def _mapping(self) -> PostalOptions:
        self.mapping()  # a bad agency, suffix, answer or status is refused with the options
        parse_duration(self.ambiguous_wait)
        return self

    def mapping(self) -> PostalMapping:
        return PostalMapping.from_options(self.model_dump(include={
            "customer_code", "agency", "agencies", "order_suffixes", "status_map", "answers", "require_district"}))

    def endpoint(self, name: str) -> str:
        """A call's full URL: its own option, else its default path under ``url``."""
        given: str | None = getattr(self, f"{name}_url")
        default = {"token": TOKEN_PATH, "order": ORDER_PATH, "cancel": CANCEL_PATH, "tracking": TRACKING_PATH}[name]
        return given or self.url.rstrip("/") + default


class PostalDeliverer(Deliverer[PostalOptions]):
    """Adapter + connector for one postal destination."""

    def __init__(self, destination: Destination, options: PostalOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.mapping = options.mapping()
        self.units = load_admin_units(options.admin_units_file)
        self.ambiguous_wait = timedelta(seconds=parse_duration(options.ambiguous_wait))
        if options.service_code:
            log.info("postal.option_ignored", destination=destination.name, option="service_code",
                     reason="the NGSP order has no service code")
        self.connector = PostalConnector(
            token_url=options.endpoint("token"), order_url=options.endpoint("order"),
            cancel_url=options.endpoint("cancel"), tracking_url=options.endpoint("tracking"),
            customer_code=self.mapping.customer_code,
            consumer_key=options.consumer_key.get_secret_value(), consumer_secret=options.consumer_secret,
            client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                     context.settings.worker_concurrency),
            tokens=TokenCache(context.redis, context.settings.redis_prefix),
            credential_name=f"postal:{destination.name}", answers=self.mapping.answers,
        )

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        if not takes(event):
            raise Permanent(f"the post takes pickup and delivery requests and their cancellations, "
                            f"not {event.type}")
        if isinstance(event, PostalRequest):
            return self._order(event)
        return self._cancel(event)

    # ------------------------------------------------------------------ orders

    def _order(self, event: PostalRequest) -> ConnectorResult:
        try:
            order = order_for(event, self.mapping, self.units)
        except (AddressError, OrderError) as exc:
            raise Permanent(str(exc)) from exc
        except ValidationError as exc:
            raise Permanent(f"the order would be invalid: {', '.join(error_fields(exc))}") from exc
        engine, entry = self.context.engine, order_mark(order.OrderNumber)
        mark = get_mark(engine, self.name, entry)
        if mark == TAKEN:
            return self._result(order, "already held by the post (the ledger's mark)")
        if mark == SENT and self.options.ambiguous_order == "wait":
            return self._wait_for_tracking(order)
        if mark is None:
            set_mark(engine, self.name, entry, SENT, datetime.now(UTC))
        answered = self.connector.create(order)  # an error leaves the mark "sent": the next attempt resolves it
        set_mark(engine, self.name, entry, TAKEN, datetime.now(UTC))
        if answered.meaning == "duplicate":
            state = ("already held by the post (an earlier attempt landed)" if mark == SENT
                     else "already held by the post (its number was used before this relay sent it)")
            if mark is None:
                log.warning("postal.order_number_in_use", order_number=order.OrderNumber)
            return self._result(order, state, answered.message)
        return self._result(order, "created", answered.message)

    def _wait_for_tracking(self, order: PostalOrder) -> ConnectorResult:
        since = mark_changed_at(self.context.engine, self.name, order_mark(order.OrderNumber))
        if since is not None and datetime.now(UTC) - since > self.ambiguous_wait:
            raise Permanent(f"{order.OrderNumber}: an earlier attempt may have created the order and the tracking "
                            f"list has not shown it for {self.options.ambiguous_wait}; check with the post office "
                            f"before sending it again (ambiguous_order = \"wait\")")
        raise Retryable(f"{order.OrderNumber}: an earlier attempt may have created the order; waiting for the "
                        f"tracking list to show it (ambiguous_order = \"wait\")")

    def _result(self, order: PostalOrder, state: str, message: str = "") -> ConnectorResult:
        purpose = "pickup" if order.OrderNumber.endswith(f"-{self.mapping.suffixes['pickup']}") else "delivery"
        return ConnectorResult(status_code=200, external_ref=order.OrderNumber,
                               excerpt=f"{purpose} order {state}; COD {order.CODAmount or 0:.0f}"
                                       + (f"; the post: {message}" if message else ""))

    # ------------------------------------------------------------------ cancellations

    def _cancel(self, event: DossierWithdrawn | DossierReturned) -> ConnectorResult:
        dossier = event.dossier_code
        engine = self.context.engine
        requested = {REQUEST_TYPES[kind] for kind in queries.event_types(engine, dossier, REQUEST_TYPES)}
        last = self._last_statuses(dossier)
        done: list[str] = []
        for purpose in cancellations(event):
            if purpose not in requested:
                continue
            number = order_number(dossier, purpose, self.mapping)
            status = last.get(number)
            if status == "cancelled":
                done.append(f"{number}: already cancelled")
                continue
            if status in NOTHING_TO_CANCEL:
                done.append(f"{number}: nothing to cancel, the post reports it {NOTHING_TO_CANCEL[status]}")
                continue
            if status in UNDER_WAY:
                raise Permanent(f"{number} cannot be cancelled: the post reports it {UNDER_WAY[status]}; "
                                f"settle it with the post office")
            answered = self.connector.cancel(number)
            done.append(f"{number}: " + ("no order at the post" if answered.meaning == "not_found" else "cancelled"))
        if not done:
            purposes = cancellations(event)
            done.append("no postal order for this dossier" if not requested
                        else "nothing to cancel: the result goes by post" if not purposes
                        else f"no {' or '.join(purposes)} order to cancel")
        return ConnectorResult(status_code=200, external_ref=None, excerpt="; ".join(done))

    def _last_statuses(self, dossier: str) -> dict[str, str]:
        """The latest status the post reported of each of the dossier's orders (by when it happened)."""
        latest: dict[str, tuple[str, str]] = {}
        for stored in queries.event_payloads(self.context.engine, [dossier], ["postal.status"]):
            data, at = stored.payload.get("data") or {}, str(stored.payload.get("occurred_at", ""))
            number = data.get("order_number")
            if number and (number not in latest or at >= latest[number][0]):
                latest[number] = (at, str(data.get("status")))
        return {number: status for number, (_, status) in latest.items()}

    def check(self, timeout: float) -> list[Finding]:
        """The gateway answers, and grants a token for the consumer key and secret (V1, V2), which is dropped: the
        workers' cached token is left as it is."""
        reached = reach(self.options.url, timeout)

        def token() -> str:
            _, lifetime = self.connector.obtain_token()
            return f"the gateway granted a token for the consumer key (for {lifetime:.0f} s), not kept"

        return [reached, then(reached, "token", self.connector.token_url, timeout, token)]

    def close(self) -> None:
        self.connector.close()
