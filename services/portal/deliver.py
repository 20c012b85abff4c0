"""The national portal's deliverer: each lifecycle event brings the dossier's record up to date and appends its
progress entry once, in OpenCPS's order: look the dossier up (``TraCuuHoSo``: held or not), create or update
the whole record (``DongBoHoSoMC``), then the progress entry (``CapNhatTienDoHoSoMC``, exactly once:
:mod:`services.portal.progress`). The record is made from the ledger's events of the dossier, the procedure's
name and field from the national catalogue (``LayThuTuc``, remembered for ``catalogue_ttl``)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.portal import (
    DESK,
    DESK_HANDLER,
    MappingError,
    PortalMapping,
    Procedure,
    dossier_record,
    progress_entry,
    takes,
)
from config.options import Duration, HttpUrl, Secret, ServiceOptions, Words
from config.routing import Destination
from config.units import load_directory
from connectors.base import ConnectorResult, Permanent, build_http_client
from connectors.credentials import TokenCache
from connectors.portal import PortalConnector
from schemas.events import DossierEvent, Event, parse_stored_json
from schemas.portal import AUTH_PATH, INTEGRATION_PATH, ONLINE
from services.base import Context, Deliverer
from services.checks import Finding, reach, then
from services.portal.progress import AmbiguousProgress, ProgressLedger, append_once
from store import queries


class PortalOptions(ServiceOptions):
    """A portal destination: the LGSP adapter's URL and endpoints (OpenCPS's ``adapter_url``, ``auth_endpoint``,
    ``integration_endpoint``) and the relay's account, the units whose online dossiers beat pulls, and the
    province's side of the mapping (``adapters.portal.PortalMapping``).

    ``DonViXuLy`` is the agency's name (P17): ``agency_names`` (unit code → name) first, then the unit directory
    (``units_file``, by default ``config/units.csv``, the file the inter-level exchange reads); a unit named in
    neither makes its deliveries dead letters saying so (fix, restart, replay)."""

    url: HttpUrl
    auth_path: str = AUTH_PATH  # a path under url, or a full URL
    integration_path: str = INTEGRATION_PATH
    dstcode: str = "DVCQG"
    username: Annotated[SecretStr, Secret("MOTCUA_PORTAL_USERNAME")]  # the relay's account on the portal
    password: Annotated[SecretStr, Secret("MOTCUA_PORTAL_PASSWORD")]
    # whsec_ secret(s) the portal signs its pushes with
    callback_secret: Annotated[SecretStr | None, Secret("MOTCUA_PORTAL_CALLBACK_SECRET", required=False)] = None
    madonvi: str | None = Field(None, min_length=1, description="every call's madonvi (default: the event's unit)")
    session_ttl: Duration = 25 * 60
    pull_units: Words = Field(default_factory=list)
    pull_page: int = Field(100, ge=1, le=1000)
    online_service: str = Field(ONLINE, min_length=1, description="the LGSP's name for online dossiers coming down")
    status_map: dict[str, str | int] = Field(default_factory=dict)
    procedure_map: dict[str, str] = Field(default_factory=dict)
    procedure_names: dict[str, str] = Field(default_factory=dict)
    desk_name: str = DESK
    desk_handler: str = DESK_HANDLER
    agency_names: dict[str, str] = Field(default_factory=dict)
    units_file: str | None = None
    catalogue_ttl: Duration = 6 * 3600
    ambiguous_progress: AmbiguousProgress = "resend"

    @field_validator("auth_path", "integration_path")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("/", "http://", "https://")):
            raise ValueError(f"must be a path under url (starting with /) or an http(s) URL, not {value!r}")
        return value

    @model_validator(mode="after")
    def _mapping(self) -> PortalOptions:
        self.mapping()  # a status code out of the portal's range, a code for a name, are refused with the options
        return self

    def mapping(self) -> PortalMapping:
        """The province's side of the mapping, the agency names read from the unit directory."""
        try:
            units = load_directory(self.units_file).units
        except OSError as exc:
            raise ValueError(f"units_file: cannot read {self.units_file} ({exc.strerror})") from exc
        directory = {code: unit.name for code, unit in units.items() if unit.name}
        options = self.model_dump(include={"status_map", "procedure_map", "procedure_names", "desk_name",
                                           "desk_handler"})
        return PortalMapping.from_options(options | {"agency_names": directory | self.agency_names})


PARSED_KEPT = 4096  # earlier events kept parsed: a few hundred dossiers in progress, some MB


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
        self.progress = ProgressLedger(context.engine, destination.name)
        self._catalogue: dict[str, tuple[float, Procedure]] = {}
        self._catalogue_lock = threading.Lock()
        self._parsed: OrderedDict[tuple[int, str], Event] = OrderedDict()  # earlier events, by row id and text
        self._parsed_lock = threading.Lock()

    def madonvi(self, unit_code: str) -> str:
        """The unit the calls for a dossier of ``unit_code`` are made as."""
        return self.options.madonvi or unit_code

    def deliver(self, event: Event, idempotency_key: str) -> ConnectorResult:
        """Look up, create or update the record, then append the progress entry once."""
        if not takes(event, self.mapping):
            raise Permanent(f"the portal follows the status_map's lifecycle events, not {event.type}")
        unit, code = self.madonvi(event.unit_code), event.dossier_code
        try:
            self.mapping.agency(event.unit_code)  # before any call: a configuration fault is no weather
            entry = progress_entry(event, self.mapping)
            procedure = self.procedure(unit, self.mapping.national_procedure(event.procedure_code))
            record = dossier_record(event, self.earlier(event), self.mapping, procedure)
        except MappingError as exc:
            raise Permanent(str(exc)) from exc
        held = self.connector.lookup(unit, code) is not None
        self.connector.sync(unit, record, updating=held)
        appended = append_once(self.connector, self.progress, unit, entry, self.options.ambiguous_progress)
        return ConnectorResult(
            status_code=200,
            external_ref=code,
            excerpt=f"{'updated' if held else 'created'} with TrangThaiHoSo {record['TrangThaiHoSo']}; "
                    f"progress entry {appended}",
        )

    def earlier(self, event: DossierEvent) -> list[Event]:
        """The dossier's lifecycle events in the ledger from the same system (the adapter keeps those before
        ``event``)."""
        rows = queries.event_texts(self.context.engine, [event.dossier_code], list(self.mapping.status_map),
                                   origin=event.origin)
        # each stored event parsed once, not once per later event of its dossier: the parsing was a fifth of the
        # portal worker's CPU. Kept by row id and text, so a ledger restored under the workers is read afresh.
        with self._parsed_lock:
            known = {row: self._parsed[row] for row in rows if row in self._parsed}
        new = {row: parse_stored_json(row[1]) for row in rows if row not in known}
        with self._parsed_lock:
            for row in known:
                self._parsed.move_to_end(row)
            self._parsed.update(new)
            while len(self._parsed) > PARSED_KEPT:
                self._parsed.popitem(last=False)
        return [known[row] if row in known else new[row] for row in rows]

    def procedure(self, unit: str, national_code: str) -> Procedure | None:
        """The national catalogue's name and field of a procedure (``LayThuTuc``), remembered for
        ``catalogue_ttl``; ``None`` when the catalogue lacks it (the portal then refuses the record, naming it)."""
        now = time.monotonic()
        with self._catalogue_lock:
            hit = self._catalogue.get(national_code)
        if hit is not None and now - hit[0] < self.options.catalogue_ttl:
            return hit[1]
        row = self.connector.procedure(unit, national_code)
        if row is None:
            return None
        first = row.LINHVUCTHUCHIEN[0] if row.LINHVUCTHUCHIEN else None
        found = Procedure(row.TENTTHC, first.MALINHVUC if first else "", first.TENLINHVUC if first else "")
        with self._catalogue_lock:
            self._catalogue[national_code] = (now, found)
        return found

    def check(self, timeout: float) -> list[Finding]:
        """The adapter URL answers, and the portal grants the relay's account a session (P1, P2: the log-in with
        the ``dstcode`` header), which is dropped: the workers' cached session is left as it is."""
        reached = reach(self.options.url, timeout)

        def log_in() -> str:
            self.connector.login()
            return f"the portal granted the account a session (dstcode {self.options.dstcode}), not kept"

        return [reached, then(reached, "log-in", self.connector.auth_url, timeout, log_in)]

    def close(self) -> None:
        self.connector.close()
