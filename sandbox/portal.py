"""Simulator of the national public service portal (Cổng DVC quốc gia) as reached through the provincial LGSP.

It speaks the contract OpenCPS integrates (docs/contracts.md P1–P18; the wire models are :mod:`schemas.portal`) and
refuses what the real portal would: an unknown or missing parameter or field, a number where a string belongs,
the wrong envelope, a create for a dossier it holds, an update for one it does not. JSON over HTTP, header
``dstcode`` on every request:

- ``POST {auth_path}`` ``{"username", "password"}`` → ``{"error_code": 0, "message": "Thành công", "session"}``.
  A session lives ``session_ttl_seconds``.
- ``POST {integration_path}`` ``{"session", "madonvi", "service", ...params}``, each service taking exactly its
  :data:`schemas.portal.PARAMS`; rows come back in ``result``:

  ``TraCuuHoSo`` ``{"mahoso"}`` → ``result: [the record it holds]`` or ``[]``: no ``QuaTrinhXuLy``;
  ``LayThuTuc`` ``{"maTTHC"}`` → ``result: [{MATTHC, TENTTHC, LINHVUCTHUCHIEN: [{MALINHVUC, TENLINHVUC}]}]``;
  ``DongBoHoSoMC`` ``{"isUpdating": "True"|"False", "data": [DossierRecord]}``: "False" creates a dossier it does
  not hold, "True" replaces the record of one it holds; a status change must pass
  :func:`schemas.portal.allowed_transition`; a ``DonViXuLy`` shaped as a unit code is taken and flagged as a
  content issue (P17);
  ``CapNhatTienDoHoSoMC`` ``{"data": [ProgressEntry]}`` appends entries of a dossier it holds whose
  ``TrangThai`` is the dossier's; an entry it holds (same MaHoSo, TrangThai, ThoiDiemXuLy) is refused "06"
  and counted ``repeated_progress``, so an entry is taken once;
  ``LayHoSoTrucTuyen`` (not in OpenCPS: this simulator's) ``{"TuThuTu": exclusive cursor (0), "SoLuong": 1..100
  (50)}`` → the unit's online dossiers with ``ThuTu > TuThuTu``, ascending, and ``ConTiep`` (more to come);
  ``LayDanhSachTTHC``, ``LayDanhMucCoQuan``, ``LayDanhMucLinhVuc`` ``{}``: catalogues, upper-case keys.
  Each call is all-or-nothing: every record is checked before any is stored.

Business answers are HTTP 200 ``{"error_code": n, "message"}`` (a number: OpenCPS reads it with ``getInt``)::

    1  session missing, unknown or expired        2  wrong credentials or dstcode
    3  invalid data: not a JSON object, a parameter or field unknown or missing, a number for a string, a date
       not yyyyMMddHHmmss, a MaTTHC not in the catalogue (messages name the fields, never the values)
    4  dossier not held (update, progress)        5  status change not allowed, or progress whose status is not
    6  dossier held (create), entry held             the dossier's
    9  madonvi missing                            10  unknown service        96  busy (injected)

With ``POST /_admin/push {"url", "secret": "whsec_..."}`` new online dossiers are also pushed, one
``POST url {"madonvi", "data": [...]}`` (:class:`schemas.portal.OnlineCallback`) per unit and batch, signed the
Standard Webhooks way (``webhook-id: portal-push-<uuid>``). One try: a failure is only counted.

Faults (``GET|POST|DELETE /_admin/faults``, :class:`FaultConfig`, seeded): ``error_rate`` answers HTTP
``error_status`` before anything, ``latency_ms`` (+ ``latency_jitter_ms``) delays (both on login too);
``busy_rate`` answers ``96`` before anything; ``expire_rate`` drops the presented session and answers ``1``;
``timeout_rate`` applies the call then hangs ``hang_seconds`` (the ambiguous case, counted per service as
``unanswered``); ``services`` limits the integration faults to those services (login then has none);
``session_ttl_seconds`` is the lifetime of sessions issued from then on.

Admin: ``GET /_admin/stats``, ``GET /_admin/dossiers[/{MaHoSo}]`` (each record with the entries it took, in
order, as ``QuaTrinhXuLy``: the admin's view, not the portal's answer), ``GET /_admin/issues`` (content issues),
``POST /_admin/online {"dossiers": [...]}`` (ThuTu assigned), ``POST /_admin/reset`` (everything but the ThuTu
counter). State lives in memory on the app's event loop; nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import itertools
import json
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from sandbox import workload as wl
from sandbox.faults import (
    ActiveFaults,
    Background,
    BaseFaults,
    PushConfig,
    add_fault_routes,
    add_push_routes,
    add_state_routes,
    error_response,
    json_body,
    latency_and_error,
    locations,
)
from schemas import portal as dvc
from schemas.vietnam import vn_today
from schemas.webhook import sign

OK_MESSAGE = "Thành công"
PUSH_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
PUSH_BATCH = 500  # OnlineCallback's limit
_JSON = "application/json"
# Field (lĩnh vực) of a procedure, from the department that handles it first.
_FIELD_CODES = {
    wl.JUSTICE: "G09-TP", wl.LAND_OFFICE: "G09-TN", wl.ENVIRONMENT: "G09-TN", wl.URBAN: "G09-XD", wl.FINANCE: "G09-KH",
    wl.ECONOMY: "G09-CT", wl.POLICE: "G09-CA", wl.BUSINESS_OFFICE: "G09-KH", wl.BUILDING: "G09-XD",
    wl.LAND_AUTHORITY: "G09-TN", wl.JUSTICE_SERVICE: "G09-TP",
}
FIELD_NAMES = {
    "G09-TP": "Hộ tịch, chứng thực", "G09-TN": "Đất đai, môi trường", "G09-XD": "Xây dựng, quy hoạch",
    "G09-KH": "Đầu tư, tài chính", "G09-CT": "Công thương", "G09-CA": "Đăng ký, quản lý cư trú",
    "G09-KHAC": "Lĩnh vực khác",
}
AGENCIES = (  # CAPDONVI 1: the province's; 3: the commune's (the district's 2 is no more)
    ("000.21.00.H49", "UBND phường Hồng Gai", "3"),
    ("000.00.01.H49", "Trung tâm Phục vụ hành chính công tỉnh Quảng Ninh", "1"),
    ("000.00.07.H49", "Sở Nông nghiệp và Môi trường tỉnh Quảng Ninh", "1"),
    ("000.00.04.H49", "Sở Tư pháp tỉnh Quảng Ninh", "1"),
    ("000.00.08.H49", "Sở Xây dựng tỉnh Quảng Ninh", "1"),
)
_EXTRA_FILES = ("Bản chụp căn cước công dân", "Giấy ủy quyền", "Ảnh chụp giấy tờ liên quan", "Bản khai bổ sung")


def default_catalogue() -> dict[str, tuple[str, str]]:
    """Every procedure of the workload, a ward's and the provincial centre's (:data:`sandbox.workload.PROCEDURES`,
    :data:`~sandbox.workload.CENTRE_PROCEDURES`): MaTTHC → (TenTTHC, MaLinhVuc)."""
    return {p.code: (p.name, _FIELD_CODES.get(p.route[0][0], "G09-KHAC"))
            for p in (*wl.PROCEDURES, *wl.CENTRE_PROCEDURES)}


class FaultConfig(BaseFaults):
    """Faults injected into the portal's answers."""

    busy_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    hang_seconds: float = Field(30.0, ge=0, le=3600)
    expire_rate: float = Field(0.0, ge=0, le=1)
    session_ttl_seconds: float | None = Field(None, gt=0, le=7 * 86400)
    services: list[str] | None = Field(None, description="the integration services the faults hit (None: all)")


_ActiveFaults = ActiveFaults[FaultConfig]


def _reply(code: str | int, message: str, **extra: Any) -> dict[str, Any]:
    return {"error_code": int(dvc.normalise_code(code)), "message": message, **extra}


def _describe(exc: ValidationError, what: str = "trường") -> str:
    """The fields at fault, in Vietnamese; never their values (they hold personal data)."""
    kinds: dict[str, list[str]] = {"missing": [], "unknown": [], "date": [], "type": [], "value": []}
    for err in exc.errors(include_url=False, include_context=False):
        name = ".".join(str(p) for p in err["loc"]) or "bản ghi"
        kind = err["type"]
        if kind == "missing" or err.get("input") == "":
            kinds["missing"].append(name)
        elif kind == "extra_forbidden":
            kinds["unknown"].append(name)
        elif kind == "portal_date":
            kinds["date"].append(name)
        elif kind.endswith("_type") or not isinstance(err.get("input"), str | list | dict):
            kinds["type"].append(name)
        else:
            kinds["value"].append(name)
    titles = {"missing": f"Thiếu {what} bắt buộc", "unknown": f"{what.capitalize()} không được hỗ trợ",
              "type": "Sai kiểu dữ liệu (phải là chuỗi hoặc danh sách)", "value": f"Sai giá trị {what}"}
    parts = [f"{titles[k]}: {', '.join(names)}" for k, names in kinds.items() if names and k != "date"]
    parts += [f"Sai định dạng {name} (yyyyMMddHHmmss)" for name in kinds["date"]]
    return "; ".join(parts)


def _validate(model: type[BaseModel], item: Any, index: int) -> tuple[dict[str, Any], str | None]:
    """The item validated and dumped whole, or the "03" message naming what is wrong in record ``index``."""
    try:
        return model.model_validate(item).model_dump(mode="json"), None
    except ValidationError as exc:
        return {}, f"{_describe(exc)} (bản ghi thứ {index})"


class PortalState:
    """Sessions, dossiers with the entries taken, online dossiers, counters and faults of one portal."""

    def __init__(
        self, *, username: str, password: str, dstcode: str, catalogue: Mapping[str, tuple[str, str]],
        session_ttl_seconds: float, online_service: str = dvc.ONLINE,
    ) -> None:
        self.username = username
        self.password = password
        self.dstcode = dstcode
        self.catalogue = dict(catalogue)
        self.default_ttl = session_ttl_seconds
        self._thu_tu = itertools.count(1)
        self.generation = 0
        self.background = Background(PUSH_TIMEOUT)
        self.services: dict[str, Callable[[str, Any], dict[str, Any]]] = {
            dvc.LOOKUP: self.lookup, dvc.SYNC: self.sync, dvc.PROGRESS: self.add_progress,
            online_service: self.online_page, dvc.PROCEDURE: self.procedure, dvc.CATALOGUE: self.procedures,
            dvc.AGENCIES: self.agencies, dvc.FIELDS: self.fields,
        }
        # the online dossiers' service is this simulator's, under the name the destination gives it
        self.params = {name: model for name, model in dvc.PARAMS.items() if name != dvc.ONLINE}
        self.params[online_service] = dvc.OnlineParams
        self.reset()

    def reset(self) -> None:
        """Forget everything but the ThuTu counter; pushes still in flight no longer count."""
        self.generation += 1
        self.sessions: dict[str, float] = {}
        self.dossiers: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.keys: dict[str, set[tuple[str, str, str]]] = {}
        self.issues: dict[tuple[str, str], str] = {}
        self.online: dict[str, list[dict[str, Any]]] = {}
        self.faults: _ActiveFaults | None = None
        self.push: PushConfig | None = None
        self.counters: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.unanswered: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "logins": {"ok": c["login_ok"], "refused": c["login_refused"]},
            "sessions_expired": c["sessions_expired"],
            "calls": dict(self.calls),
            "answers": dict(self.answers),
            "repeated_progress": c["repeated_progress"],
            "unanswered": dict(self.unanswered),
            "faults": {kind: self.injected[kind] for kind in ("error", "busy", "timeout", "expire")},
            "online": {"added": c["online_added"], "pushed": c["pushed"], "push_failed": c["push_failed"]},
            "dossiers": len(self.dossiers),
            "content_issues": len(self.issues),
        }

    def count(self, answer: dict[str, Any]) -> dict[str, Any]:
        self.answers[dvc.normalise_code(answer["error_code"])] += 1
        return answer

    def view(self, code: str) -> dict[str, Any]:
        return {**self.dossiers[code], "QuaTrinhXuLy": list(self.history[code])}

    def session_ttl(self) -> float:
        configured = self.faults.config.session_ttl_seconds if self.faults else None
        return configured if configured is not None else self.default_ttl

    def login(self, dstcode: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            return _reply(dvc.INVALID_DATA, "Dữ liệu đăng nhập không phải đối tượng JSON")
        try:
            given = dvc.Login.model_validate(body)
        except ValidationError as exc:
            return _reply(dvc.INVALID_DATA, _describe(exc, "tham số"))
        if not (dstcode == self.dstcode and hmac.compare_digest(given.username.encode(), self.username.encode())
                and hmac.compare_digest(given.password.encode(), self.password.encode())):
            self.counters["login_refused"] += 1
            return _reply(dvc.LOGIN_REFUSED, "Sai tên đăng nhập, mật khẩu hoặc dstcode")
        now = time.monotonic()
        if len(self.sessions) > 10_000:
            self.sessions = {token: until for token, until in self.sessions.items() if until > now}
        token = secrets.token_urlsafe(32)
        self.sessions[token] = now + self.session_ttl()
        self.counters["login_ok"] += 1
        return _reply(0, OK_MESSAGE, session=token)

    def call(self, dstcode: str | None, body: Any, faults: _ActiveFaults | None) -> dict[str, Any]:
        """One integration call, the injected expiry included: the envelope checked, then the service's
        parameters, then the service."""
        if dstcode != self.dstcode:
            return _reply(dvc.LOGIN_REFUSED, "dstcode không hợp lệ")
        if not isinstance(body, dict):
            return _reply(dvc.INVALID_DATA, "Dữ liệu gửi lên không phải đối tượng JSON")
        token = body.get("session")
        token = token if isinstance(token, str) else ""
        until = self.sessions.get(token)
        if until is not None and until <= time.monotonic():
            del self.sessions[token]
            self.counters["sessions_expired"] += 1
            until = None
        if until is None or (faults is not None and faults.draw(faults.config.expire_rate)):
            if until is not None:
                del self.sessions[token]
                self.injected["expire"] += 1
            return _reply(dvc.SESSION_INVALID, "Phiên làm việc hết hạn hoặc không hợp lệ")
        unit = body.get("madonvi")
        if not isinstance(unit, str) or not unit.strip():
            return _reply(dvc.UNIT_REFUSED, "Thiếu mã đơn vị (madonvi)")
        service = str(body.get("service"))
        handler = self.services.get(service)
        if handler is None:
            return _reply(dvc.UNKNOWN_SERVICE, "Dịch vụ không tồn tại")
        self.calls[service] += 1
        try:
            params = self.params[service].model_validate({k: v for k, v in body.items() if k not in dvc.ENVELOPE})
        except ValidationError as exc:
            return _reply(dvc.INVALID_DATA, _describe(exc, "tham số"))
        return handler(unit, params)

    def lookup(self, unit: str, params: Any) -> dict[str, Any]:
        code = params.mahoso
        return _reply(0, OK_MESSAGE, result=[dict(self.dossiers[code])] if code in self.dossiers else [])

    def sync(self, unit: str, params: Any) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        status_after: dict[str, str] = {}  # as if the earlier records of this call were stored
        for index, item in enumerate(params.data, start=1):
            record, problem = _validate(dvc.DossierRecord, item, index)
            if problem:
                return _reply(dvc.INVALID_DATA, problem)
            code, procedure, new = record["MaHoSo"], record["MaTTHC"], record["TrangThaiHoSo"]
            if procedure not in self.catalogue:
                return _reply(dvc.INVALID_DATA, f"Mã TTHC {procedure} không có trong CSDL TTHC quốc gia")
            stored = self.dossiers.get(code)
            current = status_after.get(code) or (stored["TrangThaiHoSo"] if stored else None)
            if params.isUpdating == "False" and current is not None:
                return _reply(dvc.ALREADY_EXISTS, f"Hồ sơ {code} đã tồn tại")
            if params.isUpdating == "True" and current is None:
                return _reply(dvc.NOT_FOUND, f"Không tìm thấy hồ sơ {code}")
            if current is not None and not dvc.allowed_transition(current, new):
                return _reply(dvc.INVALID_TRANSITION,
                              f"Không được chuyển trạng thái hồ sơ {code} từ {current} sang {new}")
            status_after[code] = new
            records.append(record)
        for record in records:
            code = record["MaHoSo"]
            self.dossiers[code] = record
            self.history.setdefault(code, [])
            self.keys.setdefault(code, set())
            if dvc.looks_like_unit_code(record["DonViXuLy"]):
                self.issues[(code, "DonViXuLy")] = "mã đơn vị thay cho tên cơ quan xử lý"
            else:
                self.issues.pop((code, "DonViXuLy"), None)
        return _reply(0, OK_MESSAGE)

    def add_progress(self, unit: str, params: Any) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        seen: set[tuple[str, str, str]] = set()
        for index, item in enumerate(params.data, start=1):
            entry, problem = _validate(dvc.ProgressEntry, item, index)
            if problem:
                return _reply(dvc.INVALID_DATA, problem)
            code = entry["MaHoSo"]
            dossier = self.dossiers.get(code)
            if dossier is None:
                return _reply(dvc.NOT_FOUND, f"Không tìm thấy hồ sơ {code}")
            if entry["TrangThai"] != dossier["TrangThaiHoSo"]:
                return _reply(dvc.INVALID_TRANSITION, f"Tiến độ không khớp trạng thái hồ sơ {code}: "
                                                      f"tiến độ {entry['TrangThai']}, hồ sơ {dossier['TrangThaiHoSo']}")
            key = dvc.progress_key(entry)
            if key in self.keys[code] or key in seen:
                self.counters["repeated_progress"] += 1
                return _reply(dvc.ALREADY_EXISTS, f"Tiến độ của hồ sơ {code} lúc {key[2]} đã tồn tại "
                                                  f"(bản ghi thứ {index})")
            seen.add(key)
            entries.append(entry)
        for entry in entries:
            self.keys[entry["MaHoSo"]].add(dvc.progress_key(entry))
            self.history[entry["MaHoSo"]].append(entry)
        return _reply(0, OK_MESSAGE)

    def online_page(self, unit: str, params: Any) -> dict[str, Any]:
        dossiers = self.online.get(unit, [])
        start = bisect.bisect_right(dossiers, params.TuThuTu, key=lambda d: d["ThuTu"])
        end = start + params.SoLuong
        return _reply(0, OK_MESSAGE, result=dossiers[start:end], ConTiep=end < len(dossiers))

    def _procedure_row(self, code: str, name: str, field: str) -> dict[str, Any]:
        return {"MATTHC": code, "TENTTHC": name, "MALINHVUC": field, "CAPTHUCHIEN": "Cấp xã",
                "LINHVUCTHUCHIEN": [{"MALINHVUC": field, "TENLINHVUC": FIELD_NAMES.get(field, field)}]}

    def procedure(self, unit: str, params: Any) -> dict[str, Any]:
        """``LayThuTuc``: the procedure's details, ``result`` empty for a code the catalogue lacks."""
        found = self.catalogue.get(params.maTTHC)
        rows = [self._procedure_row(params.maTTHC, *found)] if found else []
        return _reply(0, OK_MESSAGE, result=rows)

    def procedures(self, unit: str, params: Any) -> dict[str, Any]:
        rows = [{"MATTHC": code, "TENTTHC": name} for code, (name, _) in self.catalogue.items()]
        return _reply(0, OK_MESSAGE, result=rows)

    def agencies(self, unit: str, params: Any) -> dict[str, Any]:
        rows = [{"MADONVI": c, "TENDONVI": name, "CAPDONVI": level} for c, name, level in AGENCIES]
        return _reply(0, OK_MESSAGE, result=rows)

    def fields(self, unit: str, params: Any) -> dict[str, Any]:
        rows = [{"MALINHVUC": c, "TENLINHVUC": name, "MANGANH": c.split("-")[0]} for c, name in FIELD_NAMES.items()]
        return _reply(0, OK_MESSAGE, result=rows)

    def add_online(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate every dossier (ValidationError if one is wrong), then give each the next ThuTu."""
        models = [dvc.OnlineDossier.model_validate({**item, "ThuTu": 1}) for item in items]
        stored = []
        for model in models:
            data = model.model_dump(mode="json", exclude_none=True) | {"ThuTu": next(self._thu_tu)}
            self.online.setdefault(model.MaDonVi, []).append(data)
            stored.append(data)
        self.counters["online_added"] += len(stored)
        return stored

    def start_push(self, dossiers: list[dict[str, Any]]) -> None:
        """Push the new dossiers in the background, if a target is configured."""
        if self.push is None or not dossiers:
            return
        self.background.spawn(self._push(self.push, dossiers, self.generation))

    async def _push(self, target: PushConfig, dossiers: list[dict[str, Any]], generation: int) -> None:
        by_unit: dict[str, list[dict[str, Any]]] = {}
        for dossier in dossiers:
            by_unit.setdefault(dossier["MaDonVi"], []).append(dossier)
        for unit, rows in by_unit.items():
            for start in range(0, len(rows), PUSH_BATCH):
                payload = {"madonvi": unit, "data": rows[start:start + PUSH_BATCH]}
                body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
                headers = sign(target.secret, f"portal-push-{uuid.uuid4()}", body).as_headers()
                headers["content-type"] = _JSON
                ok = await self.background.post(target.url, body, headers)
                if generation == self.generation:
                    self.counters["pushed" if ok else "push_failed"] += 1


def create_app(
    *,
    username: str,
    password: str,
    dstcode: str = "DVCQG",
    catalogue: Mapping[str, tuple[str, str]] | None = None,
    session_ttl_seconds: float = 1800,
    auth_path: str = dvc.AUTH_PATH,
    integration_path: str = dvc.INTEGRATION_PATH,
    online_service: str = dvc.ONLINE,
) -> FastAPI:
    """Build the portal simulator; ``catalogue`` (MaTTHC → (TenTTHC, MaLinhVuc)) defaults to
    :func:`default_catalogue`; ``online_service`` names the online dossiers' service (not in OpenCPS)."""
    state = PortalState(
        username=username, password=password, dstcode=dstcode,
        catalogue=default_catalogue() if catalogue is None else catalogue, session_ttl_seconds=session_ttl_seconds,
        online_service=online_service,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.background.close()

    app = FastAPI(title="motcua-relay sandbox: national public service portal", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.portal = state

    async def injected(faults: _ActiveFaults | None) -> Response | None:
        status = await latency_and_error(faults)
        if status is None:
            return None
        state.injected["error"] += 1
        return error_response(status, "injected fault")

    @app.post(auth_path)
    async def login(request: Request) -> Response:
        faults = state.faults if state.faults is None or state.faults.config.services is None else None
        failed = await injected(faults)
        if failed is not None:
            return failed
        answer = state.login(request.headers.get("dstcode"), await json_body(request))
        return JSONResponse(state.count(answer))

    @app.post(integration_path)
    async def integrate(request: Request) -> Response:
        body = await json_body(request)
        service = body.get("service") if isinstance(body, dict) else None
        faults = state.faults
        if faults is not None and faults.config.services is not None and service not in faults.config.services:
            faults = None
        failed = await injected(faults)
        if failed is not None:
            return failed
        if faults is not None and faults.draw(faults.config.busy_rate):
            state.injected["busy"] += 1
            return JSONResponse(state.count(_reply(dvc.BUSY, "Hệ thống đang bận")))
        answer = state.call(request.headers.get("dstcode"), body, faults)
        if faults is not None and faults.draw(faults.config.timeout_rate):
            state.injected["timeout"] += 1
            state.unanswered[str(service)] += 1
            await asyncio.sleep(faults.config.hang_seconds)
        return JSONResponse(state.count(answer))

    add_fault_routes(app, state, FaultConfig)

    @app.get("/_admin/dossiers")
    async def dossiers() -> dict[str, Any]:
        return {code: state.view(code) for code in state.dossiers}

    @app.get("/_admin/dossiers/{code}")
    async def dossier(code: str) -> Response:
        if code not in state.dossiers:
            return error_response(404, f"unknown dossier {code!r}")
        return JSONResponse(state.view(code))

    @app.get("/_admin/issues")
    async def issues() -> list[dict[str, str]]:
        return [{"MaHoSo": code, "field": name, "issue": text} for (code, name), text in state.issues.items()]

    @app.post("/_admin/online")
    async def add_online(request: Request) -> Response:
        body = await json_body(request)
        items = body.get("dossiers") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            return error_response(422, 'expected {"dossiers": [objects]}')
        try:
            stored = state.add_online(items)
        except ValidationError as exc:
            return error_response(422, "invalid online dossier: " + locations(exc))
        state.start_push(stored)
        return JSONResponse(stored)

    add_push_routes(app, state)
    add_state_routes(app, state)
    return app


def online_dossiers(
    count: int, *, unit_code: str = "000.21.00.H49", day: date | None = None, seed: int = 0, start: int = 9001
) -> list[dict[str, Any]]:
    """Online dossiers citizens and businesses submitted to ``unit_code`` on ``day`` (without ThuTu).

    Pass them to ``POST /_admin/online``. ``day`` defaults to today in Vietnam; with it given the
    result depends on ``seed`` only.
    """
    day = day or vn_today()
    rng = random.Random(seed)
    weighted = tuple((p, p.weight) for p in wl.PROCEDURES)
    out: list[dict[str, Any]] = []
    for n in range(start, start + count):
        procedure = wl._weighted(rng, weighted)
        applicant = wl._business(rng) if rng.random() < procedure.business_share else wl._citizen(rng)
        submitted = wl._clock(day, rng.randrange(wl.WORKING_SECONDS))
        files = [*procedure.documents, *_EXTRA_FILES][: rng.randint(1, 4)]
        address = applicant["address"]
        dossier: dict[str, Any] = {
            "MaHoSo": f"{unit_code}-{day:%y%m%d}-{n:04d}",
            "MaDonVi": unit_code,
            "MaTTHC": procedure.code,
            "TenTTHC": procedure.name,
            "NgayNopHoSo": submitted.strftime("%Y%m%d%H%M%S"),
            "ChuHoSo": applicant["name"],
            "LoaiDoiTuong": "2" if applicant["kind"] == "business" else "1",
            "SoGiayToChuHoSo": applicant["id_number"],
            "DiaChi": address["street"],
            "PhuongXa": address["ward"],
            "TinhThanh": address["province"],
            "DongYNhanZalo": bool(applicant.get("zalo_consent", False)),
            "DanhSachTepDinhKem": [
                {"TenTep": f"{name}.pdf", "MaBam": wl._digest(rng), "KichThuoc": rng.randint(60_000, 5_000_000)}
                for name in files
            ],
        }
        if address.get("district"):  # an address of before 1 July 2025; two levels since
            dossier["QuanHuyen"] = address["district"]
        for field, key in (("SoDienThoai", "phone"), ("Email", "email")):
            if applicant.get(key):
                dossier[field] = applicant[key]
        out.append(dossier)
    return out
