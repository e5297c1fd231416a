"""The web console at /console: sign-in with an API key, the call list and search, a call's page,
exports and the live calls. Server-rendered (Jinja2, autoescaped); the live page polls JSON.

Reads go through the same code as the REST API (app.archive.search and app.archive.review), with the
same rules: supervisors and admins read everything; an ops key without the ``transcripts`` grant sees
the call list only. Every call read, search and export is audited with ``via="console"``.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import jinja2
import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.archive import review
from app.archive.facts import DISPOSITIONS
from app.archive.search import BadQuery, parse_query, search_calls
from app.auth.keys import Principal, Role, _hash, authenticate
from app.auth.models import ApiKey
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
from app.http_guard import FailureBudget, key_id_of
from app.runtime import Runtime

log = structlog.get_logger()

HERE = Path(__file__).parent
STATIC = {"console.css": "text/css", "live.js": "text/javascript"}
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
    when=present.when,
    epoch_ms=present.epoch_ms,
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


def _codec(request: Request) -> SessionCodec:
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


def _runtime(request: Request) -> Runtime:
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
