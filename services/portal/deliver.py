"""The national portal's deliverer: each lifecycle event brings the dossier's record up to date and appends its
progress entry once, in OpenCPS's order (look up, create or update, then the progress entry unless the portal
already holds it: a repeated attempt after a timeout whose call landed)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from adapters.portal import (
    DESK,
    DESK_HANDLER,
    MappingError,
    PortalMapping,
    dossier_record,
    progress_entry,
    progress_recorded,
    takes,
)
from config.options import Duration, HttpUrl, Secret, ServiceOptions, Words
from config.routing import Destination
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.portal import PortalConnector
from schemas.events import Event
from schemas.portal import AUTH_PATH, INTEGRATION_PATH
from services.base import Context, Deliverer


class PortalOptions(ServiceOptions):
    """A portal destination: the LGSP adapter's URL and the relay's account, the units whose online dossiers beat
    pulls, and the province's side of the mapping (``adapters.portal.PortalMapping``)."""

    url: HttpUrl
    auth_path: str = AUTH_PATH
    integration_path: str = INTEGRATION_PATH
    dstcode: str = "DVCQG"
    username: Annotated[SecretStr, Secret("MOTCUA_PORTAL_USERNAME")]  # the relay's account on the portal
    password: Annotated[SecretStr, Secret("MOTCUA_PORTAL_PASSWORD")]
    # whsec_ secret(s) the portal signs its pushes with
    callback_secret: Annotated[SecretStr | None, Secret("MOTCUA_PORTAL_CALLBACK_SECRET", required=False)] = None
    session_ttl: Duration = 25 * 60
    pull_units: Words = Field(default_factory=list)
    pull_page: int = Field(100, ge=1, le=1000)
    status_map: dict[str, str | int] = Field(default_factory=dict)
    procedure_map: dict[str, str] = Field(default_factory=dict)
    procedure_names: dict[str, str] = Field(default_factory=dict)
    desk_name: str = DESK
    desk_handler: str = DESK_HANDLER

    @model_validator(mode="after")
    def _mapping(self) -> PortalOptions:
        self.mapping()  # a status code out of the portal's range is refused with the options
        return self

    def mapping(self) -> PortalMapping:
        return PortalMapping.from_options(self.model_dump(include={
            "status_map", "procedure_map", "procedure_names", "desk_name", "desk_handler"}))


class PortalDeliverer(Deliverer[PortalOptions]):
    """Adapter + connector for one portal destination."""

    def __init__(self, destination: Destination, options: PortalOptions, context: Context) -> None:
        super().__init__(destination, options, context)
        self.mapping = options.mapping()
        self.connector = PortalConnector(
            base_url=options.url, auth_path=options.auth_path, integration_path=options.integration_path,
            dstcode=options.dstcode, username=options.username.get_secret_value(), password=options.password,
            client=build_http_client(destination.timeouts.connect, destination.timeouts.read,
                                     context.settings.worker_concurrency),
            tokens=TokenCache(context.redis, context.settings.redis_prefix),
            credential_name=f"portal:{destination.name}", session_ttl=options.session_ttl,
        )

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        """Look up, create or update the record, then append the progress entry once."""
        if not takes(event, self.mapping):
            raise Permanent(f"the portal follows the status_map's lifecycle events, not {event.type}")
        unit, code = event.unit_code, event.dossier_code
        try:
            entry = progress_entry(event, self.mapping)
            current = self.connector.lookup(unit, code)
            record = dossier_record(event, current, self.mapping)
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        self.connector.sync(unit, record, updating=current is not None)
        appended = not progress_recorded(entry, current)
        if appended:
            self.connector.progress(unit, entry)
        return ConnectorResult(
            status_code=200,
            external_ref=code,
            excerpt=f"{'updated' if current else 'created'} with TrangThaiHoSo {record['TrangThaiHoSo']}; "
                    f"progress entry {'appended' if appended else 'already held'}",
        )

    def close(self) -> None:
        self.connector.close()
