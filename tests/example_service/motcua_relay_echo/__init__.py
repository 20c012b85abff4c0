"""An example service: each event routed to an ``echo`` destination is posted, with a bearer token, to an endpoint
that keeps it; the endpoint's simulator, a beat job that asks it how many it holds, and a callback that answers
what the relay knows of the service. Everything a service of its own declares, in one module."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request
from pydantic import Field, SecretStr

from config.options import HttpUrl, Secret, ServiceOptions
from config.routing import Destination
from connectors.base import ConnectorResult, build_http_client, classify_http_status, map_transport_errors
from schemas.events import Event, event_json
from services.base import BeatJob, Configured, Context, Deliverer, Lazy, Service, ServiceSettings, Simulator


class EchoOptions(ServiceOptions):
    url: HttpUrl
    token: Annotated[SecretStr, Secret("MOTCUA_ECHO_TOKEN")]


class EchoSettings(ServiceSettings):
    echo_count_interval_seconds: float = Field(30.0, gt=0)


class EchoDeliverer(Deliverer[EchoOptions]):
    def __init__(self, destination: Destination, options: EchoOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.client = build_http_client(destination.timeouts.connect, destination.timeouts.read, 8)

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        with map_transport_errors():
            answer = self.client.post(f"{self.options.url}/events", json=event_json(event), headers={
                "Authorization": f"Bearer {self.options.token.get_secret_value()}", "Idempotency-Key": idempotency_key})
        error = classify_http_status(answer)
        if error is not None:
            raise error
        return ConnectorResult(status_code=answer.status_code, external_ref=answer.json()["id"])

    def count(self) -> int:
        return int(httpx.get(f"{self.options.url}/_admin/count", timeout=5).json()["count"])

    def close(self) -> None:
        self.client.close()


def count(echo: EchoDeliverer) -> dict[str, Any]:
    return {"held": echo.count()}


router = APIRouter(prefix="/v1/callbacks")


@router.get("/echo")
async def echo_callback(request: Request) -> dict[str, Any]:
    ctx: Context = request.app.state.context
    return {"kind": "echo", "destinations": ctx.names("echo")}


def simulator(configured: list[Configured], **_: Any) -> FastAPI:
    options = configured[0].options
    assert isinstance(options, EchoOptions)
    token = options.token.get_secret_value()
    app = FastAPI()
    held: dict[str, dict[str, Any]] = {}

    @app.post("/events")
    async def receive(request: Request, authorization: str = Header("")) -> dict[str, Any]:
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "bad token")
        key = request.headers.get("idempotency-key", "")
        held.setdefault(key, await request.json())
        return {"id": f"echo-{len(held)}"}

    @app.get("/_admin/count")
    async def count_held() -> dict[str, int]:
        return {"count": len(held)}

    @app.get("/_admin/received")
    async def received() -> list[dict[str, Any]]:
        return list(held.values())

    return app


SERVICE = Service(
    kind="echo",
    title="echo (an example service installed as a package of its own)",
    deliverer=EchoDeliverer,
    options=EchoOptions,
    settings=EchoSettings,
    jobs=(BeatJob[EchoDeliverer](task="relay.echo.count", entry="echo-count", title="counting what it holds", run=count,
                                 every="echo_count_interval_seconds", done="echo.counted",
                                 failed="echo.count_failed"),),
    callbacks=Lazy("motcua_relay_echo:router"),
    simulators=(Simulator("echo endpoint", "echo_port", 8799, Lazy("motcua_relay_echo:simulator")),),
)
