"""A call's webhook deliveries, each attempt with its response, and redelivery."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel
from sqlalchemy import select

from app.api_fields import MAX_ID, SID_PATTERN
from app.archive import review
from app.auth.keys import Role, require_role, require_transcripts, utcnow
from app.db import SessionDep
from app.problems import ProblemError
from app.results.models import WebhookAttempt, WebhookDelivery

router = APIRouter(
    prefix="/api/v1/calls",
    tags=["calls"],
    # a delivery's body is the call's transcript and results
    dependencies=[Depends(require_role(Role.supervisor, Role.ops)), Depends(require_transcripts)],
)
CallSidPath = Annotated[str, Path(pattern=SID_PATTERN)]
DeliveryIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None
    response: str | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: int
    url: str
    event: str
    status: str  # pending | sending | delivered | gave_up
    attempts: int
    created_at: datetime
    next_at: datetime | None
    delivered_at: datetime | None
    redelivery_of: int | None
    log: list[AttemptOut]


def _out(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id, url=delivery.url, event=delivery.event, status=delivery.status, attempts=delivery.attempts,
        created_at=delivery.created_at, next_at=delivery.next_at if delivery.status == "pending" else None,
        delivered_at=delivery.delivered_at, redelivery_of=delivery.redelivery_of,
        log=[AttemptOut.model_validate(a, from_attributes=True) for a in attempts],
    )  # fmt: skip


async def deliveries_of(session: Any, call_sid: str) -> list[DeliveryOut]:
    deliveries = list(
        await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.call_sid == call_sid).order_by(WebhookDelivery.id)
        )
    )
    attempts = list(
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.id)
        )
    ) if deliveries else []  # fmt: skip
    return [_out(d, [a for a in attempts if a.delivery_id == d.id]) for d in deliveries]


@router.get("/{call_sid}/deliveries", response_model=list[DeliveryOut])
async def list_deliveries(call_sid: CallSidPath, session: SessionDep) -> list[DeliveryOut]:
    """The call's webhook deliveries (its results to each receiver), each attempt with the receiver's answer."""
    return await deliveries_of(session, call_sid)


@router.post("/{call_sid}/deliveries/{delivery_id}/redeliver", response_model=DeliveryOut, status_code=202)
async def redeliver(
    call_sid: CallSidPath, delivery_id: DeliveryIdPath, request: Request, session: SessionDep
) -> DeliveryOut:
    """Send the same results again, to the same receiver, as a new delivery (signed afresh, retried as any)."""
    original = await session.get(WebhookDelivery, delivery_id)
    if original is None or original.call_sid != call_sid:
        raise ProblemError(404, "Delivery not found", f"No delivery {delivery_id} of call {call_sid}.")
    now = utcnow()
    again = WebhookDelivery(
        call_sid=call_sid, campaign_id=original.campaign_id, url=original.url, event=original.event,
        body=original.body, status="pending", attempts=0, created_at=now, first_due_at=now, next_at=now,
        redelivery_of=original.id,
    )  # fmt: skip
    session.add(again)
    await session.commit()
    await review.audit(session, request.state.principal, "redeliver_webhook", target=call_sid,
                       detail={"delivery": original.id, "new_delivery": again.id})  # fmt: skip
    worker = request.app.state.runtime.post_call
    if worker is not None:
        worker.wake()
    return _out(again, [])
