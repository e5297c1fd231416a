"""Budget API: spend by day, campaign and call (ops, supervisor); caps (admin); enforcements."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from app.auth.keys import Role, require_role
from app.budget.models import BudgetEnforcement
from app.budget.service import Budget
from app.db import SessionDep

router = APIRouter(
    prefix="/api/v1/budget", tags=["budget"], dependencies=[Depends(require_role(Role.ops, Role.supervisor))]
)


def _budget(request: Request) -> Budget:
    budget: Budget = request.app.state.runtime.budget
    return budget


def usd(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


class CapsIn(BaseModel):
    per_call_usd: float | None = Field(default=None, ge=0)
    per_day_usd: float | None = Field(default=None, ge=0)
    campaigns: dict[int, dict[str, float]] = Field(
        default_factory=dict, description="campaign id -> {per_call_usd, per_day_usd}"
    )


class CapsOut(BaseModel):
    per_call_usd: float | None
    per_day_usd: float | None
    timezone: str
    campaigns: dict[str, dict[str, float | None]]


class SpendOut(BaseModel):
    day: date
    timezone: str
    spent_usd: float
    reserved_usd: float = Field(description="held out of the daily cap for the closing lines of calls in progress")
    cap_usd: float | None
    campaigns: dict[int, float]
    price_version: str


@router.get("/spend", response_model=SpendOut)
async def spend(request: Request, day: Annotated[date | None, Query()] = None) -> SpendOut:
    budget = _budget(request)
    when = day or budget.today(datetime.now(UTC))
    caps = await budget.caps_for(None)
    campaigns = await budget.ledger.campaign_totals(when)
    return SpendOut(
        day=when,
        timezone=budget.zone,
        spent_usd=usd(await budget.ledger.day_total(when)) or 0.0,
        reserved_usd=usd(await budget.ledger.day_reserved(when)) or 0.0,
        cap_usd=usd(caps.per_day),
        campaigns={cid: usd(v) or 0.0 for cid, v in campaigns.items()},
        price_version=budget.prices.version,
    )


@router.get("/calls/{call_sid}")
async def call_spend(call_sid: str, request: Request) -> dict[str, object]:
    budget = _budget(request)
    caps = await budget.caps_for(None)
    return {
        "call_sid": call_sid,
        "spent_usd": usd(await budget.ledger.call_total(call_sid)),
        "cap_usd": usd(caps.per_call),
    }


async def _caps_out(budget: Budget) -> CapsOut:
    stored = await budget.ledger.caps()
    caps = await budget.caps_for(None)
    campaigns = {
        cid: {"per_call_usd": usd(v.get("per_call")), "per_day_usd": usd(v.get("per_day"))}
        for cid, v in stored.get("campaigns", {}).items()
    }
    return CapsOut(
        per_call_usd=usd(caps.per_call), per_day_usd=usd(caps.per_day), timezone=budget.zone, campaigns=campaigns
    )


@router.get("/caps", response_model=CapsOut)
async def get_caps(request: Request) -> CapsOut:
    return await _caps_out(_budget(request))


@router.put("/caps", response_model=CapsOut, dependencies=[Depends(require_role())])
async def put_caps(body: CapsIn, request: Request) -> CapsOut:
    """Admin only. Applies at once on every node (the caps live in Redis)."""
    budget = _budget(request)

    def m(value: float | None) -> int | None:
        return None if value is None else round(value * 1_000_000)

    stored: dict[str, object] = {"per_call": m(body.per_call_usd), "per_day": m(body.per_day_usd)}
    stored["campaigns"] = {
        str(cid): {"per_call": m(v.get("per_call_usd")), "per_day": m(v.get("per_day_usd"))}
        for cid, v in body.campaigns.items()
    }
    await budget.ledger.set_caps(stored)
    return await _caps_out(budget)


class EnforcementOut(BaseModel):
    id: int
    at: datetime
    day: date
    action: str
    cap: str | None
    spent_micros: int
    limit_micros: int | None
    call_sid: str | None
    campaign_id: int | None
    reason: str
    price_version: str | None


@router.get("/enforcements")
async def enforcements(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, object]:
    total = await session.scalar(select(func.count()).select_from(BudgetEnforcement)) or 0
    rows = await session.scalars(
        select(BudgetEnforcement).order_by(BudgetEnforcement.id.desc()).limit(limit).offset(offset)
    )
    items = [EnforcementOut.model_validate(r, from_attributes=True) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}
