"""The operator console, served by the API under ``/console``: server-rendered pages (Jinja2), no front-end build.

An IT centre's operators answer "was this dossier synced, did the citizen get the message, why did this payment
not arrive?" here instead of in the logs:

- ``/console/`` — per destination, delivered / retrying / dead in the last hour and day, what is open and how
  old the oldest is, the circuit breaker, and a chart of deliveries and failed attempts per hour;
- ``/console/`` also says whether the workers are up (:mod:`api.console.health`);
- ``/console/deadletters`` — dead letters with filters (destination, dossier, reason), the reason and the last
  answer; replay of the one row clicked, of the rows ticked, or of all that match, each after a page that says
  how many it will replay (the pages run no script: no confirm dialog);
- ``/console/dossiers/<code>`` — one dossier's timeline: every event, delivery and attempt across destinations;
  the citizen's name, phone and ID masked unless the operator asks (``reveal``, logged with who and which
  dossier, never the values);
- ``/console/reports`` — the day's reconciliation lines and the portal sync report.

Labels in Vietnamese, English with ``?lang=en`` (kept in a cookie), every word from :mod:`api.console.labels`;
destinations by their titles (the routing file's ``title``, else their kind's). Accounts and sessions:
:mod:`api.console.auth`; lock-outs and open sessions: :mod:`api.console.state`; the headers of every answer:
:mod:`api.headers`.

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
from urllib.parse import parse_qsl, quote, urlencode

import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import AfterValidator, Field, StringConstraints
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from api.console.auth import COOKIE, SESSION_SECONDS, ConsoleAuth
from api.console.health import PINGER, WAIT_SECONDS, WorkerHealth, worker_health
from api.console.labels import Words, destination_markup, language
from api.console.state import ConsoleState, LockOut, StateUnavailable
from schemas.privacy import mask_value
from schemas.vietnam import VN_TZ, day_bounds
from store import deadletters, overview, payments, queries
from store.reports import portal_sync_report
from store.tables import deliveries
from tasks.runtime import Runtime, get_runtime

log = structlog.get_logger(__name__)
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
STYLE = (Path(__file__).parent / "static" / "console.css").read_bytes()
STYLE_VERSION = hashlib.sha256(STYLE).hexdigest()[:12]
PAGE = 50
MAX_BODY = 64 * 1024  # the console's forms are a few fields
MAX_IDS = 500  # dead letters replayed by id in one form (a page shows PAGE)
LANG_COOKIE = "motcua_lang"


def _audit(event: str, **fields: Any) -> None:
    """What an operator did (log in, replay, reveal personal data): a warning of its own logger, never values."""
    structlog.get_logger("motcua.console.audit").warning(event, **fields)


def _lang(request: Request) -> str:
    """``?lang=`` if it names one, else the language kept in the cookie, else Vietnamese."""
    wanted = request.query_params.get("lang")
    return language(wanted if wanted in ("vi", "en") else request.cookies.get(LANG_COOKIE))


def _words(request: Request) -> Words:
    return Words(language(_lang(request)))


def _t(request: Request, key: str, **fields: Any) -> str:
    return _words(request)(key, **fields)


_NOT_KEPT = {"lang", "replayed", "scope", "notice"}  # the other language does not announce a replay again


def _switch(request: Request, here: str | None) -> str:
    """The same page in the other language: ``here`` (the page a form's answer belongs to), else this one, its
    query kept."""
    other = "en" if _lang(request) == "vi" else "vi"
    if here is not None:
        path, _, query = here.partition("?")
        kept = [(k, v) for k, v in parse_qsl(query) if k not in _NOT_KEPT]
    else:
        path = request.url.path
        kept = [(k, v) for k, v in request.query_params.multi_items() if k not in _NOT_KEPT]
    return f"{path}?{urlencode([*kept, ('lang', other)])}"


def _render(request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None,
            here: str | None = None, titles: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    words = _words(request)
    named = titles or {}
    html = TEMPLATES.get_template(name).render(
        t=words, words=words, lang=words.lang, vn=_vn, path=request.url.path, switch=_switch(request, here),
        style_version=STYLE_VERSION, titles=named, dest=lambda d: destination_markup(d, named.get(d) or d),
        q=lambda value: quote(str(value), safe=""), **context)
    response = HTMLResponse(html, status_code=status, headers=headers)
    if request.query_params.get("lang") in ("vi", "en"):
        response.set_cookie(LANG_COOKIE, words.lang, max_age=365 * 86400, samesite="strict", httponly=True)
    return response


def _titles(rt: Runtime, words: Words) -> dict[str, str]:
    """Each destination's title: the routing file's, else its kind's in the catalogue, else its service's, else
    its name."""
    found = {}
    for name, destination in rt.routing.destinations.items():
        service = rt.registry.services.get(destination.kind)
        found[name] = (destination.title_in(words.lang) or words.kind_title(destination.kind)
                       or (service.title if service else None) or name)
    return found


def _vn(moment: datetime | None) -> str:
    return moment.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S") if moment else "—"


class Closed(Exception):
    pass


class Invalid(Exception):
    """Console input the ledger or a parser cannot take: a 400 page naming the fields, never their values."""

    def __init__(self, *fields: str) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


# a parameter's label where it is not the parameter's own name
_FIELD_LABELS = {"before": "more", "code": "dossier_code", "csrf": "form_token", "q": "search", "confirmed": "confirm"}


def _invalid(request: Request, fields: Iterable[str]) -> Response:
    names = ", ".join(dict.fromkeys(_t(request, _FIELD_LABELS.get(field, field)) for field in fields))
    log.info("console.invalid_input", path=request.url.path, fields=names)
    return _render(request, "invalid.html", status=400, operator=None, here="/console/",  # never the input again
                   message=_t(request, "invalid_fields", fields=names))


def _stale_form(request: Request) -> Response:
    """A form whose token is not this session's (an old page, another session's, forged): 403, nothing done."""
    return _render(request, "invalid.html", status=403, operator=None, here="/console/",
                   message=_t(request, "stale_form"))


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
                return _render(request, "closed.html", status=503, reason="unavailable", here="/console/")

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
        return _render(request, "closed.html", status=503, here="/console/")
    cookie = request.cookies.get(COOKIE)
    session = auth.read(cookie)
    if session is None or cookie is None or not await run_in_threadpool(_state().is_open, session):
        target = quote(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""), safe="")
        lang = request.query_params.get("lang")
        kept = f"&lang={lang}" if lang in ("vi", "en") else ""  # the log-in page in the language asked for
        return RedirectResponse(f"/console/login?next={target}{kept}", status_code=303)
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
        return _render(request, "closed.html", status=503, here="/console/")
    target = _next(next)
    return _render(request, "login.html", next=target, error="", here=f"/console/login?{urlencode({'next': target})}")


@router.post("/login")
async def login(request: Request, username: Annotated[str, Form(max_length=100)],
                password: Annotated[str, Form(max_length=1024)],
                next: Annotated[str, Form(max_length=2000)] = "/console/") -> Response:
    """Log in, unless the account or the address is locked out (429, the password not even checked)."""
    try:
        auth = _auth()
    except Closed:
        return _render(request, "closed.html", status=503, here="/console/")
    state, address = _state(), request.client.host if request.client else "-"
    admitted = await run_in_threadpool(state.admit, username, address)
    if admitted.wait:
        log.warning("console.login_throttled", operator=username[:40], address=address,
                    retry_after=math.ceil(admitted.wait))
        message = _t(request, "locked", minutes=math.ceil(admitted.wait / 60))
        return _render(request, "login.html", status=429, headers={"Retry-After": str(math.ceil(admitted.wait))},
                       next=_next(next), error=message, here="/console/login")
    if not await run_in_threadpool(auth.login, username, password):
        log.warning("console.login_refused", operator=username[:40], address=address)
        limits = state.lockout
        if admitted.account_count == limits.account or admitted.address_count == limits.address:
            log.warning("console.login_locked", operator=username[:40], address=address,
                        account_failures=admitted.account_count, address_failures=admitted.address_count,
                        seconds=limits.window)
        return _render(request, "login.html", status=401, next=_next(next), error=_t(request, "bad_login"),
                       here="/console/login")
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
    asked = PINGER.start(rt.settings.broker_url)  # answered while the ledger is read

    def read() -> tuple[list[Any], list[tuple[datetime, int, int]], dict[str, bool], WorkerHealth]:
        names = list(rt.routing.destinations)
        rows, hours = overview.read(rt.engine, names, now)
        breakers = {name: bool(rt.protection.state(name)["open"]) for name in names}
        return rows, hours, breakers, worker_health(rt.engine, asked)

    rows, hours, breakers, health = await run_in_threadpool(read)
    words = _words(request)
    return _render(request, "overview.html", operator=who[1], csrf=who[0].csrf_token(who[2]), rows=rows,
                   breakers=breakers, chart=_chart(hours), health=health, titles=_titles(rt, words),
                   wait_seconds=words.number(WAIT_SECONDS, 1), hm=lambda at: at.astimezone(VN_TZ).strftime("%H:%M:%S"),
                   since=lambda moment: words("ago", age=words.age((now - moment).total_seconds())))


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


def _filter(destination: str, dossier: str, reason: str, ids: tuple[int, ...] = (),
            until: datetime | None = None) -> deadletters.DeadLetterFilter:
    return deadletters.DeadLetterFilter(destination=destination or None, dossier_code=dossier or None,
                                        reason=reason or None, ids=ids, until=until)


def _filters(request: Request) -> dict[str, str]:
    """The dead letters' filters this request carries in its query (kept across the list, its pages and forms)."""
    return {k: v for k, v in request.query_params.items() if k in ("destination", "dossier", "reason") and v}


Scope = Literal["one", "selected", "matching"]
SCOPES: tuple[Scope, ...] = ("one", "selected", "matching")


@router.get("/deadletters", response_class=HTMLResponse)
async def deadletters_page(request: Request, destination: Text = "", dossier: Text = "", reason: Text = "",
                           before: Text = "") -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    flt = _filter(destination, dossier, reason)
    before_row = _cursor(before)
    rows = await run_in_threadpool(deadletters.dead_letters, rt.engine, flt, PAGE + 1, before_row)
    more, rows = len(rows) > PAGE, rows[:PAGE]
    excerpts = await run_in_threadpool(deadletters.last_answers, rt.engine, [r.id for r in rows])
    params = _filters(request)
    next_page = None
    if more:
        keyset = f"{rows[-1].updated_at.isoformat()}|{rows[-1].id}"
        next_page = f"/console/deadletters?{urlencode({**params, 'before': keyset})}"
    words = _words(request)
    return _render(request, "deadletters.html", operator=who[1], csrf=who[0].csrf_token(who[2]), rows=rows,
                   excerpts=excerpts, destinations=sorted(rt.routing.destinations), flt=flt, query=urlencode(params),
                   notice=_notice(request, words), next_page=next_page, titles=_titles(rt, words))


def _notice(request: Request, words: Words) -> str | None:
    """What the list says after a replay (``replayed``: how many, ``scope``: of what) or a refused one."""
    count, scope = request.query_params.get("replayed", ""), request.query_params.get("scope", "")
    if count.isdigit() and len(count) < 12:
        return words(f"replayed.{scope}" if scope in SCOPES else "replayed", count=int(count))
    if request.query_params.get("notice") == "none_ticked":
        return words("none_ticked")
    return None


def _cursor(value: str) -> tuple[datetime, int] | None:
    """The keyset of the next page: ``<updated_at ISO>|<id>`` of the last row shown (with its time zone)."""
    if not value:
        return None
    moment, _, row_id = value.partition("|")
    try:
        when, number = _moment(moment), int(row_id)
        if not 1 <= number < 2**63:
            raise ValueError(value)
        return when, number
    except (ValueError, OverflowError):
        raise Invalid("before") from None


def _moment(value: str) -> datetime:
    """An ISO time with its time zone, that the ledger can compare (UTC); else ``ValueError``."""
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(value)
    return when.astimezone(UTC)


def _tally(rt: Runtime, flt: deadletters.DeadLetterFilter) -> tuple[int, datetime | None]:
    """How many dead letters ``flt`` takes, and when the newest of them died (by the ledger's times, which the
    workers' clocks wrote: not this host's)."""
    with rt.engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(deliveries).where(*flt.where())).scalar_one())
        newest = conn.execute(select(deliveries.c.updated_at).where(*flt.where())
                              .order_by(deliveries.c.updated_at.desc()).limit(1)).scalar()
    return count, newest


@router.post("/deadletters/replay")
async def replay(request: Request, csrf: Annotated[str, Form(max_length=64)],
                 ids: Annotated[list[RowId], Form(default_factory=list, max_length=MAX_IDS)],
                 one: Annotated[RowId | None, Form()] = None, scope: Annotated[Scope | None, Form()] = None,
                 until: Annotated[Text, Form()] = "", confirmed: Annotated[Literal["yes"] | None, Form()] = None,
                 destination: Text = "", dossier: Text = "", reason: Text = "") -> Response:
    """Replay what the form's button says: the row clicked (``one``: the ticks do not count), the rows ticked
    (``scope=selected``: ``ids``), or all that match the filters (``scope=matching``). First a page saying how
    many and which, whose button sends ``confirmed=yes`` (and, for all that match, ``until``: just after the
    newest of them died, so that letters dead since are not replayed unseen); then the replay, logged with its
    scope."""
    who = await _who(request)
    if isinstance(who, Response):
        return who
    auth, operator, cookie = who
    if not auth.csrf_ok(cookie, csrf):
        return _stale_form(request)
    params = _filters(request)
    back = f"/console/deadletters?{urlencode(params)}"
    chosen: tuple[int, ...]
    if one is not None:
        scope, chosen = "one", (one,)
    elif scope == "selected":
        chosen = tuple(dict.fromkeys(ids))
        if not chosen:
            return RedirectResponse(f"/console/deadletters?{urlencode({**params, 'notice': 'none_ticked'})}",
                                    status_code=303)
    elif scope == "matching":
        chosen = ()
    else:
        return RedirectResponse(back, status_code=303)
    rt = get_runtime()
    if confirmed is None:
        flt = _filter(destination, dossier, reason, chosen)
        (count, newest), rows = await run_in_threadpool(
            lambda: (_tally(rt, flt), deadletters.dead_letters(rt.engine, flt, PAGE)))
        until = (newest + timedelta(microseconds=1)).isoformat() if newest else ""
        return _render(request, "confirm.html", operator=operator, csrf=auth.csrf_token(cookie), scope=scope,
                       chosen=chosen, until=until, count=count, rows=rows, query=urlencode(params),
                       back=back, flt=flt, here=back, titles=_titles(rt, _words(request)))
    if chosen:
        flt = _filter(destination, dossier, reason, chosen)
    else:
        try:
            flt = _filter(destination, dossier, reason, until=_moment(until))
        except (ValueError, OverflowError):
            raise Invalid("until") from None

    def run() -> int:
        deadlines = {name: d.retry.deadline for name, d in rt.routing.destinations.items()}
        queued = deadletters.replay(rt.engine, flt, deadlines, datetime.now(UTC))
        rt.enqueue(queued)
        return len(queued)

    count = await run_in_threadpool(run)
    _audit("console.replay", operator=operator, count=count, scope=scope, ids=list(chosen) or None,
           destination=flt.destination, dossier_code=flt.dossier_code, reason=flt.reason)
    return RedirectResponse(f"/console/deadletters?{urlencode({**params, 'replayed': count, 'scope': scope})}",
                            status_code=303)


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
        return _stale_form(request)
    _audit("console.reveal", operator=who[1], dossier_code=code)
    return await _dossier(request, code, reveal=True)


async def _dossier(request: Request, code: str, reveal: bool) -> Response:
    who = await _who(request)
    if isinstance(who, Response):
        return who
    rt = get_runtime()
    words = _words(request)
    page: dict[str, Any] = {"operator": who[1], "csrf": who[0].csrf_token(who[2]), "code": code, "reveal": reveal,
                            "here": f"/console/dossiers/{quote(code, safe='')}", "titles": _titles(rt, words)}
    evs, dels, atts = await run_in_threadpool(queries.dossier_trace, rt.engine, code)
    if not evs:
        return _render(request, "dossier.html", status=404, rows=[], deliveries=[], applicant=None, **page)
    applicant = json.loads(evs[0].payload).get("applicant") or {}
    shown = {key: (str(applicant.get(key)) if reveal else mask_value(str(applicant.get(key))))
             for key in ("name", "id_number", "phone") if applicant.get(key)}
    by_id = {d.id: d for d in dels}
    rows: list[dict[str, Any]] = [
        {"at": e.received_at, "kind": "event", "what": e.type, "destination": "", "outcome": None,
         "origin": e.origin, "sequence": e.sequence, "facts": "", "error": "", "ref": ""} for e in evs]
    for a in atts:
        facts = " · ".join(f for f in (f"HTTP {a.status_code}" if a.status_code else "",
                                       f"{a.duration_ms:.0f} ms" if a.duration_ms is not None else "") if f)
        status, why = words.outcome(a.outcome), words.reason(a.error)
        if why.kind not in (status, words("reason.other")):  # the engine's words, when not the outcome's again
            status = f"{status} · {why.kind}"
        rows.append({"at": a.started_at, "kind": "attempt", "what": words("attempt_no", number=a.number),
                     "destination": by_id[a.delivery_id].destination, "outcome": a.outcome, "status": status,
                     "facts": facts, "error": why.detail, "ref": a.external_ref or ""})
    rows.sort(key=lambda r: r["at"])
    return _render(request, "dossier.html", rows=rows, applicant=shown,
                   deliveries=sorted(dels, key=lambda d: (d.destination, d.sequence)), **page)


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
                   sync=sync, titles=_titles(rt, _words(request)))


def _day(value: str) -> date:
    """A calendar day ``YYYY-MM-DD`` whose Vietnam day has UTC bounds (not the calendar's first or last)."""
    try:
        day = date.fromisoformat(value)
        day_bounds(day)
    except (ValueError, OverflowError):
        raise Invalid("day") from None
    return day
