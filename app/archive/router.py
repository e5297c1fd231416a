"""Supervisor API over archived calls (the web console arrives with the supervisor issue)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from app.archive import service
from app.auth.keys import Role, require_role
from app.db import SessionDep
from app.problems import ProblemError

router = APIRouter(prefix="/api/v1/calls", tags=["calls"], dependencies=[Depends(require_role(Role.supervisor))])


class CallSummary(BaseModel):
    call_sid: str
    direction: str
    from_number: str | None
    to_number: str | None
    status: str
    end_reason: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_ms: int | None


class Segment(BaseModel):
    seq: int
    speaker: str
    text: str
    offset_ms: int
    interrupted: bool


class ToolOut(BaseModel):
    seq: int
    name: str
    tool_call_id: str | None
    arguments: dict[str, Any] | None
    status: str
    output: str | None
    offset_ms: int | None


class EventOut(BaseModel):
    kind: str
    detail: dict[str, Any]
    offset_ms: int | None
    created_at: datetime


class CallDetail(CallSummary):
    usage: dict[str, Any] | None
    transcript: list[Segment]
    tools: list[ToolOut]
    events: list[EventOut]


class CallPage(BaseModel):
    items: list[CallSummary]
    total: int
    limit: int
    offset: int


@router.get("", response_model=CallPage)
async def list_calls(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CallPage:
    rows, total = await service.list_calls(session, limit=limit, offset=offset)
    items = [CallSummary.model_validate(r, from_attributes=True) for r in rows]
    return CallPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{call_sid}", response_model=CallDetail)
async def get_call(call_sid: str, session: SessionDep) -> CallDetail:
    call = await service.get_call(session, call_sid=call_sid)
    if call is None:
        raise ProblemError(404, "Call not found", f"No archived call {call_sid}.")
    events = await service.get_call_events(session, call_sid=call_sid)
    summary = CallSummary.model_validate(call, from_attributes=True)
    return CallDetail(
        **summary.model_dump(),
        usage=call.usage,
        transcript=[Segment.model_validate(s, from_attributes=True) for s in call.segments],
        tools=[ToolOut.model_validate(t, from_attributes=True) for t in call.tools],
        events=[EventOut.model_validate(e, from_attributes=True) for e in events],
    )
