"""The SMS deliverer: the text of the event's template (``config/zalo.toml``, ``sms``) through a brandname
gateway, for citizens whose phone has no Zalo."""

from __future__ import annotations

from typing import Annotated

from pydantic import SecretStr, model_validator

from adapters.zalo import MappingError, normalise_phone
from adapters.zalo import fill as fill_text
from config.options import HttpUrl, Secret, ServiceOptions, Words
from config.routing import Destination
from config.zalo_templates import load_templates
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.sms import SmsConnector
from schemas.events import Event
from services.base import Context, Deliverer
from services.checks import Finding, reach


class SmsOptions(ServiceOptions):
    """A brandname gateway. ``success_codes`` and ``duplicate_codes`` are the codes this gateway answers for a sent
    SMS and for a repeated request id (a repeat of a send that went through: delivered), beyond the answer table's
    (``connectors/sms.py``: ``00`` and eSMS's ``100``; eSMS's ``124``), so a gateway of the family that numbers its
    answers otherwise is configured, not coded."""

    url: HttpUrl
    api_key: Annotated[SecretStr, Secret("MOTCUA_SMS_API_KEY")]  # the relay's key at the gateway
    brandname: str = "UBND"
    templates_file: str | None = None
    success_codes: Words = []
    duplicate_codes: Words = []

    @model_validator(mode="after")
    def _codes_apart(self) -> SmsOptions:
        both = sorted(set(self.success_codes) & set(self.duplicate_codes))
        if both:
            raise ValueError(f"codes both in success_codes and duplicate_codes: {', '.join(both)}")
        return self


class SmsDeliverer(Deliverer[SmsOptions]):
    """The SMS text of the event's template through a brandname gateway."""

    def __init__(self, destination: Destination, options: SmsOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.templates = load_templates(options.templates_file)
        self.connector = SmsConnector(url=options.url, api_key=options.api_key, brandname=options.brandname,
                                      client=build_http_client(destination.timeouts.connect,
                                                               destination.timeouts.read, 16),
                                      success_codes=options.success_codes, duplicate_codes=options.duplicate_codes)

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

    def check(self, timeout: float) -> list[Finding]:
        """The gateway answers a ``HEAD`` of its send URL. Its API key has no call of its own to try it with: the
        first SMS does (a refused key is a dead letter saying so)."""
        return [reach(self.options.url, timeout)]

    def close(self) -> None:
        self.connector.close()
