"""The SMS deliverer: the text of the event's template (``config/zalo.toml``, ``sms``) through a brandname
gateway, for citizens whose phone has no Zalo."""

from __future__ import annotations

from typing import Annotated

from pydantic import SecretStr

from adapters.zalo import MappingError, normalise_phone
from adapters.zalo import fill as fill_text
from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from config.zalo_templates import load_templates
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.sms import SmsConnector
from schemas.events import Event
from services.base import Context, Deliverer


class SmsOptions(ServiceOptions):
    url: HttpUrl
    api_key: Annotated[SecretStr, Secret("MOTCUA_SMS_API_KEY")]  # the relay's key at the gateway
    brandname: str = "UBND"
    templates_file: str | None = None


class SmsDeliverer(Deliverer[SmsOptions]):
    """The SMS text of the event's template through a brandname gateway."""

    def __init__(self, destination: Destination, options: SmsOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.templates = load_templates(options.templates_file)
        self.connector = SmsConnector(url=options.url, api_key=options.api_key, brandname=options.brandname,
                                      client=build_http_client(destination.timeouts.connect,
                                                               destination.timeouts.read, 16))

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        spec = self.templates.templates.get(event.type)
        if spec is None or not spec.sms:
            raise Permanent(f"no SMS text for {event.type} in the templates file")
        try:
            phone = normalise_phone(event.applicant.phone or "")
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        text = fill_text(spec.sms, event, self.templates.labels).strip()
        sent = self.connector.send(phone, text, idempotency_key)
        return ConnectorResult(status_code=200, external_ref=sent.sms_id, excerpt=sent.excerpt)

    def close(self) -> None:
        self.connector.close()
