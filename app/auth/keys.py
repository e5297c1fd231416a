"""API keys with roles; one dependency guards every /api/v1 route.

A key reads ``sb_<key_id>_<secret>``. The key_id finds the row; the secret is compared by its
SHA-256 in constant time. Keys carry 256 bits of entropy, so a fast hash is the right hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey
from app.db import SessionDep
from app.problems import ProblemError


class Role(StrEnum):
    admin = "admin"
    ops = "ops"
    supervisor = "supervisor"


# "transcripts": an ops key may read transcripts; "talk": it may talk to the agent from the console's page;
# "recordings": it may hear and download recordings (supervisors and admins always may all three)
GRANTS = ("transcripts", "talk", "recordings")


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    role: Role
    name: str
    grants: frozenset[str] = frozenset()

    @property
    def reads_transcripts(self) -> bool:
        return self.role in (Role.admin, Role.supervisor) or "transcripts" in self.grants

    @property
    def hears_recordings(self) -> bool:
        """May play and download call recordings."""
        return self.role in (Role.admin, Role.supervisor) or "recordings" in self.grants

    @property
    def may_talk(self) -> bool:
        """May place a call to the agent from the console's "Talk to the agent" page."""
        return self.role in (Role.admin, Role.supervisor) or "talk" in self.grants


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "sb" or not key_id or not secret:
        return None
    return key_id, secret


async def create_api_key(
    session: AsyncSession, *, role: Role, name: str, now: datetime, grants: tuple[str, ...] = ()
) -> str:
    """Store a new key and return its plaintext (shown once)."""
    unknown = sorted(set(grants) - set(GRANTS))
    if unknown:
        raise ValueError(f"unknown grant(s) {unknown}; known: {list(GRANTS)}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(key_id=key_id, key_hash=_hash(secret), role=role.value, name=name, created_at=now, grants=sorted(grants))
    )
    await session.commit()
    return f"sb_{key_id}_{secret}"


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    """Every key, newest first (the secrets are not stored, so never shown)."""
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.id.desc())))


async def revoke_key(session: AsyncSession, key_id: str, *, now: datetime) -> ApiKey | None:
    """Revoke a key (a console session it opened is signed out at its next request). None: no such key;
    an already revoked key keeps its first revocation time."""
    row = (await session.execute(select(ApiKey).where(ApiKey.key_id == key_id))).scalar_one_or_none()
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = now
        await session.commit()
    return row


def presented_key(authorization: str, x_api_key: str) -> str:
    """The key a request presents: ``Authorization: Bearer sb_...``, else ``X-API-Key``."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        token = x_api_key
    return token.strip()


async def authenticate(session: AsyncSession, token: str) -> Principal | None:
    parts = _split(token)
    if parts is None:
        return None
    key_id, secret = parts
    row = (await session.execute(select(ApiKey).where(ApiKey.key_id == key_id))).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, _hash(secret)):
        return None
    return Principal(row.key_id, Role(row.role), row.name, frozenset(row.grants or ()))


def require_role(*allowed: Role) -> Callable[[Request, AsyncSession], Awaitable[Principal]]:
    """Dependency: 401 without a valid key, 403 when its role is not allowed (admin always is)."""

    async def dependency(request: Request, session: SessionDep) -> Principal:
        # Found by the request guard (app/http_guard.py) before the body was read; else looked up here.
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:
            token = presented_key(request.headers.get("authorization", ""), request.headers.get("x-api-key", ""))
            principal = await authenticate(session, token) if token else None
        if principal is None:
            raise ProblemError(401, "Unauthorized", "A valid API key is required (Authorization: Bearer sb_...).")
        if principal.role is not Role.admin and principal.role not in allowed:
            raise ProblemError(
                403,
                "Forbidden",
                f"Role {principal.role.value!r} may not use this endpoint.",
                allowed=[r.value for r in allowed],
            )
        request.state.principal = principal
        return principal

    return dependency


def utcnow() -> datetime:
    return datetime.now(UTC)


def _require(may: Callable[[Principal], bool], what: str, grant: str) -> Callable[[Request], Principal]:
    """After require_role: 403 unless the key may do ``what`` (by its role, or by ``grant``)."""

    def dependency(request: Request) -> Principal:
        principal: Principal = request.state.principal
        if not may(principal):
            raise ProblemError(
                403, "Forbidden", f"Role {principal.role.value!r} may not {what} without the {grant!r} grant."
            )
        return principal

    return dependency


require_transcripts = _require(lambda p: p.reads_transcripts, "read transcripts", "transcripts")
require_recordings = _require(lambda p: p.hears_recordings, "hear recordings", "recordings")
