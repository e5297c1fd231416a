"""Budget API: spend by day, campaign and call (ops, supervisor); caps (admin); enforcements."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_fields import MAX_OFFSET, SID_PATTERN
from app.archive import review
from app.auth.keys import Principal, Role, require_role
from app.budget.models import BudgetEnforcement
from app.budget.service import Budget
from app.db import SessionDep
from app.dialer.models import Campaign
from app.problems import ProblemError

router = APIRouter(
    prefix="/api/v1/budget", tags=["budget"], dependencies=[Depends(require_role(Role.ops, Role.supervisor))]
)


def _budget(request: Request) -> Budget:
    budget: Budget = request.app.state.runtime.budget
    return budget


def usd(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


MAX_CAP_USD = 1_000_000.0  # a cap above this is a typo, not a budget
Usd = Annotated[float, Field(ge=0, le=MAX_CAP_USD, allow_inf_nan=False, strict=True)]


class CampaignCapsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_call_usd: Usd | None = None
    per_day_usd: Usd | None = None


CampaignId = Annotated[int, Field(ge=1, le=2**31 - 1)]
_CAMPAIGN_KEYS: dict[str, Any] = {"propertyNames": {"pattern": "^[1-9][0-9]{0,9}$"}}


class CapsIn(BaseModel):
    """PUT replaces every cap: each field must be given (null: no cap), so none is dropped by omission."""

    model_config = ConfigDict(extra="forbid")
    per_call_usd: Usd | None
    per_day_usd: Usd | None
    campaigns: dict[CampaignId, CampaignCapsIn] = Field(
        description="campaign id -> {per_call_usd, per_day_usd}", json_schema_extra=_CAMPAIGN_KEYS
    )


class CapsPatch(BaseModel):
    """PATCH changes only what it names: a field set to null removes that cap; a campaign set to null
    removes all of that campaign's caps."""

    model_config = ConfigDict(extra="forbid")
    per_call_usd: Usd | None = None
    per_day_usd: Usd | None = None
    campaigns: dict[CampaignId, CampaignCapsIn | None] = Field(default_factory=dict, json_schema_extra=_CAMPAIGN_KEYS)


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


class BudgetOut(BaseModel):
    caps: CapsOut
    spend: SpendOut


@router.get("", response_model=BudgetOut)
async def overview(request: Request) -> BudgetOut:
    """The caps in force and today's spend, with what is held for closing lines: one read."""
    return BudgetOut(caps=await get_caps(request), spend=await spend(request))


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
async def call_spend(call_sid: Annotated[str, Path(pattern=SID_PATTERN)], request: Request) -> dict[str, object]:
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


def _micros(value: float | None) -> int | None:
    return None if value is None else round(value * 1_000_000)


def _campaign_caps(caps: CampaignCapsIn, fields: set[str]) -> dict[str, int | None]:
    names = {"per_call_usd": "per_call", "per_day_usd": "per_day"}
    return {names[f]: _micros(getattr(caps, f)) for f in fields}


async def _known_campaigns(session: SessionDep, ids: list[int]) -> None:
    if not ids:
        return
    found = set(await session.scalars(select(Campaign.id).where(Campaign.id.in_(ids))))
    unknown = sorted(set(ids) - found)
    if unknown:
        raise ProblemError(
            422, "Unknown campaign", f"No campaign {', '.join(map(str, unknown))}: no caps were changed."
        )


async def _store_caps(
    budget: Budget, session: AsyncSession, principal: Principal | None, stored: dict[str, Any], via: str
) -> CapsOut:
    """Set the caps, and audit the change under ``principal`` with the caps before and after, in dollars."""
    before = await _caps_out(budget)
    await budget.ledger.set_caps(stored)
    after = await _caps_out(budget)
    keep = ("per_call_usd", "per_day_usd", "campaigns")
    await review.audit(session, principal, "set_caps", target="budget", via=via,
                       detail={"before": before.model_dump(include=set(keep)),
                               "after": after.model_dump(include=set(keep))})  # fmt: skip
    return after


async def replace_caps(
    budget: Budget, session: AsyncSession, principal: Principal | None, body: CapsIn, *, via: str = "api"
) -> CapsOut:
    """Every cap replaced (PUT's rule; the console's caps form), audited."""
    await _known_campaigns(session, list(body.campaigns))
    stored: dict[str, Any] = {"per_call": _micros(body.per_call_usd), "per_day": _micros(body.per_day_usd)}
    stored["campaigns"] = {
        str(cid): _campaign_caps(v, {"per_call_usd", "per_day_usd"}) for cid, v in body.campaigns.items()
    }
    return await _store_caps(budget, session, principal, stored, via)


@router.put("/caps", response_model=CapsOut, dependencies=[Depends(require_role())])
async def put_caps(body: CapsIn, request: Request, session: SessionDep) -> CapsOut:
    """Admin only. Replaces every cap; applies at once on every node (the caps live in Redis). Audited
    (``set_caps``, with the caps before and after)."""
    return await replace_caps(_budget(request), session, request.state.principal, body)


@router.patch("/caps", response_model=CapsOut, dependencies=[Depends(require_role())])
async def patch_caps(body: CapsPatch, request: Request, session: SessionDep) -> CapsOut:
    """Admin only. Changes only the caps named; the others stay as they are. Audited as PUT is."""
    budget = _budget(request)
    await _known_campaigns(session, [cid for cid, v in body.campaigns.items() if v is not None])
    stored = await budget.ledger.caps()
    given = body.model_fields_set
    if "per_call_usd" in given:
        stored["per_call"] = _micros(body.per_call_usd)
    if "per_day_usd" in given:
        stored["per_day"] = _micros(body.per_day_usd)
    campaigns = dict(stored.get("campaigns", {}))
    for cid, caps in body.campaigns.items():
        if caps is None:
            campaigns.pop(str(cid), None)
        else:
            campaigns[str(cid)] = {**campaigns.get(str(cid), {}), **_campaign_caps(caps, caps.model_fields_set)}
    stored["campaigns"] = campaigns
    return await _store_caps(budget, session, request.state.principal, stored, "api")


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
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, object]:
    total = await session.scalar(select(func.count()).select_from(BudgetEnforcement)) or 0
    rows = await session.scalars(
        select(BudgetEnforcement).order_by(BudgetEnforcement.id.desc()).limit(limit).offset(offset)
    )
    items = [EnforcementOut.model_validate(r, from_attributes=True) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}
