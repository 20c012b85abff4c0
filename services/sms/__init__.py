"""A brandname SMS gateway: the text of the event's template (``config/zalo.toml``, ``sms``), for citizens whose
phone has no Zalo. Only the Zalo destination's ``fallback`` sends here (no route of its own)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import httpx
from pydantic import SecretStr

from adapters.zalo import MappingError, normalise_phone
from adapters.zalo import fill as fill_text
from config.options import HttpUrl, Secret, ServiceOptions, option_variable, secret_variable
from config.routing import Destination
from config.zalo_templates import load_templates
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.sms import SmsConnector
from schemas.events import Event
from services.base import Configured, Context, Deliverer, DemoPlay, Measure, Service, Simulator, Stage

PORT = 8704


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


def _simulator(configured: list[Configured], **_: Any) -> Any:
    from sandbox.sms import create_app

    options = configured[0].options
    assert isinstance(options, SmsOptions)
    return create_app(api_key=options.api_key.get_secret_value(), brandname=options.brandname)


class SmsPlay(DemoPlay):
    """The gateway of the Zalo fallback; in the summary only when a phone without Zalo turned up."""

    def __init__(self, names: list[str], url: str) -> None:
        super().__init__(names)
        self.url = url

    def describe(self) -> str:
        return f"SMS: {self.url}"

    def measure(self, stage: Stage, rows: list[dict[str, Any]]) -> Measure:
        used = {r["destination"] for r in rows} & set(self.names)
        if not used:  # a table row of zeros says nothing
            return Measure()
        stats = httpx.get(f"{self.url}/_admin/stats", timeout=10).json()
        view = {"distinct": stats["sent"], "receipts": stats["sent"] + stats["duplicates"],
                "faults": {"error": stats["faults"]["error"], "reset": 0}}
        return Measure({name: view for name in used})


def _demo(stage: Stage, names: list[str]) -> DemoPlay:
    from sandbox.sms import SEND_PATH, create_app

    env = stage.env
    first = stage.routing.destinations[names[0]]
    variable = secret_variable(first, SmsOptions, "api_key") or ""
    key = env.setdefault(variable, uuid.uuid4().hex)
    brandname = str(first.options.get("brandname", "UBND-HALONG"))
    url = stage.serve(create_app(api_key=key, brandname=brandname), PORT)
    for name in names:
        env[option_variable(stage.routing.destinations[name], "url", "MOTCUA_SMS_URL") or ""] = f"{url}{SEND_PATH}"
    return SmsPlay(names, url)


SERVICE = Service(
    kind="sms",
    title="brandname SMS gateway (the Zalo fallback)",
    deliverer=SmsDeliverer,
    options=SmsOptions,
    simulators=(Simulator("SMS gateway", "sms_port", PORT, _simulator),),
    demo=_demo,
)
