"""Admins manage API keys (list, create, revoke) and read the audit log, over the API; every change to a key
is itself audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.api_fields import MAX_ID, SID_PATTERN, Text
from app.archive import review
from app.archive.models import AuditEntry
from app.auth.keys import GRANTS, Role, create_api_key, list_keys, require_role, revoke_key, utcnow
from app.auth.models import ApiKey
from app.db import SessionDep
from app.problems import ProblemError

router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(require_role())])  # admins only

KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]


class KeyOut(BaseModel):
    key_id: str
    role: str
    name: str
    grants: list[str]
    created_at: datetime
    revoked_at: datetime | None


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: Text = Field(min_length=1, max_length=100, description="who or what holds the key")
    grants: list[Literal["transcripts", "talk", "recordings"]] = Field(
        default_factory=list, description=f"extra permissions for an ops key: {', '.join(GRANTS)}"
    )


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, store it now (only its hash is kept)")


def _out(row: ApiKey) -> dict[str, Any]:
    return {"key_id": row.key_id, "role": row.role, "name": row.name, "grants": list(row.grants or []),
            "created_at": row.created_at, "revoked_at": row.revoked_at}  # fmt: skip


@router.get("/keys", response_model=list[KeyOut])
async def get_keys(session: SessionDep) -> list[KeyOut]:
    """Every API key: its id, role, name, grants, and when it was made and revoked. Never a secret."""
    return [KeyOut.model_validate(_out(row)) for row in await list_keys(session)]


@router.post("/keys", response_model=KeyCreated, status_code=201)
async def post_key(body: KeyIn, request: Request, session: SessionDep) -> KeyCreated:
    """Make a key. The response holds the key itself, once."""
    key = await create_api_key(session, role=body.role, name=body.name, now=utcnow(), grants=tuple(body.grants))
    key_id = key.split("_")[1]
    row = (await session.execute(select(ApiKey).where(ApiKey.key_id == key_id))).scalar_one()
    await review.audit(session, request.state.principal, "create_key", target=key_id,
                       detail={"role": body.role.value, "name": body.name, "grants": body.grants})  # fmt: skip
    return KeyCreated.model_validate({**_out(row), "key": key})


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    responses={404: {"description": "no such key"}, 409: {"description": "the key making the request itself"}},
)
async def delete_key(key_id: KeyIdPath, request: Request, session: SessionDep) -> Response:
    """Revoke a key at once: requests with it get 401, and a console session it opened is signed out."""
    principal = request.state.principal
    if key_id == principal.key_id:
        raise ProblemError(409, "Cannot revoke your own key", "Sign in with another admin key to revoke this one.")
    row = await revoke_key(session, key_id, now=utcnow())
    if row is None:
        raise ProblemError(404, "Key not found", f"No API key {key_id}.")
    await review.audit(session, principal, "revoke_key", target=key_id, detail={"role": row.role, "name": row.name})
    return Response(status_code=204)


class AuditOut(BaseModel):
    id: int
    at: datetime
    key_id: str | None
    role: str | None
    action: str
    target: str | None
    detail: dict[str, Any]
    via: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_before: int | None = Field(description="pass as before= for the next (older) page")


@router.get("/audit", response_model=AuditPage)
async def get_audit(
    session: SessionDep,
    key_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,32}$")] = None,
    action: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    call_sid: Annotated[str | None, Query(pattern=SID_PATTERN, description="entries about this call")] = None,
    since: Annotated[datetime | None, Query(description="at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="before (ISO 8601)")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="entries older than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Who read, exported, changed or deleted what, and when: newest first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if key_id is not None:
        query = query.where(AuditEntry.key_id == key_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if call_sid is not None:
        query = query.where(AuditEntry.target == call_sid)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    rows = list(await session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[AuditOut.model_validate(r, from_attributes=True) for r in rows],
        next_before=rows[-1].id if more and rows else None,
    )
