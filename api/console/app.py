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

Labels in Vietnamese, English with ``?lang=en`` (kept in a cookie). Accounts and sessions: :mod:`api.console.auth`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from api.console.auth import COOKIE, SESSION_SECONDS, ConsoleAuth
from schemas.privacy import mask_value
from schemas.vietnam import VN_TZ, vnd
from store import deadletters, overview, payments, queries
from store.reports import portal_sync_report
from tasks.runtime import get_runtime

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/console", include_in_schema=False)
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
STYLE = (Path(__file__).parent / "static" / "console.css").read_bytes()
STYLE_VERSION = hashlib.sha256(STYLE).hexdigest()[:12]
PAGE = 50

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


def _render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = _lang(request)
    html = TEMPLATES.get_template(name).render(
        t=lambda key: LABELS.get(key, {}).get(lang, key), lang=lang, vn=_vn, age=_age, money=vnd,
        path=request.url.path, style_version=STYLE_VERSION, **context)
    response = HTMLResponse(html, status_code=status)
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


def _auth() -> ConsoleAuth:
    auth = ConsoleAuth.from_env()
    if auth is None:
        raise Closed
    return auth


def _who(request: Request) -> tuple[ConsoleAuth, str, str] | Response:
    """The console's auth, the operator and the session cookie; or the answer sending them to log in."""
    try:
        auth = _auth()
    except Closed:
        return _render(request, "closed.html", status=503)
    cookie = request.cookies.get(COOKIE)
    name = auth.operator(cookie)
    if name is None or cookie is None:
        target = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""), safe="")
        return RedirectResponse(f"/console/login?next={target}", status_code=303)
    return auth, name, cookie


@router.get("/static/console.css", include_in_schema=False)
async def style() -> Response:
    return Response(STYLE, media_type="text/css", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/console/") -> Response:  # the form field's name
    try:
        _auth()
    except Closed:
        return _render(request, "closed.html", status=503)
    return _render(request, "login.html", next=next if next.startswith("/console") else "/console/", error=False)


@router.post("/login")
async def login(request: Request, username: str = Form(...), password: str = Form(...),
                next: str = Form("/console/")) -> Response:
    try:
        auth = _auth()
    except Closed:
        return _render(request, "closed.html", status=503)
    ok = await run_in_threadpool(auth.login, username, password)
    if not ok:
        log.info("console.login_refused", operator=username[:40])
        return _render(request, "login.html", status=401, next=next, error=True)
    _audit("console.login", operator=username)
    response = RedirectResponse(next if next.startswith("/console") else "/console/", status_code=303)
    response.set_cookie(COOKIE, auth.session(username), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/console")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    who = _who(request)
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


def _filter(request: Request, ids: tuple[int, ...] = ()) -> deadletters.DeadLetterFilter:
    params = request.query_params
    return deadletters.DeadLetterFilter(destination=params.get("destination") or None,
                                        dossier_code=params.get("dossier") or None,
                                        reason=params.get("reason") or None, ids=ids)


@router.get("/deadletters", response_class=HTMLResponse)
async def deadletters_page(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    flt = _filter(request)
    before = _cursor(request.query_params.get("before", ""))
    rows = await run_in_threadpool(deadletters.dead_letters, rt.engine, flt, PAGE + 1, before)
    more, rows = len(rows) > PAGE, rows[:PAGE]
    excerpts = await run_in_threadpool(deadletters.last_answers, rt.engine, [r.id for r in rows])
    params = {k: v for k, v in request.query_params.items() if k in ("destination", "dossier", "reason") and v}
    next_page = None
    if more:
        keyset = f"{rows[-1].updated_at.isoformat()}|{rows[-1].id}"
        next_page = f"/console/deadletters?{urlencode({**params, 'before': keyset})}"
    return _render(request, "deadletters.html", operator=who[1], csrf=who[0].csrf_token(who[2]), rows=rows,
                   excerpts=excerpts, destinations=sorted(rt.routing.destinations), flt=flt,
                   query=urlencode(params), replayed=request.query_params.get("replayed"), next_page=next_page)


def _cursor(value: str) -> tuple[datetime, int] | None:
    """The keyset of the next page: ``<updated_at ISO>|<id>`` of the last row shown."""
    moment, _, row_id = value.partition("|")
    try:
        return datetime.fromisoformat(moment), int(row_id)
    except ValueError:
        return None


@router.post("/deadletters/replay")
async def replay(request: Request, csrf: str = Form(...), ids: list[int] = Form(default_factory=list),
                 scope: str = Form("one")) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    auth, operator, cookie = who
    if not auth.csrf_ok(cookie, csrf):
        return Response("invalid form token", status_code=403)
    if scope != "all" and not ids:
        return RedirectResponse(f"/console/deadletters?{request.url.query}", status_code=303)
    flt = _filter(request, () if scope == "all" else tuple(ids))
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
async def search(request: Request, q: str = "") -> Response:
    code = q.strip()
    return RedirectResponse(f"/console/dossiers/{quote(code, safe='')}" if code else "/console/", status_code=303)


@router.get("/dossiers/{code}", response_class=HTMLResponse)
async def dossier_page(request: Request, code: str) -> Response:
    return await _dossier(request, code, reveal=False)


@router.post("/dossiers/{code}/reveal", response_class=HTMLResponse)
async def dossier_reveal(request: Request, code: str, csrf: str = Form(...)) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    if not who[0].csrf_ok(who[2], csrf):
        return Response("invalid form token", status_code=403)
    _audit("console.reveal", operator=who[1], dossier_code=code)
    return await _dossier(request, code, reveal=True)


async def _dossier(request: Request, code: str, reveal: bool) -> Response:
    who = _who(request)
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
async def reports_page(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    try:
        day = date.fromisoformat(request.query_params.get("day", ""))
    except ValueError:
        day = (datetime.now(VN_TZ) - timedelta(days=1)).date()
    payers = [n for n, d in rt.routing.destinations.items() if d.kind == "payment"]
    portals = [n for n, d in rt.routing.destinations.items() if d.kind == "portal"]

    def read() -> tuple[dict[str, list[Any]], list[Any]]:
        lines = {name: payments.stored_lines(rt.engine, name, day.isoformat()) for name in payers}
        return lines, (portal_sync_report(rt.engine, portals, day) if portals else [])

    lines, sync = await run_in_threadpool(read)
    return _render(request, "reports.html", operator=who[1], csrf=who[0].csrf_token(who[2]), day=day, lines=lines,
                   sync=sync)
