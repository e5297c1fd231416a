"""The web console at /console: sign-in with an API key, the call list and search, a call's page,
exports and the live calls. Server-rendered (Jinja2, autoescaped); the live page polls JSON.

Reads go through the same code as the REST API (app.archive.search and app.archive.review), with the
same rules: supervisors and admins read everything; an ops key without the ``transcripts`` grant sees
the call list only. Every call read, search and export is audited with ``via="console"``.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import jinja2
import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import HTTPConnection

from app.archive import recordings, review
from app.archive.facts import DISPOSITIONS
from app.archive.models import AuditEntry
from app.archive.search import BadQuery, parse_query, search_calls
from app.auth.keys import Principal, Role, _hash, authenticate, create_api_key, list_keys, revoke_key
from app.auth.keys import utcnow as time_now
from app.auth.models import ApiKey
from app.budget import router as budget_api
from app.console import present
from app.console.filters import read_filter_form
from app.console.live import live_calls
from app.console.sessions import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    ConsoleSession,
    SessionCodec,
    live_audit_key,
    load_secret,
    revoke_session,
    session_revoked,
    tokens_match,
)
from app.db import SessionDep
from app.dialer import router as dialer_api
from app.dialer.contacts_import import parse_contacts_csv
from app.dialer.models import Attempt, Campaign, Contact
from app.http_guard import FailureBudget, key_id_of
from app.problems import ProblemError
from app.results.router import deliveries_of
from app.runtime import Runtime

log = structlog.get_logger()

HERE = Path(__file__).parent
STATIC = {
    "console.css": "text/css",
    "live.js": "text/javascript",
    "talk.js": "text/javascript",
    "talk-worklet.js": "text/javascript",
    "player.js": "text/javascript",
    "tz.js": "text/javascript",
    "campaign.js": "text/javascript",
}
PAGE_SIZE = 50
LIVE_AUDIT_EVERY_S = 60
VIA = "console"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # search phrases ride in URLs
    "Cache-Control": "no-store",  # pages hold transcripts
}
SIGNED_OUT_REASONS = {
    "revoked": "Your API key was revoked, so you were signed out. Sign in with a valid key.",
    "expired": "Your session expired. Sign in again.",
    "signed_out": "You are signed out.",
}

router = APIRouter(prefix="/console", include_in_schema=False)

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.globals.update(
    clock=present.clock,
    duration=present.duration,
    usd=present.usd,
    millis=present.millis,
    when=present.when_html,
    epoch_ms=present.epoch_ms_html,
    short_sid=present.short_sid,
    answered_words=present.answered_words,
    event_text=present.event_text,
    highlight=present.highlight,
    speaker_label=present.speaker_label,
    reasons=present.reasons,
    dispositions=DISPOSITIONS,
)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person: their key as it is now, and their console session."""

    principal: Principal
    session: ConsoleSession


def _codec(request: HTTPConnection) -> SessionCodec:
    """Built on first use and kept on the app (the secret may be read from DATA_DIR)."""
    codec: SessionCodec | None = getattr(request.app.state, "console_codec", None)
    if codec is None:
        settings = _runtime(request).settings
        codec = SessionCodec(
            load_secret(settings),
            ttl_s=settings.console_session_ttl_s,
            secure=settings.public_base_url.startswith("https://"),
        )
        request.app.state.console_codec = codec
    return codec


def _runtime(request: HTTPConnection) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _render(
    request: Request, template: str, *, viewer: Viewer | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context.setdefault("section", None)
    html = _templates.get_template(template).render(viewer=viewer, **context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _problem_page(request: Request, viewer: Viewer | None, status_code: int, title: str, message: str) -> HTMLResponse:
    return _render(request, "error.html", viewer=viewer, status_code=status_code, title=title, message=message)


def _forbidden_transcripts(request: Request, viewer: Viewer) -> HTMLResponse:
    role = viewer.principal.role.value
    return _problem_page(
        request,
        viewer,
        403,
        "Not allowed: transcripts",
        f"Your key (role {role}) may see the call list but not what was said in calls. "
        "Call pages, phrase search, exports and live transcripts need a supervisor or admin key, "
        "or an ops key with the 'transcripts' grant.",
    )


def _safe_next(value: str | None) -> str:
    """Where to go after sign-in: only a console path on this site."""
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


def _to_login(request: Request, *, reason: str | None) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = "/console"  # a form post is not replayed after sign-in
    query = f"next={quote(target, safe='/')}" + (f"&reason={reason}" if reason else "")
    response = RedirectResponse(f"/console/login?{query}", status_code=303, headers=HEADERS)
    if reason:
        _clear_session(request, response)
    return response


def _clear_session(request: Request, response: Response) -> None:
    options = _codec(request).cookie_options(0)
    response.delete_cookie(
        SESSION_COOKIE,
        path=options["path"],
        secure=options["secure"],
        httponly=True,
        samesite=options["samesite"],
    )


async def _principal_for(db: AsyncSession, key_id: str) -> Principal | None:
    """The key as it is now: None once revoked, deleted or given a role the console does not know."""
    row = await db.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if row is None or row.revoked_at is not None or row.role not in Role.__members__:
        return None
    return Principal(row.key_id, Role(row.role), row.name, frozenset(row.grants or ()))


async def _viewer(request: Request, db: AsyncSession) -> Viewer | Literal["revoked", "expired"] | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = _codec(request).load_session(cookie, now=time.time())
    if session is None:
        return "expired"
    if await session_revoked(_runtime(request).redis, session):
        return "expired"
    principal = await _principal_for(db, session.key_id)
    if principal is None:
        log.info("console.session_refused", key_id=session.key_id, reason="key revoked or unknown")
        return "revoked"
    return Viewer(principal, session)


async def socket_viewer(conn: HTTPConnection) -> Viewer | None:
    """The console session behind a WebSocket's handshake (its cookie), with its key as it is now; None when
    there is none, it expired or was signed out, or its key was revoked."""
    cookie = conn.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = _codec(conn).load_session(cookie, now=time.time())
    if session is None or await session_revoked(_runtime(conn).redis, session):
        return None
    async with _runtime(conn).sessionmaker() as db:
        principal = await _principal_for(db, session.key_id)
    return Viewer(principal, session) if principal is not None else None


async def _signed_in(request: Request, db: AsyncSession) -> Viewer | RedirectResponse:
    viewer = await _viewer(request, db)
    if isinstance(viewer, Viewer):
        return viewer
    return _to_login(request, reason=viewer)


# -- sign-in ----------------------------------------------------------------------------------------


def _login_page(
    request: Request,
    *,
    next_path: str,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    codec = _codec(request)
    now = time.time()
    token = codec.login_token(request.cookies.get(CSRF_COOKIE), now=now)
    fresh: str | None = None
    if token is None:
        token, fresh = codec.new_login_token(now=now)
    response = _render(
        request,
        "login.html",
        viewer=None,
        status_code=status_code,
        title="Sign in",
        csrf_token=token,
        next_path=next_path,
        error=error,
        notice=notice,
    )
    if fresh is not None:
        response.set_cookie(CSRF_COOKIE, fresh, **codec.cookie_options(7200))
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request,
    db: SessionDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,
    reason: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    viewer = await _viewer(request, db)
    if isinstance(viewer, Viewer):
        return RedirectResponse(_safe_next(next), status_code=303, headers=HEADERS)
    response = _login_page(request, next_path=_safe_next(next), notice=SIGNED_OUT_REASONS.get(reason or ""))
    if viewer is not None:  # a stale cookie: drop it
        _clear_session(request, response)
    return response


async def _refusal(db: AsyncSession, api_key: str) -> str:
    """Why a key that did not authenticate was refused, in words a person can act on."""
    prefix, _, rest = api_key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "sb" or not key_id or not secret:
        return "That is not a Switchboard API key. Keys look like sb_<id>_<secret>."
    row = await db.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    if row is not None and hmac.compare_digest(row.key_hash, _hash(secret)):
        if row.revoked_at is not None:
            return f"This API key was revoked on {present.when(row.revoked_at)}. Ask an admin for a new one."
        if row.role not in Role.__members__:
            return f"This API key has a role the console does not know ({row.role!r}). Ask an admin."
    return "This API key is not known. Check it was copied whole, or ask an admin for a new one."


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    db: SessionDep,
    api_key: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    codec = _codec(request)
    now = time.time()
    next_path = _safe_next(next)
    if not tokens_match(codec.login_token(request.cookies.get(CSRF_COOKIE), now=now), csrf_token):
        return _csrf_refused(request, None)
    api_key = api_key.strip()
    budget: FailureBudget = request.app.state.auth_failures
    client = request.client.host if request.client else "unknown"
    wait = budget.retry_after(client, time.monotonic())
    if wait is not None:
        log.warning("console.login_throttled", client=client, retry_after_s=round(wait))
        message = f"Too many failed sign-ins from this address. Try again in {int(wait) + 1} seconds."
        return _login_page(request, next_path=next_path, error=message, status_code=429)
    principal = None
    if api_key:
        try:
            principal = await authenticate(db, api_key)
        except ValueError:  # a stored role this version does not know
            principal = None
    if principal is None:
        message = await _refusal(db, api_key) if api_key else "Enter an API key."
        if api_key:
            budget.failed(client, time.monotonic())
        log.warning("console.login_refused", detail=message.split(".")[0], key_id=key_id_of(api_key), client=client)
        return _login_page(request, next_path=next_path, error=message, status_code=401)
    session = codec.new_session(principal.key_id, now=now)
    response = RedirectResponse(next_path, status_code=303, headers=HEADERS)
    response.set_cookie(SESSION_COOKIE, codec.dump_session(session), **codec.cookie_options(codec.ttl_s))
    response.delete_cookie(CSRF_COOKIE, path=codec.cookie_options(0)["path"], secure=codec.secure, httponly=True)
    await review.audit(db, principal, "login", via=VIA)
    log.info("console.login", key_id=principal.key_id, role=principal.role.value)
    return response


def _csrf_refused(request: Request, viewer: Viewer | None) -> HTMLResponse:
    return _problem_page(
        request,
        viewer,
        403,
        "Form refused",
        "This form was not sent from a page of this console, or it is too old. Go back, reload the page and try again.",
    )


@router.post("/logout", response_class=HTMLResponse)
async def logout(
    request: Request,
    db: SessionDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not tokens_match(viewer.session.csrf, csrf_token):
        return _csrf_refused(request, viewer)
    response = RedirectResponse("/console/login?reason=signed_out", status_code=303, headers=HEADERS)
    _clear_session(request, response)
    # The cookie is deleted here, but a copy of it (another tab, a stolen one) must stop working too.
    await revoke_session(_runtime(request).redis, viewer.session, now=time.time())
    log.info("console.logout", key_id=viewer.principal.key_id)
    return response


# -- the call list ----------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def calls(
    request: Request,
    db: SessionDep,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = PAGE_SIZE,
) -> Response:
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    principal = viewer.principal
    form = read_filter_form(request.query_params, allow_search=principal.reads_transcripts)
    errors = list(form.errors)
    page = None
    try:
        page = await search_calls(db, form.filters, cursor=cursor or None, limit=limit)
    except BadQuery as exc:
        errors.append(f"Search: {exc}.")
    if page is not None and form.filters.q:
        await review.audit(
            db, principal, "search", detail={"filters": form.filters.as_dict(), "results": len(page.calls)}, via=VIA
        )
    return _render(
        request,
        "calls.html",
        viewer=viewer,
        status_code=400 if page is None else 200,
        title="Calls",
        section="calls",
        form=form,
        errors=errors,
        page=page,
        words=present.search_words(form.filters.q),
        names=await call_names(db, page.calls if page is not None else []),
        next_query=(
            form.query(limit=str(limit) if limit != PAGE_SIZE else "", cursor=page.next_cursor)
            if page is not None and page.next_cursor
            else None
        ),
        export_query=form.query(),
    )


@router.get("/export.csv")
async def export_calls(
    request: Request,
    db: SessionDep,
    lines: Annotated[bool, Query()] = False,
) -> Response:
    """The current search as CSV: a call per row, or with ``lines`` a transcript line per row."""
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.principal.reads_transcripts:
        return _forbidden_transcripts(request, viewer)
    form = read_filter_form(request.query_params, allow_search=True)
    errors = list(form.errors)
    if form.filters.q:
        try:
            parse_query(form.filters.q)  # a bad search fails here, not halfway through the stream
        except BadQuery as exc:
            errors.append(f"Search: {exc}.")
    if errors:
        return _problem_page(request, viewer, 400, "Export refused", " ".join(errors))
    sort = "-started_at"
    await review.audit(
        db, viewer.principal, "export_search",
        detail={"filters": form.filters.as_dict(), "format": "csv", "lines": lines, "sort": sort}, via=VIA,
    )  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        review.export_search(_runtime(request).sessionmaker, form.filters, sort=sort, fmt="csv", lines=lines),
        media_type="text/csv; charset=utf-8",
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="calls-{stamp}.csv"'},
    )


async def call_names(db: AsyncSession, calls: Sequence[Any]) -> dict[str, dict[str, str]]:
    """Who and what each call was for, by name: its campaign's, and for a dialed call its contact's."""
    sids = [c.call_sid for c in calls]
    campaign_ids = {c.campaign_id for c in calls if c.campaign_id}
    campaigns: dict[int, str] = {}
    if campaign_ids:
        rows = await db.execute(select(Campaign.id, Campaign.name).where(Campaign.id.in_(campaign_ids)))
        campaigns = {campaign_id: name for campaign_id, name in rows}
    contacts: dict[str, str] = {}
    if sids:
        linked = await db.execute(
            select(Attempt.call_sid, Contact.name)
            .join(Contact, Contact.id == Attempt.contact_id)
            .where(Attempt.call_sid.in_(sids), Contact.name.is_not(None))
        )
        contacts = {sid: name for sid, name in linked if sid and name}
    names: dict[str, dict[str, str]] = {}
    for c in calls:
        entry: dict[str, str] = {}
        if c.campaign_id in campaigns:
            entry["campaign"] = campaigns[c.campaign_id]
        contact = contacts.get(c.call_sid)
        if contact:
            entry["contact"] = contact
        names[c.call_sid] = entry
    return names


# -- one call ---------------------------------------------------------------------------------------


@router.get("/calls/{call_sid}", response_class=HTMLResponse)
async def call_page(call_sid: str, request: Request, db: SessionDep) -> Response:
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.principal.reads_transcripts:
        return _forbidden_transcripts(request, viewer)
    view = await review.load_call(db, call_sid)
    if view is None:
        return _problem_page(request, viewer, 404, "Call not found", f"No archived call {call_sid}.")
    call = view.as_dict()
    await review.audit(db, viewer.principal, "read_call", target=call_sid, via=VIA)
    return _render(
        request,
        "call.html",
        viewer=viewer,
        title=f"Call {call_sid}",
        section="calls",
        call=call,
        transfers=present.transfers(call["events"]),
        opt_outs=present.opt_outs(call["events"]),
        stages=present.turn_stages(call["events"]),
        marks=present.recording_marks(call["events"], call["tools"]),
        cuts=present.cut_reasons(call["transcript"], call["events"]),
        cut_reasons=present.CUT_REASONS,
        player=bool(call["recording_ms"])
        and call["recording_deleted_at"] is None
        and viewer.principal.hears_recordings,
        deliveries=await deliveries_of(db, call_sid),
        names=(await call_names(db, [view.call]))[call_sid],
    )


@router.get("/calls/{call_sid}/export")
async def export_call(
    call_sid: str,
    request: Request,
    db: SessionDep,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",
) -> Response:
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.principal.reads_transcripts:
        return _forbidden_transcripts(request, viewer)
    view = await review.load_call(db, call_sid)
    if view is None:
        return _problem_page(request, viewer, 404, "Call not found", f"No archived call {call_sid}.")
    body: str | bytes = review.call_csv(view) if format == "csv" else review.call_json(view)
    await review.audit(db, viewer.principal, "export_call", target=call_sid, detail={"format": format}, via=VIA)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    return Response(
        body,
        media_type=media,
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{call_sid}.{format}"'},
    )


@router.get("/calls/{call_sid}/recording")
async def call_recording(
    call_sid: str,
    request: Request,
    db: SessionDep,
    download: Annotated[bool, Query()] = False,
) -> Response:
    """The player's source (and the download link): the same bytes, ranges and audit as the API's."""
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.principal.hears_recordings:
        return _problem_page(
            request, viewer, 403, "Not allowed: recordings",
            f"Your key (role {viewer.principal.role.value}) may not hear recordings: that needs a supervisor or "
            "admin key, or an ops key with the 'recordings' grant.",
        )  # fmt: skip
    runtime = _runtime(request)
    try:
        return await recordings.recording_response(
            db, runtime.recordings, runtime.redis, viewer.principal, call_sid,
            range_header=request.headers.get("range"), download=download, via=VIA,
        )  # fmt: skip
    except ProblemError as exc:
        return _problem_page(request, viewer, exc.status, exc.title, exc.detail or exc.title)


# -- live calls -------------------------------------------------------------------------------------


@router.get("/live", response_class=HTMLResponse)
async def live_page(request: Request, db: SessionDep) -> Response:
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.principal.reads_transcripts:
        return _forbidden_transcripts(request, viewer)
    error = None
    calls: list[dict[str, Any]] = []
    first = True
    try:
        calls = await live_calls(_runtime(request).call_store, now_ms=int(time.time() * 1000))
        first = bool(await _runtime(request).redis.set(live_audit_key(viewer.session), "1", nx=True,
                                                       ex=LIVE_AUDIT_EVERY_S))  # fmt: skip
    except (RedisError, OSError) as exc:
        error = f"Live state is unavailable ({type(exc).__name__}); retrying."
    if first:  # the page and its polls: one entry per session per minute
        await review.audit(db, viewer.principal, "read_live", detail={"calls": _live_sids(calls)}, via=VIA)
    return _render(request, "live.html", viewer=viewer, title="Live calls", section="live", calls=calls, error=error)


def _live_sids(calls: list[dict[str, Any]]) -> list[str]:
    return sorted(str(c.get("call_sid")) for c in calls)[:50]


@router.get("/live.json")
async def live_json(request: Request, db: SessionDep) -> Response:
    viewer = await _viewer(request, db)
    if not isinstance(viewer, Viewer):
        return JSONResponse({"error": "signed out", "reason": viewer or "no session"}, status_code=401, headers=HEADERS)
    if not viewer.principal.reads_transcripts:
        return JSONResponse({"error": "this key may not read transcripts"}, status_code=403, headers=HEADERS)
    redis = _runtime(request).redis
    try:
        calls = await live_calls(_runtime(request).call_store, now_ms=int(time.time() * 1000))
        # The page polls every few seconds: one audit entry per session per minute says who watched.
        first = await redis.set(live_audit_key(viewer.session), "1", nx=True, ex=LIVE_AUDIT_EVERY_S)
    except (RedisError, OSError) as exc:
        return JSONResponse(
            {"error": f"live state unavailable: {type(exc).__name__}"}, status_code=503, headers=HEADERS
        )
    if first:
        await review.audit(db, viewer.principal, "read_live", detail={"calls": _live_sids(calls)}, via=VIA)
    return JSONResponse({"at": datetime.now(UTC).isoformat(), "calls": calls}, headers=HEADERS)


# -- talk to the agent --------------------------------------------------------------------------------


@router.get("/talk", response_class=HTMLResponse)
async def talk_page(request: Request, db: SessionDep) -> Response:
    """A call to the agent from the browser: microphone in, the agent's voice out, the transcript live."""
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.principal.may_talk:
        role = viewer.principal.role.value
        return _problem_page(request, viewer, 403, "Not allowed: talking to the agent",
                             f"Your key (role {role}) may not place calls from the console. Supervisors and admins "
                             "may, and ops keys with the 'talk' grant.")  # fmt: skip
    engine = _runtime(request).settings.engine
    return _render(request, "talk.html", viewer=viewer, title="Talk to the agent", section="talk", engine=engine)


async def _gated(
    request: Request,
    db: AsyncSession,
    gate: Callable[[Request, Viewer], HTMLResponse | None],
    csrf_token: str | None = None,
) -> Viewer | Response:
    """The signed-in viewer if ``gate`` lets them through (and, for a form, its CSRF token matches their
    session's); else the page or redirect that says why not."""
    viewer = await _signed_in(request, db)
    if not isinstance(viewer, Viewer):
        return viewer
    refused = gate(request, viewer)
    if refused is not None:
        return refused
    if csrf_token is not None and not tokens_match(viewer.session.csrf, csrf_token):
        return _csrf_refused(request, viewer)
    return viewer


async def _gated_form(
    request: Request, db: AsyncSession, gate: Callable[[Request, Viewer], HTMLResponse | None]
) -> tuple[Viewer, FormData] | Response:
    """The signed-in viewer the gate lets through, and their posted form once its CSRF token matched."""
    viewer = await _gated(request, db, gate)
    if not isinstance(viewer, Viewer):
        return viewer
    form_data = await request.form()
    if not tokens_match(viewer.session.csrf, str(form_data.get("csrf_token", ""))):
        return _csrf_refused(request, viewer)
    return viewer, form_data


# -- ops: campaigns ---------------------------------------------------------------------------------

CAMPAIGN_FIELDS = ("name", "purpose", "subject", "caller_id", "instructions", "window_start", "window_end")


def _ops_only(request: Request, viewer: Viewer) -> HTMLResponse | None:
    if viewer.principal.role not in (Role.ops, Role.admin):
        return _problem_page(request, viewer, 403, "Not allowed: campaigns",
                             "Campaigns are run with an ops or admin key.")  # fmt: skip
    return None


async def _campaigns_page(request: Request, viewer: Viewer, db: AsyncSession, **extra: Any) -> HTMLResponse:
    rows = list(await db.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(200)))
    extra.setdefault("errors", [])
    extra.setdefault("form", dict.fromkeys(CAMPAIGN_FIELDS, ""))
    return _render(request, "campaigns.html", viewer=viewer, title="Campaigns", section="campaigns", campaigns=rows,
                   status_code=422 if extra["errors"] else 200, **extra)  # fmt: skip


@router.get("/campaigns", response_class=HTMLResponse)
async def campaigns_page(request: Request, db: SessionDep) -> Response:
    viewer = await _gated(request, db, _ops_only)
    if not isinstance(viewer, Viewer):
        return viewer
    return await _campaigns_page(request, viewer, db)


@router.post("/campaigns", response_class=HTMLResponse)
async def make_campaign(request: Request, db: SessionDep) -> Response:
    """The API's rules (dialer.CampaignIn), from a form: what they refuse is listed by the form."""
    gated = await _gated_form(request, db, _ops_only)
    if not isinstance(gated, tuple):
        return gated
    viewer, form_data = gated
    form = {name: str(form_data.get(name, ""))[:20_000].strip() for name in CAMPAIGN_FIELDS}
    values = {k: v for k, v in form.items() if v or k in ("name", "subject", "caller_id")}
    try:
        made = await dialer_api.create_campaign(dialer_api.CampaignIn.model_validate(values), db)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
        return await _campaigns_page(request, viewer, db, errors=errors, form=form)
    except ProblemError as exc:
        return await _campaigns_page(request, viewer, db, errors=[exc.detail or exc.title], form=form)
    return RedirectResponse(f"/console/campaigns/{made.id}", status_code=303, headers=HEADERS)


CONTACT_STATUSES = ("pending", "in_progress", "done", "held")
SETTINGS_FIELDS = ("name", "instructions", "window_start", "window_end", "max_attempts", "retry_spacing_min",
                   "daily_attempt_limit", "concurrency", "calls_per_second", "machine_action")  # fmt: skip


def _contact_filters(request: Request) -> dict[str, str | None]:
    status = request.query_params.get("status") or None
    phone = (request.query_params.get("phone") or "").strip()[:40] or None
    return {"status": status if status in CONTACT_STATUSES else None, "phone": phone}


async def _campaign_live(request: Request, db: AsyncSession, campaign: Any) -> dict[str, Any]:
    """What the campaign page shows and refreshes: progress, attempts, decisions, the contacts filtered."""
    filters = _contact_filters(request)
    return {
        "campaign": campaign,
        "progress": await dialer_api.campaign_progress(campaign.id, db),
        "attempts": await dialer_api.list_attempts(campaign.id, db, limit=50, offset=0),
        "decisions": await dialer_api.list_decisions(campaign.id, db, limit=50, offset=0),
        "contacts": await dialer_api.list_contacts(campaign.id, db, limit=100, offset=0, **filters),  # type: ignore[arg-type]
        "filters": filters,
        "contact_statuses": CONTACT_STATUSES,
        "query": "&".join(f"{k}={quote(v)}" for k, v in filters.items() if v),
    }


async def _campaign_page(
    request: Request, viewer: Viewer, db: AsyncSession, campaign_id: int, **extra: Any
) -> HTMLResponse:
    try:
        campaign = await dialer_api.get_campaign(campaign_id, db)
    except ProblemError as exc:
        return _problem_page(request, viewer, exc.status, exc.title, exc.detail or exc.title)
    actions = [a for a, (allowed, _) in dialer_api.TRANSITIONS.items() if campaign.status in allowed]
    for key in ("notice", "report", "import_error", "contact_notice"):
        extra.setdefault(key, None)
    extra.setdefault("settings_errors", [])
    extra.setdefault("edit", campaign.model_dump())
    status = 422 if extra["settings_errors"] else 200
    return _render(request, "campaign.html", viewer=viewer, title=campaign.name, section="campaigns",
                   actions=actions, status_code=status, **await _campaign_live(request, db, campaign),
                   **extra)  # fmt: skip


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
async def campaign_page(campaign_id: int, request: Request, db: SessionDep) -> Response:
    viewer = await _gated(request, db, _ops_only)
    if not isinstance(viewer, Viewer):
        return viewer
    return await _campaign_page(request, viewer, db, campaign_id)


@router.get("/campaigns/{campaign_id}/live", response_class=HTMLResponse)
async def campaign_live(campaign_id: int, request: Request, db: SessionDep) -> Response:
    """The part of the campaign page that changes as it dials (campaign.js fetches it every few seconds)."""
    viewer = await _gated(request, db, _ops_only)
    if not isinstance(viewer, Viewer):
        return viewer
    try:
        campaign = await dialer_api.get_campaign(campaign_id, db)
    except ProblemError as exc:
        return _problem_page(request, viewer, exc.status, exc.title, exc.detail or exc.title)
    return _render(request, "campaign_live.html", viewer=viewer, contact_notice=None,
                   **await _campaign_live(request, db, campaign))  # fmt: skip


@router.post("/campaigns/{campaign_id}/settings", response_class=HTMLResponse)
async def campaign_settings(campaign_id: int, request: Request, db: SessionDep) -> Response:
    """The API's rules for a change (dialer.CampaignPatch), from a form: what they refuse is listed."""
    gated = await _gated_form(request, db, _ops_only)
    if not isinstance(gated, tuple):
        return gated
    viewer, form_data = gated
    form = {name: str(form_data.get(name, ""))[:20_000].strip() for name in SETTINGS_FIELDS}
    values: dict[str, Any] = {k: v for k, v in form.items() if v}
    if not form["window_start"] and not form["window_end"]:
        values |= {"window_start": None, "window_end": None}  # both empty: back to the law's window
    try:
        patch = dialer_api.CampaignPatch.model_validate(values)
        await dialer_api.update_campaign(campaign_id, patch, db)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
        return await _campaign_page(request, viewer, db, campaign_id, settings_errors=errors, edit=form)
    except ProblemError as exc:
        return await _campaign_page(request, viewer, db, campaign_id, settings_errors=[exc.detail or exc.title],
                                    edit=form)  # fmt: skip
    return await _campaign_page(request, viewer, db, campaign_id, notice="Settings saved.")


@router.post("/campaigns/{campaign_id}/contacts/{contact_id}/{action}", response_class=HTMLResponse)
async def contact_action(
    campaign_id: int,
    contact_id: int,
    action: str,
    request: Request,
    db: SessionDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    reason: Annotated[str, Form(max_length=200)] = "",
    state: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Re-queue a done contact or release a held one, with a reason: audited under the signed-in key."""
    viewer = await _gated(request, db, _ops_only, csrf_token)
    if not isinstance(viewer, Viewer):
        return viewer
    if action not in ("requeue", "release"):
        return _problem_page(request, viewer, 404, "Not found", f"No action {action!r} for a contact.")
    reason = reason.replace("\x00", "").strip()
    if not reason:
        return await _campaign_page(request, viewer, db, campaign_id, contact_notice="Give a reason: it is audited.")
    try:
        if action == "requeue":
            done = await dialer_api.requeue(db, viewer.principal, campaign_id, contact_id, reason, via="console")
        else:
            done = await dialer_api.release(db, viewer.principal, campaign_id, contact_id, reason,
                                            state.strip() or None, via="console")  # fmt: skip
    except ProblemError as exc:
        return await _campaign_page(request, viewer, db, campaign_id, contact_notice=exc.detail or exc.title)
    await db.commit()
    verb = "back in the queue" if action == "requeue" else "released into the queue"
    return await _campaign_page(request, viewer, db, campaign_id,
                                contact_notice=f"{done.phone} is {verb}; the dialer decides afresh before dialing.")  # fmt: skip


@router.post("/campaigns/{campaign_id}/import", response_class=HTMLResponse)
async def campaign_import(campaign_id: int, request: Request, db: SessionDep) -> Response:
    viewer = await _gated(request, db, _ops_only)
    if not isinstance(viewer, Viewer):
        return viewer
    limit = _runtime(request).settings.max_import_body_bytes
    form_data = await request.form(max_part_size=limit)
    if not tokens_match(viewer.session.csrf, str(form_data.get("csrf_token", ""))):
        return _csrf_refused(request, viewer)
    upload = form_data.get("file")
    if upload is None or isinstance(upload, str):
        return await _campaign_page(request, viewer, db, campaign_id, import_error="Choose a CSV file to import.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        return await _campaign_page(
            request, viewer, db, campaign_id, import_error=f"Files are limited to {limit} bytes."
        )
    try:
        campaign = await db.get(Campaign, campaign_id)
        if campaign is None:
            return _problem_page(request, viewer, 404, "Campaign not found", f"No campaign {campaign_id}.")
        parsed = await asyncio.to_thread(parse_contacts_csv, data, now=time_now())
        report = await dialer_api.import_report(db, campaign, parsed)
    except ProblemError as exc:
        return await _campaign_page(request, viewer, db, campaign_id, import_error=exc.detail or exc.title)
    return await _campaign_page(request, viewer, db, campaign_id, report=report)


@router.post("/campaigns/{campaign_id}/{action}", response_class=HTMLResponse)
async def campaign_action(
    campaign_id: int,
    action: str,
    request: Request,
    db: SessionDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    viewer = await _gated(request, db, _ops_only, csrf_token)
    if not isinstance(viewer, Viewer):
        return viewer
    if action not in dialer_api.TRANSITIONS:
        return _problem_page(request, viewer, 404, "Not found", f"No action {action!r} for a campaign.")
    try:
        changed = await dialer_api.change_status(campaign_id, action, db)
    except ProblemError as exc:
        return await _campaign_page(request, viewer, db, campaign_id, notice=exc.detail or exc.title)
    return await _campaign_page(request, viewer, db, campaign_id, notice=f"The campaign is {changed.status} now.")


# -- admin: keys and the audit log ------------------------------------------------------------------

GRANT_WORDS = (
    ("transcripts", "read calls' transcripts, search what was said, export"),
    ("talk", "talk to the agent from this console"),
    ("recordings", "hear and download recordings"),
)


def _admin_only(request: Request, viewer: Viewer) -> HTMLResponse | None:
    if viewer.principal.role is not Role.admin:
        return _problem_page(request, viewer, 403, "Not allowed: admins only",
                             "API keys and the audit log are for admin keys.")  # fmt: skip
    return None


async def _keys_page(request: Request, viewer: Viewer, db: AsyncSession, **extra: Any) -> HTMLResponse:
    rows = await list_keys(db)
    extra.setdefault("made", None)
    extra.setdefault("notice", None)
    return _render(request, "keys.html", viewer=viewer, title="API keys", section="keys", keys=rows,
                   grants=GRANT_WORDS, **extra)  # fmt: skip


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(request: Request, db: SessionDep) -> Response:
    viewer = await _gated(request, db, _admin_only)
    if not isinstance(viewer, Viewer):
        return viewer
    return await _keys_page(request, viewer, db)


@router.post("/keys", response_class=HTMLResponse)
async def make_key(
    request: Request,
    db: SessionDep,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    role: Annotated[Literal["admin", "ops", "supervisor"], Form()],
    grants: Annotated[list[Literal["transcripts", "talk", "recordings"]] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    viewer = await _gated(request, db, _admin_only, csrf_token)
    if not isinstance(viewer, Viewer):
        return viewer
    chosen = tuple(grants or ())
    key = await create_api_key(db, role=Role(role), name=name.strip(), now=time_now(), grants=chosen)
    await review.audit(db, viewer.principal, "create_key", target=key.split("_")[1],
                       detail={"role": role, "name": name.strip(), "grants": list(chosen)}, via=VIA)  # fmt: skip
    made = {"name": name.strip(), "role": role, "key": key}
    return await _keys_page(request, viewer, db, made=made)


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke_key_form(
    key_id: str, request: Request, db: SessionDep, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    viewer = await _gated(request, db, _admin_only, csrf_token)
    if not isinstance(viewer, Viewer):
        return viewer
    if key_id == viewer.principal.key_id:
        return _problem_page(
            request, viewer, 409, "Not your own key", "Sign in with another admin key to revoke this one."
        )
    row = await revoke_key(db, key_id, now=time_now())
    if row is None:
        return _problem_page(request, viewer, 404, "Key not found", f"No API key {key_id}.")
    await review.audit(db, viewer.principal, "revoke_key", target=key_id, detail={"role": row.role, "name": row.name},
                       via=VIA)  # fmt: skip
    return await _keys_page(request, viewer, db, notice=f"Revoked {row.name} ({key_id}): it can no longer sign in.")


async def _budget_page(request: Request, viewer: Viewer, db: AsyncSession, **extra: Any) -> HTMLResponse:
    overview = await budget_api.overview(request)
    campaigns = [
        (cid, name) for cid, name in await db.execute(select(Campaign.id, Campaign.name).order_by(Campaign.id))
    ]
    extra.setdefault("errors", [])
    extra.setdefault("notice", None)
    if "form" not in extra:  # the caps in force, as the form shows them
        caps = overview.caps
        form = {"per_day_usd": _amount(caps.per_day_usd), "per_call_usd": _amount(caps.per_call_usd)}
        for cid, _ in campaigns:
            own = caps.campaigns.get(str(cid), {})
            form[f"c{cid}_per_day_usd"] = _amount(own.get("per_day_usd"))
            form[f"c{cid}_per_call_usd"] = _amount(own.get("per_call_usd"))
        extra["form"] = form
    return _render(request, "budget.html", viewer=viewer, title="Budget", section="budget", caps=overview.caps,
                   spend=overview.spend, campaigns=campaigns, status_code=422 if extra["errors"] else 200,
                   **extra)  # fmt: skip


def _amount(usd: float | None) -> str:
    return "" if usd is None else f"{usd:.2f}"


def _dollars(raw: str, label: str, errors: list[str]) -> float | None:
    """A cap typed in a box: empty is no cap; "$1,000.50" is 1000.5; anything else is listed as an error."""
    text = raw.strip().removeprefix("$").replace(",", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{label}: {raw.strip()!r} is not an amount in dollars")
        return None
    if not math.isfinite(value) or not 0 <= value <= budget_api.MAX_CAP_USD:
        errors.append(f"{label}: an amount from $0 to ${budget_api.MAX_CAP_USD:,.0f}")
        return None
    return value


@router.get("/budget", response_class=HTMLResponse)
async def budget_page(request: Request, db: SessionDep) -> Response:
    """Caps and today's spend, with what calls in progress hold for their closing lines (admins)."""
    viewer = await _gated(request, db, _admin_only)
    if not isinstance(viewer, Viewer):
        return viewer
    return await _budget_page(request, viewer, db)


@router.post("/budget/caps", response_class=HTMLResponse)
async def budget_caps(request: Request, db: SessionDep) -> Response:
    """Every cap from the form, under PUT /api/v1/budget/caps's rules (an empty box: no cap); audited."""
    gated = await _gated_form(request, db, _admin_only)
    if not isinstance(gated, tuple):
        return gated
    viewer, form_data = gated
    ids = list(await db.scalars(select(Campaign.id).order_by(Campaign.id)))
    names = ["per_day_usd", "per_call_usd"] + [f"c{cid}_{k}" for cid in ids for k in ("per_day_usd", "per_call_usd")]
    form = {name: str(form_data.get(name, ""))[:40] for name in names}
    errors: list[str] = []
    labels = {"per_day_usd": "Daily cap", "per_call_usd": "Per-call cap"}
    body: dict[str, Any] = {k: _dollars(form[k], labels[k], errors) for k in labels}
    body["campaigns"] = {}
    for cid in ids:
        own = {k: _dollars(form[f"c{cid}_{k}"], f"Campaign {cid}, {labels[k].lower()}", errors) for k in labels}
        if any(v is not None for v in own.values()):
            body["campaigns"][cid] = own
    if errors:
        return await _budget_page(request, viewer, db, errors=errors, form=form)
    try:
        await budget_api.replace_caps(_runtime(request).budget, db, viewer.principal,
                                      budget_api.CapsIn.model_validate(body), via=VIA)  # fmt: skip
    except ValidationError as exc:
        listed = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return await _budget_page(request, viewer, db, errors=listed, form=form)
    except ProblemError as exc:
        return await _budget_page(request, viewer, db, errors=[exc.detail or exc.title], form=form)
    return await _budget_page(request, viewer, db, notice="Caps saved: every node applies them at once.")


AUDIT_ACTIONS = (
    "login", "read_call", "export_call", "export_search", "search", "read_live", "play_recording",
    "download_recording", "delete_recording", "recording_retention", "retention_purge", "create_key", "revoke_key",
    "redeliver_webhook", "set_caps", "requeue_contact", "release_contact",
)  # fmt: skip


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    db: SessionDep,
    key_id: Annotated[str, Query(max_length=32)] = "",
    action: Annotated[str, Query(max_length=32)] = "",
    call_sid: Annotated[str, Query(max_length=64)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    viewer = await _gated(request, db, _admin_only)
    if not isinstance(viewer, Viewer):
        return viewer
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(PAGE_SIZE + 1)
    if key_id.strip():
        query = query.where(AuditEntry.key_id == key_id.strip())
    if action.strip():
        query = query.where(AuditEntry.action == action.strip())
    if call_sid.strip():
        query = query.where(AuditEntry.target == call_sid.strip())
    if before is not None:
        query = query.where(AuditEntry.id < before)
    rows = list(await db.scalars(query))
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    filters = {"key_id": key_id.strip(), "action": action.strip(), "call_sid": call_sid.strip()}
    next_before = rows[-1].id if more and rows else None
    next_query = urlencode({**{k: v for k, v in filters.items() if v}, "before": next_before or ""})
    return _render(request, "audit.html", viewer=viewer, title="Audit log", section="audit", entries=rows,
                   filters=filters, actions=AUDIT_ACTIONS, next_before=next_before, next_query=next_query)  # fmt: skip


# -- static files -----------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media = STATIC.get(name)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        HERE / "static" / name,
        media_type=media,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
