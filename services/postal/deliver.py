"""The post's deliverer: pickup and delivery orders out, created once; cancelled on a withdrawal or a hand-over.

A pickup or delivery request becomes one order, looked up by its order number before it is created, so an attempt
repeated after a timeout that did land creates nothing twice. A withdrawal, or a result handed over other than by
post, cancels the dossier's orders that exist and are still waiting for the postman; one delivered or returned
needs nothing, and one under way is a permanent error the desk must settle with the post office (the reason says
so).
"""

from __future__ import annotations

from typing import Annotated, Any

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
from config.routing import Destination
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.postal import PostalConnector
from schemas.events import DossierReturned, DossierWithdrawn, Event, PostalRequest
from schemas.postal import CANCELLABLE_STATUSES, CANCELLED, FINAL_STATUSES, STATUS_MESSAGES
from schemas.privacy import error_fields
from services.base import Context, Deliverer
from store import queries

POLL_PAGE = 200


class PostalOptions(ServiceOptions):
    """A postal destination: the API and the agency's customer account, its desks, and how order numbers and
    status codes map (``adapters.postal.PostalMapping``)."""

    url: HttpUrl
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
    service_code: str = "HCC"
    require_district: bool = False

    @model_validator(mode="after")
    def _mapping(self) -> PostalOptions:
        self.mapping()  # a bad agency, suffix or status is refused with the options
        return self

    def mapping(self) -> PostalMapping:
        return PostalMapping.from_options(self.model_dump(include={
            "customer_code", "agency", "agencies", "order_suffixes", "status_map", "service_code",
            "require_district"}))


class PostalDeliverer(Deliverer[PostalOptions]):
    """Adapter + connector for one postal destination."""

    def __init__(self, destination: Destination, options: PostalOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.mapping = options.mapping()
        self.units = load_admin_units(options.admin_units_file)
        self.connector = PostalConnector(
            base_url=options.url, customer_code=self.mapping.customer_code,
            consumer_key=options.consumer_key.get_secret_value(), consumer_secret=options.consumer_secret,
            client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                     context.settings.worker_concurrency),
            tokens=TokenCache(context.redis, context.settings.redis_prefix),
            credential_name=f"postal:{destination.name}",
        )

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        if not takes(event):
            raise Permanent(f"the post takes pickup and delivery requests and their cancellations, "
                            f"not {event.type}")
        if isinstance(event, PostalRequest):
            return self._order(event)
        return self._cancel(event)

    def _order(self, event: PostalRequest) -> ConnectorResult:
        try:
            order = order_for(event, self.mapping, self.units)
        except (AddressError, OrderError) as exc:
            raise Permanent(str(exc)) from exc
        except ValidationError as exc:
            raise Permanent(f"the order would be invalid: {', '.join(error_fields(exc))}") from exc
        found = self.connector.lookup(order.orderNumber)
        created = False
        if found is None:
            found, created = self.connector.create(order)
        state = "created" if created else "already held by the post"
        return ConnectorResult(status_code=200, external_ref=f"{found.orderNumber} {found.itemCode}",
                               excerpt=f"{order.purpose} order {state}: item {found.itemCode}, "
                                       f"status {found.statusCode}, COD {found.codAmount}")

    def _cancel(self, event: DossierWithdrawn | DossierReturned) -> ConnectorResult:
        dossier = event.dossier_code
        requested = {REQUEST_TYPES[kind] for kind in queries.event_types(self.context.engine, dossier, REQUEST_TYPES)}
        reason = ((event.data.reason or "dossier withdrawn") if isinstance(event, DossierWithdrawn)
                  else "result handed over in person")
        done: list[str] = []
        for purpose in cancellations(event):
            if purpose not in requested:
                continue
            number = order_number(dossier, purpose, self.mapping)
            found = self.connector.lookup(number)
            if found is None:
                done.append(f"{number}: no order at the post")
            elif found.statusCode == CANCELLED:
                done.append(f"{number}: already cancelled")
            elif found.statusCode in FINAL_STATUSES:  # delivered or returned: nothing is under way any more
                done.append(f"{number}: nothing to cancel, the post reports it "
                            f"{STATUS_MESSAGES.get(found.statusCode, found.statusCode)!r}")
            elif found.statusCode not in CANCELLABLE_STATUSES:
                status = STATUS_MESSAGES.get(found.statusCode, found.statusCode)
                raise Permanent(f"{number} cannot be cancelled: the post reports it {status!r} "
                                f"({found.statusCode}); settle it with the post office")
            else:
                self.connector.cancel(number, reason)
                done.append(f"{number}: cancelled")
        if not done:
            purposes = cancellations(event)
            done.append("no postal order for this dossier" if not requested
                        else "nothing to cancel: the result goes by post" if not purposes
                        else f"no {' or '.join(purposes)} order to cancel")
        return ConnectorResult(status_code=200, external_ref=None, excerpt="; ".join(done))

    def close(self) -> None:
        self.connector.close()
