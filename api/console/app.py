"""The operator console, served by the API under ``/console``: server-rendered pages (Jinja2), no front-end build.

An IT centre's operators answer "was this dossier synced, did the citizen get the message, why did this payment
not arrive?" here instead of in the logs:

- ``/console/`` — per destination, delivered / retrying / dead in the last hour and day, what is open and how
  old the oldest is, the circuit breaker, and a chart of deliveries and failed attempts per hour;
- ``/console/deadletters`` — dead letters with filters (destination, dossier, reason), the reason and the last
  answer, replay of one or of all that match;
- ``/console/dossiers/<code>`` — one dossier's timeline: every event, delivery and attempt across destinations;
  the citizen's name, phone and ID masked unless the operator asks (``reveal``, logged with who and which
  dossier, never the values);
- ``/console/reports`` — the day's reconciliation lines and the portal sync report.

Labels in Vietnamese, English with ``?lang=en`` (kept in a cookie). Accounts and sessions: :mod:`api.console.auth`;
lock-outs and open sessions: :mod:`api.console.state`; the headers of every answer: :mod:`api.headers`.

Whatever a query parameter, form field or path holds, the answer is a page: what the ledger or a parser cannot
take (a NUL, which PostgreSQL refuses even in a query; a time without its zone; a day out of the calendar's range;
an id out of range; too long) is a 400 naming the field, never repeating its value.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import AfterValidator, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.console.auth import COOKIE, SESSION_SECONDS, ConsoleAuth
from api.console.state import ConsoleState, LockOut, StateUnavailable
from schemas.privacy import mask_value
from schemas.vietnam import VN_TZ, day_bounds, vnd
from store import deadletters, overview, payments, queries
from store.reports import portal_sync_report
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
STYLE = (Path(__file__).parent / "static" / "console.css").read_bytes()
STYLE_VERSION = hashlib.sha256(STYLE).hexdigest()[:12]
PAGE = 50
MAX_BODY = 64 * 1024  # the console's forms are a few fields
MAX_IDS = 500  # dead letters replayed by id in one form (a page shows PAGE)

LABELS: dict[str, dict[str, str]] = {
    "overview": {"vi": "Tổng quan", "en": "Overview"},
    "deadletters": {"vi": "Gửi thất bại", "en": "Dead letters"},
    "reports": {"vi": "Báo cáo", "en": "Reports"},
    "dossier": {"vi": "Hồ sơ", "en": "Dossier"},
    "search": {"vi": "Tra cứu mã hồ sơ", "en": "Find a dossier code"},
    "logout": {"vi": "Đăng xuất", "en": "Log out"},
    "login": {"vi": "Đăng nhập", "en": "Log in"},
    "username": {"vi": "Tài khoản", "en": "Account"},
    "password": {"vi": "Mật khẩu", "en": "Password"},
    "bad_login": {"vi": "Sai tài khoản hoặc mật khẩu", "en": "Wrong account or password"},
    "locked": {"vi": "Tạm khóa đăng nhập vì sai quá nhiều lần. Thử lại sau {minutes} phút.",
               "en": "Log-in locked after too many failures. Try again in {minutes} min."},
    "unavailable": {"vi": "Không đọc được trạng thái phiên làm việc (Redis không trả lời): thử lại sau ít phút",
                    "en": "The sessions' state cannot be read (Redis does not answer): try again in a few minutes"},
    "invalid": {"vi": "Yêu cầu không hợp lệ", "en": "Invalid request"},
    "invalid_fields": {"vi": "Không đọc được giá trị của: {fields} (sai định dạng, quá dài hoặc có ký tự lạ).",
                       "en": "These values cannot be read: {fields} (wrong format, too long or a stray character)."},
    "back": {"vi": "Về trang tổng quan", "en": "Back to the overview"},
    "dossier_code": {"vi": "Mã hồ sơ", "en": "Dossier code"},
    "ids": {"vi": "Lượt gửi đã chọn", "en": "Chosen deliveries"},
    "scope": {"vi": "Phạm vi gửi lại", "en": "Replay scope"},
    "form_token": {"vi": "Mã biểu mẫu", "en": "Form token"},
    "next": {"vi": "Trang cần mở", "en": "Page to open"},
    "form": {"vi": "Nội dung biểu mẫu", "en": "The form"},
    "destination": {"vi": "Đích nhận", "en": "Destination"},
    "last_hour": {"vi": "1 giờ qua", "en": "Last hour"},
    "last_day": {"vi": "24 giờ qua", "en": "Last 24 hours"},
    "delivered": {"vi": "Đã gửi", "en": "Delivered"},
    "retrying": {"vi": "Đang thử lại", "en": "Retrying"},
    "dead": {"vi": "Thất bại", "en": "Dead"},
    "open": {"vi": "Đang chờ", "en": "Open"},
    "lag": {"vi": "Độ trễ (trung vị, 1 giờ)", "en": "Lag (median, 1 h)"},
    "oldest": {"vi": "Chờ lâu nhất", "en": "Oldest"},
    "breaker": {"vi": "Ngắt mạch", "en": "Breaker"},
    "breaker_open": {"vi": "Đang ngắt", "en": "Open"},
    "breaker_closed": {"vi": "Bình thường", "en": "Closed"},
    "chart": {"vi": "Gửi thành công và lần gửi lỗi theo giờ (24 giờ)",
              "en": "Delivered and failed attempts per hour (24 h)"},
    "failed_attempts": {"vi": "Lần gửi lỗi", "en": "Failed attempts"},
    "filter": {"vi": "Lọc", "en": "Filter"},
    "reason": {"vi": "Lý do", "en": "Reason"},
    "last_answer": {"vi": "Phản hồi cuối", "en": "Last answer"},
    "when": {"vi": "Thời điểm", "en": "When"},
    "attempts": {"vi": "Số lần", "en": "Attempts"},
    "event": {"vi": "Sự kiện", "en": "Event"},
    "replay": {"vi": "Gửi lại", "en": "Replay"},
    "replay_all": {"vi": "Gửi lại tất cả kết quả lọc", "en": "Replay all that match"},
    "replayed": {"vi": "Đã đưa lại vào hàng đợi", "en": "Queued again"},
    "none": {"vi": "Không có", "en": "None"},
    "timeline": {"vi": "Diễn biến", "en": "Timeline"},
    "applicant": {"vi": "Công dân", "en": "Applicant"},
    "reveal": {"vi": "Hiện thông tin cá nhân (được ghi nhật ký)", "en": "Reveal personal data (logged)"},
    "what": {"vi": "Nội dung", "en": "What"},
    "status": {"vi": "Trạng thái", "en": "Status"},
    "deliveries": {"vi": "Lượt gửi", "en": "Deliveries"},
    "reconciliation": {"vi": "Đối soát thanh toán", "en": "Payment reconciliation"},
    "portal_sync": {"vi": "Đồng bộ Cổng DVC quốc gia", "en": "National portal sync"},
    "day": {"vi": "Ngày", "en": "Day"},
    "outcome": {"vi": "Kết quả", "en": "Outcome"},
    "bill": {"vi": "Hóa đơn", "en": "Bill"},
    "amount": {"vi": "Số tiền", "en": "Amount"},
    "closed": {"vi": "Bảng điều khiển chưa được cấu hình: đặt MOTCUA_CONSOLE_SECRET và MOTCUA_CONSOLE_OPERATORS",
               "en": "The console is not configured: set MOTCUA_CONSOLE_SECRET and MOTCUA_CONSOLE_OPERATORS"},
    "more": {"vi": "Trang sau", "en": "Next page"},
}


def _audit(event: str, **fields: Any) -> None:
    """What an operator did (log in, replay, reveal personal data): a warning of its own logger, never values."""
    structlog.get_logger("motcua.console.audit").warning(event, **fields)


def _lang(request: Request) -> str:
    wanted = request.query_params.get("lang") or request.cookies.get("motcua_lang") or "vi"
    return wanted if wanted in ("vi", "en") else "vi"


def _t(request: Request, key: str) -> str:
    return LABELS.get(key, {}).get(_lang(request), key)


def _render(request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None,
            **context: Any) -> HTMLResponse:
    lang = _lang(request)
    html = TEMPLATES.get_template(name).render(
        t=lambda key: LABELS.get(key, {}).get(lang, key), lang=lang, vn=_vn, age=_age, money=vnd,
        path=request.url.path, style_version=STYLE_VERSION, **context)
    response = HTMLResponse(html, status_code=status, headers=headers)
    if request.query_params.get("lang") in ("vi", "en"):
        response.set_cookie("motcua_lang", lang, max_age=365 * 86400, samesite="strict", httponly=True)
    return response


def _vn(moment: datetime | None) -> str:
    return moment.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S") if moment else "—"


def _age(seconds: float) -> str:
    if not seconds:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Closed(Exception):
    pass


class Invalid(Exception):
    """Console input the ledger or a parser cannot take: a 400 page naming the fields, never their values."""

    def __init__(self, *fields: str) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


# a parameter's label where it is not the parameter's own name
_FIELD_LABELS = {"before": "more", "code": "dossier_code", "csrf": "form_token", "q": "search"}


def _invalid(request: Request, fields: Iterable[str]) -> Response:
    names = ", ".join(dict.fromkeys(_t(request, _FIELD_LABELS.get(field, field)) for field in fields))
    log.info("console.invalid_input", path=request.url.path, fields=names)
    return _render(request, "invalid.html", status=400, operator=None,
                   message=_t(request, "invalid_fields").format(fields=names))


def _field(location: tuple[Any, ...]) -> str:
    """The parameter a validation error is about: ``("query", "day")`` → ``day``, ``("body", "ids", 3)`` → ``ids``."""
    return str(location[1] if len(location) > 1 else location[0])


class _ConsoleRoute(APIRoute):
    """A console route: input that does not validate, or that a page finds it cannot use (:class:`Invalid`), is
    the 400 page in the operator's language; Redis not answering is a 503 page saying so."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _invalid(request, (_field(tuple(error["loc"])) for error in exc.errors()))
            except HTTPException as exc:
                if exc.status_code != 400:  # a body that is no form: the parser's refusal
                    raise
                return _invalid(request, ["form"])
            except Invalid as exc:
                return _invalid(request, exc.fields)
            except StateUnavailable as exc:
                log.error("console.state_unavailable", error=str(exc))
                return _render(request, "closed.html", status=503, reason="unavailable")

        return guarded


router = APIRouter(prefix="/console", include_in_schema=False, route_class=_ConsoleRoute, max_body_size=MAX_BODY)


def _storable(value: str) -> str:
    if "\x00" in value:  # PostgreSQL refuses NUL in text, even in a query's parameter
        raise ValueError("NUL character")
    return value


Text = Annotated[str, StringConstraints(max_length=200), AfterValidator(_storable)]
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _auth() -> ConsoleAuth:
    auth = ConsoleAuth.from_env()
    if auth is None:
        raise Closed
    return auth


def _state() -> ConsoleState:
    rt = get_runtime()
    settings = rt.settings
    lockout = LockOut(settings.console_lockout_account, settings.console_lockout_address,
                      settings.console_lockout_seconds)
    return ConsoleState(rt.redis, settings.redis_prefix, lockout)


async def _who(request: Request) -> tuple[ConsoleAuth, str, str] | Response:
    """The console's auth, the operator and the session cookie; or the answer sending them to log in (a cookie
    that is not ours, has expired, or whose session was closed by logging out)."""
    try:
        auth = _auth()
    except Closed:
        return _render(request, "closed.html", status=503)
    cookie = request.cookies.get(COOKIE)
    session = auth.read(cookie)
    if session is None or cookie is None or not await run_in_threadpool(_state().is_open, session):
        target = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""), safe="")
        return RedirectResponse(f"/console/login?next={target}", status_code=303)
    return auth, session.operator, cookie


def _next(target: str) -> str:
    return target if target.startswith("/console") else "/console/"


@router.get("/static/console.css", include_in_schema=False)
async def style() -> Response:
    return Response(STYLE, media_type="text/css", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "/console/") -> Response:
    try:
        _auth()
    except Closed:
        return _render(request, "closed.html", status=503)
    return _render(request, "login.html", next=_next(next), error="")


@router.post("/login")
async def login(request: Request, username: Annotated[str, Form(max_length=100)],
                password: Annotated[str, Form(max_length=1024)],
                next: Annotated[str, Form(max_length=2000)] = "/console/") -> Response:
    """Log in, unless the account or the address is locked out (429, the password not even checked)."""
    try:
        auth = _auth()
    except Closed:
        return _render(request, "closed.html", status=503)
    state, address = _state(), request.client.host if request.client else "-"
    admitted = await run_in_threadpool(state.admit, username, address)
    if admitted.wait:
        log.warning("console.login_throttled", operator=username[:40], address=address,
                    retry_after=math.ceil(admitted.wait))
        message = _t(request, "locked").format(minutes=math.ceil(admitted.wait / 60))
        return _render(request, "login.html", status=429, headers={"Retry-After": str(math.ceil(admitted.wait))},
                       next=_next(next), error=message)
    if not await run_in_threadpool(auth.login, username, password):
        log.warning("console.login_refused", operator=username[:40], address=address)
        limits = state.lockout
        if admitted.account_count == limits.account or admitted.address_count == limits.address:
            log.warning("console.login_locked", operator=username[:40], address=address,
                        account_failures=admitted.account_count, address_failures=admitted.address_count,
                        seconds=limits.window)
        return _render(request, "login.html", status=401, next=_next(next), error=_t(request, "bad_login"))
    cookie, session = auth.session(username)

    def open_session() -> None:
        state.succeeded(username, address)
        state.open_session(session)
        earlier = auth.read(request.cookies.get(COOKIE))
        if earlier is not None:
            state.close_session(earlier)

    await run_in_threadpool(open_session)
    _audit("console.login", operator=username, address=address)
    response = RedirectResponse(_next(next), status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/console")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Close the session in the state (its cookie, kept or copied, no longer opens anything) and drop the cookie."""
    auth = ConsoleAuth.from_env()
    session = auth.read(request.cookies.get(COOKIE)) if auth is not None else None
    if session is not None:
        await run_in_threadpool(_state().close_session, session)
        _audit("console.logout", operator=session.operator)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    now = datetime.now(UTC)

    def read() -> tuple[list[Any], list[tuple[datetime, int, int]], dict[str, bool]]:
        names = list(rt.routing.destinations)
        rows, hours = overview.read(rt.engine, names, now)
        return rows, hours, {name: bool(rt.protection.state(name)["open"]) for name in names}

    rows, hours, breakers = await run_in_threadpool(read)
    return _render(request, "overview.html", operator=who[1], csrf=who[0].csrf_token(who[2]), rows=rows,
                   breakers=breakers, chart=_chart(hours))


def _chart(hours: list[tuple[datetime, int, int]], width: int = 720, height: int = 160) -> dict[str, Any]:
    """Bars for an inline SVG: delivered (up) and failed attempts (down) per hour."""
    top = max([1] + [max(d, f) for _, d, f in hours])
    step = width / max(1, len(hours))
    half = height / 2
    bars = []
    for n, (hour, delivered, failed) in enumerate(hours):
        up, down = half * delivered / top, half * failed / top
        bars.append({"x": round(n * step + 1, 1), "w": round(step - 2, 1), "up_y": round(half - up, 1),
                     "up_h": round(up, 1), "down_h": round(down, 1), "label": hour.astimezone(VN_TZ).strftime("%H"),
                     "delivered": delivered, "failed": failed})
    return {"width": width, "height": height, "half": half, "bars": bars, "top": top,
            "delivered": sum(d for _, d, _ in hours), "failed": sum(f for _, _, f in hours)}


def _filter(destination: str, dossier: str, reason: str, ids: tuple[int, ...] = ()) -> deadletters.DeadLetterFilter:
    return deadletters.DeadLetterFilter(destination=destination or None, dossier_code=dossier or None,
                                        reason=reason or None, ids=ids)


@router.get("/deadletters", response_class=HTMLResponse)
async def deadletters_page(request: Request, destination: Text = "", dossier: Text = "", reason: Text = "",
                           before: Text = "", replayed: Text = "") -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    flt = _filter(destination, dossier, reason)
    before_row = _cursor(before)
    rows = await run_in_threadpool(deadletters.dead_letters, rt.engine, flt, PAGE + 1, before_row)
    more, rows = len(rows) > PAGE, rows[:PAGE]
    excerpts = await run_in_threadpool(deadletters.last_answers, rt.engine, [r.id for r in rows])
    params = {k: v for k, v in request.query_params.items() if k in ("destination", "dossier", "reason") and v}
    next_page = None
    if more:
        keyset = f"{rows[-1].updated_at.isoformat()}|{rows[-1].id}"
        next_page = f"/console/deadletters?{urlencode({**params, 'before': keyset})}"
    return _render(request, "deadletters.html", operator=who[1], csrf=who[0].csrf_token(who[2]), rows=rows,
                   excerpts=excerpts, destinations=sorted(rt.routing.destinations), flt=flt,
                   query=urlencode(params), replayed=replayed if replayed.isdigit() else None, next_page=next_page)


def _cursor(value: str) -> tuple[datetime, int] | None:
    """The keyset of the next page: ``<updated_at ISO>|<id>`` of the last row shown (with its time zone)."""
    if not value:
        return None
    moment, _, row_id = value.partition("|")
    try:
        when, number = datetime.fromisoformat(moment), int(row_id)
        if when.tzinfo is None or not 1 <= number < 2**63:
            raise ValueError(value)
        return when.astimezone(UTC), number
    except (ValueError, OverflowError):
        raise Invalid("before") from None


@router.post("/deadletters/replay")
async def replay(request: Request, csrf: Annotated[str, Form(max_length=64)],
                 ids: Annotated[list[RowId], Form(default_factory=list, max_length=MAX_IDS)],
                 scope: Annotated[Literal["one", "all"], Form()] = "one", destination: Text = "", dossier: Text = "",
                 reason: Text = "") -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    auth, operator, cookie = who
    if not auth.csrf_ok(cookie, csrf):
        return Response("invalid form token", status_code=403)
    if scope != "all" and not ids:
        return RedirectResponse(f"/console/deadletters?{request.url.query}", status_code=303)
    flt = _filter(destination, dossier, reason, () if scope == "all" else tuple(ids))
    rt = get_runtime()

    def run() -> int:
        deadlines = {name: d.retry.deadline for name, d in rt.routing.destinations.items()}
        queued = deadletters.replay(rt.engine, flt, deadlines, datetime.now(UTC))
        rt.enqueue(queued)
        return len(queued)

    count = await run_in_threadpool(run)
    _audit("console.replay", operator=operator, count=count, scope=scope, destination=flt.destination,
             dossier_code=flt.dossier_code)
    query = "&".join(p for p in (request.url.query, f"replayed={count}") if p)
    return RedirectResponse(f"/console/deadletters?{query}", status_code=303)


@router.get("/search")
async def search(request: Request, q: Text = "") -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    code = q.strip()
    return RedirectResponse(f"/console/dossiers/{quote(code, safe='')}" if code else "/console/", status_code=303)


DossierCode = Annotated[str, PathParam(max_length=200), AfterValidator(_storable)]


@router.get("/dossiers/{code}", response_class=HTMLResponse)
async def dossier_page(request: Request, code: DossierCode) -> Response:
    return await _dossier(request, code, reveal=False)


@router.post("/dossiers/{code}/reveal", response_class=HTMLResponse)
async def dossier_reveal(request: Request, code: DossierCode, csrf: Annotated[str, Form(max_length=64)]) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    if not who[0].csrf_ok(who[2], csrf):
        return Response("invalid form token", status_code=403)
    _audit("console.reveal", operator=who[1], dossier_code=code)
    return await _dossier(request, code, reveal=True)


async def _dossier(request: Request, code: str, reveal: bool) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    evs, dels, atts = await run_in_threadpool(queries.dossier_trace, get_runtime().engine, code)
    if not evs:
        return _render(request, "dossier.html", status=404, operator=who[1], csrf=who[0].csrf_token(who[2]),
                       code=code, rows=[], deliveries=[], applicant=None, reveal=reveal)
    applicant = json.loads(evs[0].payload).get("applicant") or {}
    shown = {key: (str(applicant.get(key)) if reveal else mask_value(str(applicant.get(key))))
             for key in ("name", "id_number", "phone") if applicant.get(key)}
    by_id = {d.id: d for d in dels}
    rows: list[dict[str, Any]] = [
        {"at": e.received_at, "kind": "event", "what": e.type, "destination": "",
         "detail": f"{e.origin} · #{e.sequence}"} for e in evs]
    for a in atts:
        rows.append({"at": a.started_at, "kind": "attempt", "what": f"#{a.number}",
                     "destination": by_id[a.delivery_id].destination, "detail": queries.describe_attempt(a, " · "),
                     "outcome": a.outcome})
    rows.sort(key=lambda r: r["at"])
    return _render(request, "dossier.html", operator=who[1], csrf=who[0].csrf_token(who[2]), code=code, rows=rows,
                   deliveries=sorted(dels, key=lambda d: (d.destination, d.sequence)), applicant=shown, reveal=reveal)


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(request: Request, day: Text = "") -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    shown = _day(day) if day else (datetime.now(VN_TZ) - timedelta(days=1)).date()
    payers = [n for n, d in rt.routing.destinations.items() if d.kind == "payment"]
    portals = [n for n, d in rt.routing.destinations.items() if d.kind == "portal"]

    def read() -> tuple[dict[str, list[Any]], list[Any]]:
        lines = {name: payments.stored_lines(rt.engine, name, shown.isoformat()) for name in payers}
        return lines, (portal_sync_report(rt.engine, portals, shown) if portals else [])

    lines, sync = await run_in_threadpool(read)
    return _render(request, "reports.html", operator=who[1], csrf=who[0].csrf_token(who[2]), day=shown, lines=lines,
                   sync=sync)


def _day(value: str) -> date:
    """A calendar day ``YYYY-MM-DD`` whose Vietnam day has UTC bounds (not the calendar's first or last)."""
    try:
        day = date.fromisoformat(value)
        day_bounds(day)
    except (ValueError, OverflowError):
        raise Invalid("day") from None
    return day
