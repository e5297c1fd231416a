"""Supervisor API over archived calls: search, one call in full, exports; every read audited.

Supervisors and admins read everything. Ops keys may list and filter calls (no transcript content)
unless they carry the ``transcripts`` grant; a phrase search shows matching lines, so it needs it too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from app.api_fields import MAX_ID, SID_PATTERN
from app.archive import recordings, review
from app.archive.facts import DISPOSITIONS
from app.archive.redaction import reason_category
from app.archive.search import BadQuery, CallFilter, parse_extraction_filters, parse_query, search_calls
from app.auth.keys import Principal, Role, require_recordings, require_role, require_transcripts, utcnow
from app.db import SessionDep
from app.problems import ProblemError

router = APIRouter(
    prefix="/api/v1/calls", tags=["calls"], dependencies=[Depends(require_role(Role.supervisor, Role.ops))]
)


class CallSummary(BaseModel):
    call_sid: str
    direction: str
    from_number: str | None
    to_number: str | None
    campaign_id: int | None
    status: str
    disposition: str | None
    end_reason: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_ms: int | None
    cost_micros: int | None
    cost_usd: float | None
    price_version: str | None
    transferred: bool
    opted_out: bool
    turns: int | None
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    redacted: bool
    transcript_purged_at: datetime | None
    recording_ms: int | None = Field(description="the recording's length; null: the call was not recorded")
    recording_deleted_at: datetime | None = Field(
        description="when the recording was deleted from the store (retention, or an admin's erasure)"
    )
    results_status: str | None = Field(
        description="post-call results: pending, done, skipped or failed (null: not made for this call)"
    )
    results_detail: str | None = Field(description="why the results were skipped or failed")
    summary: str | None = Field(description="the chat model's short summary (null without the transcripts grant)")
    extraction: dict[str, Any] | None = Field(
        description="the fields of the campaign's (or the deployment's) extraction schema, validated against it "
        "(null without the transcripts grant)"
    )


class Segment(BaseModel):
    seq: int
    speaker: str
    text: str
    offset_ms: int
    interrupted: bool


class CallMatch(CallSummary):
    matches: list[Segment] | None = None  # with q: the lines that matched (up to 3)


class CallDetail(CallSummary):
    usage: dict[str, Any] | None
    transcript: list[Segment]
    tools: list[dict[str, Any]]
    events: list[dict[str, Any]]
    costs: list[dict[str, Any]]
    turn_latencies_ms: list[int | None]
    dial_decisions: list[dict[str, Any]]
    budget_enforcements: list[dict[str, Any]]


class CallPage(BaseModel):
    items: list[CallMatch]
    next_cursor: str | None
    limit: int
    sort: str


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


MAX_DURATION_S = 7 * 24 * 3600.0
MAX_COST_USD = 1_000_000.0
CallSidPath = Annotated[str, Path(pattern=SID_PATTERN)]


def call_filter(
    started_from: Annotated[datetime | None, Query(description="calls started at or after (ISO 8601)")] = None,
    started_to: Annotated[datetime | None, Query(description="calls started before (ISO 8601)")] = None,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
    number: Annotated[str | None, Query(description="caller or callee, E.164", pattern=r"^\+[1-9]\d{1,14}$")] = None,
    campaign_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    disposition: Annotated[list[str] | None, Query(description=f"any of {', '.join(DISPOSITIONS)}")] = None,
    min_duration_s: Annotated[float | None, Query(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] = None,
    max_duration_s: Annotated[float | None, Query(ge=0, le=MAX_DURATION_S, allow_inf_nan=False)] = None,
    min_cost_usd: Annotated[float | None, Query(ge=0, le=MAX_COST_USD, allow_inf_nan=False)] = None,
    max_cost_usd: Annotated[float | None, Query(ge=0, le=MAX_COST_USD, allow_inf_nan=False)] = None,
    transferred: Annotated[bool | None, Query()] = None,
    opted_out: Annotated[bool | None, Query()] = None,
    q: Annotated[str | None, Query(description='words, "a phrase", -excluded; all in one line of the call')] = None,
    results_status: Annotated[
        Literal["pending", "done", "skipped", "failed"] | None, Query(description="the post-call results' state")
    ] = None,
    extraction: Annotated[
        list[str] | None,
        Query(
            max_length=20,
            description="field=value on the post-call extraction (true, false, null, a number, else text), e.g. "
            "callback_requested=true; repeat for several (all must hold)",
        ),
    ] = None,
) -> CallFilter:
    unknown = sorted(set(disposition or ()) - set(DISPOSITIONS))
    if unknown:
        raise ProblemError(400, "Bad filter", f"unknown disposition(s) {unknown}; one of {list(DISPOSITIONS)}")
    if started_from and started_to and started_to <= started_from:
        raise ProblemError(400, "Bad filter", "started_to must be after started_from")

    try:
        extracted = parse_extraction_filters(extraction or ())
    except BadQuery as exc:
        raise ProblemError(400, "Bad filter", str(exc)) from exc

    def ms(seconds: float | None) -> int | None:
        return None if seconds is None else round(seconds * 1000)

    def micros(usd: float | None) -> int | None:
        return None if usd is None else round(usd * 1_000_000)

    return CallFilter(
        started_from=started_from,
        started_to=started_to,
        direction=direction,
        number=number,
        campaign_id=campaign_id,
        dispositions=tuple(disposition or ()),
        min_duration_ms=ms(min_duration_s),
        max_duration_ms=ms(max_duration_s),
        min_cost_micros=micros(min_cost_usd),
        max_cost_micros=micros(max_cost_usd),
        transferred=transferred,
        opted_out=opted_out,
        q=q.strip() if q and q.strip() else None,
        results_status=results_status,
        extraction=extracted,
    )


FilterDep = Annotated[CallFilter, Depends(call_filter)]
SortParam = Annotated[
    str,
    Query(
        pattern=r"^-?(started_at|duration|cost)$",
        description="started_at, duration or cost; '-' first for descending (default -started_at)",
    ),
]


@router.get("", response_model=CallPage)
async def list_calls(
    request: Request,
    session: SessionDep,
    filters: FilterDep,
    sort: SortParam = "-started_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> CallPage:
    principal = _principal(request)
    if filters.q or filters.extraction:
        require_transcripts(request)  # matching lines, and what the extraction says, are transcript content
    try:
        page = await search_calls(session, filters, sort=sort, cursor=cursor, limit=limit)
    except BadQuery as exc:
        raise ProblemError(400, "Bad query", str(exc)) from exc
    items = []
    for call in page.calls:
        item = CallMatch.model_validate(review.summary(call))
        if not principal.reads_transcripts:  # an end reason may quote the model or the caller; results are
            item.end_reason = reason_category(item.end_reason)  # made from what was said
            item.summary, item.extraction = None, None
        if filters.q:
            item.matches = [Segment.model_validate(s, from_attributes=True) for s in page.matches.get(call.id, [])]
        items.append(item)
    if filters.q or filters.extraction:
        await review.audit(session, principal, "search", detail={"filters": filters.as_dict(), "results": len(items)})
    return CallPage(items=items, next_cursor=page.next_cursor, limit=limit, sort=sort)


_EXPORTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The export, as CSV (the default for searches) or JSON",
        "content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {"schema": {}}},
    }
}


@router.get("/export", dependencies=[Depends(require_transcripts)], responses=_EXPORTS)
async def export_calls(
    request: Request,
    session: SessionDep,
    filters: FilterDep,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",
    lines: Annotated[bool, Query(description="a row per transcript line (CSV), or transcripts inline (JSON)")] = False,
    sort: SortParam = "-started_at",
) -> StreamingResponse:
    """A whole search result, streamed (constant memory whatever its size)."""
    try:
        if filters.q:
            parse_query(filters.q)  # a bad search fails here, not halfway through the stream
    except BadQuery as exc:
        raise ProblemError(400, "Bad query", str(exc)) from exc
    await review.audit(
        session, _principal(request), "export_search",
        detail={"filters": filters.as_dict(), "format": format, "lines": lines, "sort": sort},
    )  # fmt: skip
    media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        review.export_search(request.app.state.runtime.sessionmaker, filters, sort=sort, fmt=format, lines=lines),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="calls-{stamp}.{format}"'},
    )


@router.get("/{call_sid}", response_model=CallDetail, dependencies=[Depends(require_transcripts)])
async def get_call(call_sid: CallSidPath, request: Request, session: SessionDep) -> CallDetail:
    view = await review.load_call(session, call_sid)
    if view is None:
        raise ProblemError(404, "Call not found", f"No archived call {call_sid}.")
    detail = CallDetail.model_validate(view.as_dict())
    await review.audit(session, _principal(request), "read_call", target=call_sid)
    return detail


@router.get("/{call_sid}/export", dependencies=[Depends(require_transcripts)], responses=_EXPORTS)
async def export_call(
    call_sid: CallSidPath,
    request: Request,
    session: SessionDep,
    format: Annotated[Literal["csv", "json"], Query()] = "json",
) -> Response:
    view = await review.load_call(session, call_sid)
    if view is None:
        raise ProblemError(404, "Call not found", f"No archived call {call_sid}.")
    body: str | bytes = review.call_csv(view) if format == "csv" else review.call_json(view)
    await review.audit(session, _principal(request), "export_call", target=call_sid, detail={"format": format})
    media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{call_sid}.{format}"'}
    )


_AUDIO: dict[int | str, dict[str, Any]] = {
    200: {"content": {"audio/ogg": {}}, "description": "the recording: two channels (caller, agent), Opus in Ogg"},
    206: {"content": {"audio/ogg": {}}, "description": "the bytes a Range asked for"},
    404: {"description": "no such call, the call was not recorded, or its recording is missing from the store"},
    410: {"description": "the recording was deleted (retention, or an admin)"},
    416: {"description": "the Range lies past the end"},
}


@router.get(
    "/{call_sid}/recording", dependencies=[Depends(require_recordings)], response_class=Response, responses=_AUDIO
)
async def get_recording(
    call_sid: CallSidPath,
    request: Request,
    session: SessionDep,
    download: Annotated[bool, Query(description="as an attachment (always audited)")] = False,
) -> Response:
    """The call's recording: channel 1 the caller as received, channel 2 the agent as the caller heard it, on
    the call's timeline (transcript offsets are times in the file). Ranges are served, for seeking."""
    runtime = request.app.state.runtime
    return await recordings.recording_response(
        session, runtime.recordings, runtime.redis, _principal(request), call_sid,
        range_header=request.headers.get("range"), download=download, via="api",
    )  # fmt: skip


@router.delete(
    "/{call_sid}/recording",
    status_code=204,
    dependencies=[Depends(require_role(Role.admin))],
    responses={404: {"description": "no such call, or not recorded"}, 410: {"description": "already deleted"}},
)
async def delete_recording(call_sid: CallSidPath, request: Request, session: SessionDep) -> Response:
    """Erase the call's recording from the store (an erasure request, say); audited. Admins only."""
    await recordings.delete_recording(
        session, request.app.state.runtime.recordings, _principal(request), call_sid, now=utcnow(), reason="admin"
    )
    return Response(status_code=204)
