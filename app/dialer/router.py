"""Ops REST API: campaigns, contacts, consent, do-not-call lists, and why a contact is (not) called."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_fields import MAX_ID, MAX_OFFSET, Text
from app.archive import review
from app.archive.models import Call, TranscriptSegment
from app.auth.keys import Principal, Role, require_role
from app.db import SessionDep
from app.dialer import service
from app.dialer.contacts_import import ImportReport, parse_contacts_csv, parse_contacts_json
from app.dialer.location import Location, normalise
from app.dialer.models import (
    Attempt,
    Campaign,
    ConsentRecord,
    Contact,
    DialDecisionRecord,
    DncEntry,
    NationalDncImport,
    NationalDncNumber,
)
from app.dialer.policy import Jurisdiction
from app.dialer.rules import STATE_ZONES
from app.problems import ProblemError
from app.results.extraction import schema_problems

router = APIRouter(prefix="/api/v1", tags=["dialer"], dependencies=[Depends(require_role(Role.ops))])

ABANDON_AFTER_MS = 2000
Purpose = Literal["marketing", "informational", "healthcare", "emergency"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def e164(phone: str) -> str:
    normal = normalise(phone)
    if normal is None:
        raise ProblemError(422, "Invalid phone number", f"{phone!r} is not a phone number.")
    return normal


# -- campaigns ------------------------------------------------------------------------------


Name = Annotated[Text, Field(min_length=1, max_length=200)]
Instructions = Annotated[Text, Field(max_length=20_000)]
HHMM = Annotated[str, Field(pattern=r"^\d{2}:\d{2}$", description="callee-local HH:MM")]
MAX_RETRY_SPACING_MIN = 30 * 24 * 60  # a month; longer is a typo
Engine = Literal["realtime", "cascaded"]
ENGINE_DOC = (
    "Which engine answers the campaign's calls: realtime (speech-to-speech) or cascaded (speech-to-text, chat "
    "model, text-to-speech). Unset: the deployment's ENGINE."
)


SCHEMA_DOC = (
    "The post-call extraction's JSON schema: a strict structured-outputs schema of type object (every object "
    "with additionalProperties false and every property required; an optional field is one whose type admits "
    "null). Unset: the deployment's (POST_CALL_SCHEMA_FILE, else reason, resolved, callback_requested, sentiment)."
)
WEBHOOK_DOC = "Where each call's results are POSTed, signed with webhook_secret. Unset: POST_CALL_WEBHOOK_URL."
WebhookUrl = Annotated[Text, Field(max_length=2048, pattern=r"^https?://[^\s/$.?#][^\s]*$", description=WEBHOOK_DOC)]
WebhookSecret = Annotated[Text, Field(min_length=16, max_length=256, description="the HMAC-SHA256 key (write-only)")]


def _check_results(schema: dict[str, Any] | None, url: str | None, secret: str | None, had_secret: bool) -> None:
    if schema is not None:
        problems = schema_problems(schema)
        if problems:
            raise ProblemError(422, "Invalid extraction schema", problems[0], problems=problems[:20])
    if url is not None and secret is None and not had_secret:
        raise ProblemError(
            422, "Webhook needs a secret", "Give webhook_secret with webhook_url: deliveries are signed."
        )


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    purpose: Purpose
    subject: Name
    caller_id: Annotated[Text, Field(max_length=40)]
    instructions: Instructions = ""
    window_start: HHMM | None = None
    window_end: HHMM | None = None
    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_spacing_min: int = Field(default=240, ge=1, le=MAX_RETRY_SPACING_MIN)
    daily_attempt_limit: int = Field(default=1, ge=1, le=10)
    concurrency: int = Field(default=5, ge=1, le=1000)
    calls_per_second: float = Field(default=1.0, gt=0, le=100, allow_inf_nan=False)
    machine_action: Literal["voicemail", "hangup"] = "voicemail"
    engine: Engine | None = Field(default=None, description=ENGINE_DOC)
    extraction_schema: dict[str, Any] | None = Field(default=None, description=SCHEMA_DOC)
    webhook_url: WebhookUrl | None = None
    webhook_secret: WebhookSecret | None = None

    @field_validator("caller_id")
    @classmethod
    def _caller_id(cls, v: str) -> str:
        normal = normalise(v)
        if normal is None:
            raise ValueError("caller_id must be a phone number")
        return normal


class CampaignPatch(BaseModel):
    """What may change on a campaign. Anything else (purpose, subject, caller_id: what its consents and
    frequency caps were decided on) is refused with 422, as is null for a field that cannot be empty;
    null for both window fields removes the window override."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    instructions: Instructions | None = None
    window_start: HHMM | None = None
    window_end: HHMM | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    retry_spacing_min: int | None = Field(default=None, ge=1, le=MAX_RETRY_SPACING_MIN)
    daily_attempt_limit: int | None = Field(default=None, ge=1, le=10)
    concurrency: int | None = Field(default=None, ge=1, le=1000)
    calls_per_second: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    machine_action: Literal["voicemail", "hangup"] | None = None
    engine: Engine | None = Field(default=None, description=ENGINE_DOC + " Null: back to the deployment's.")
    extraction_schema: dict[str, Any] | None = Field(default=None, description=SCHEMA_DOC + " Null: back to it.")
    webhook_url: WebhookUrl | None = None
    webhook_secret: WebhookSecret | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> CampaignPatch:
        nullable = ("window_start", "window_end", "engine", "extraction_schema", "webhook_url", "webhook_secret")
        nulled = sorted(f for f in self.model_fields_set if getattr(self, f) is None and f not in nullable)
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null; leave a field out to keep it")
        return self


class CampaignOut(BaseModel):
    id: int
    name: str
    purpose: str
    subject: str
    caller_id: str
    instructions: str
    status: str
    window_start: str | None
    window_end: str | None
    max_attempts: int
    retry_spacing_min: int
    daily_attempt_limit: int
    concurrency: int
    calls_per_second: float
    machine_action: str
    engine: str | None
    extraction_schema: dict[str, Any] | None
    webhook_url: str | None
    webhook_secret_set: bool
    created_at: datetime
    updated_at: datetime


def _minutes(hhmm: str | None) -> int | None:
    if hhmm is None:
        return None
    h, m = (int(x) for x in hhmm.split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60) or h * 60 + m > 24 * 60:
        raise ProblemError(422, "Invalid window", f"{hhmm} is not a time of day.")
    return h * 60 + m


def _hhmm(minutes: int | None) -> str | None:
    return None if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}"


def _out(c: Campaign) -> CampaignOut:
    return CampaignOut(
        id=c.id,
        name=c.name,
        purpose=c.purpose,
        subject=c.subject,
        caller_id=c.caller_id,
        instructions=c.instructions,
        status=c.status,
        window_start=_hhmm(c.window_start_min),
        window_end=_hhmm(c.window_end_min),
        max_attempts=c.max_attempts,
        retry_spacing_min=c.retry_spacing_min,
        daily_attempt_limit=c.daily_attempt_limit,
        concurrency=c.concurrency,
        calls_per_second=c.calls_per_second,
        machine_action=c.machine_action,
        engine=c.engine,
        extraction_schema=c.extraction_schema,
        webhook_url=c.webhook_url,
        webhook_secret_set=c.webhook_secret is not None,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def _window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """An override may only narrow the law: it is intersected with every legal window at decision time."""
    if (start is None) != (end is None):
        raise ProblemError(422, "Invalid window", "Give both window_start and window_end, or neither.")
    s, e = _minutes(start), _minutes(end)
    if s is not None and e is not None and s >= e:
        raise ProblemError(422, "Invalid window", "window_start must be before window_end.")
    return s, e


async def _campaign(session: SessionDep, campaign_id: int) -> Campaign:
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        raise ProblemError(404, "Campaign not found", f"No campaign {campaign_id}.")
    return campaign


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
CampaignIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
ContactIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post("/campaigns", response_model=CampaignOut, status_code=201)
async def create_campaign(body: CampaignIn, session: SessionDep) -> CampaignOut:
    start, end = _window(body.window_start, body.window_end)
    _check_results(body.extraction_schema, body.webhook_url, body.webhook_secret, had_secret=False)
    now = utcnow()
    fields = body.model_dump(exclude={"window_start", "window_end"})
    campaign = Campaign(**fields, window_start_min=start, window_end_min=end, created_at=now, updated_at=now)
    session.add(campaign)
    await session.commit()
    return _out(campaign)


@router.get("/campaigns", response_model=Page[CampaignOut])
async def list_campaigns(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Page[CampaignOut]:
    total = await session.scalar(select(func.count()).select_from(Campaign)) or 0
    rows = await session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(limit).offset(offset))
    return Page[CampaignOut](items=[_out(c) for c in rows], total=total, limit=limit, offset=offset)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
async def get_campaign(campaign_id: CampaignIdPath, session: SessionDep) -> CampaignOut:
    return _out(await _campaign(session, campaign_id))


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut)
async def update_campaign(campaign_id: CampaignIdPath, body: CampaignPatch, session: SessionDep) -> CampaignOut:
    campaign = await _campaign(session, campaign_id)
    changes = body.model_dump(exclude_unset=True)
    secret_left = campaign.webhook_secret is not None and changes.get("webhook_secret", "") is not None
    _check_results(
        changes.get("extraction_schema"),
        changes.get("webhook_url", campaign.webhook_url),
        changes.get("webhook_secret"),
        had_secret=secret_left,
    )
    if "window_start" in changes or "window_end" in changes:
        start, end = _window(changes.pop("window_start", None), changes.pop("window_end", None))
        campaign.window_start_min, campaign.window_end_min = start, end
    for key, value in changes.items():
        setattr(campaign, key, value)
    campaign.updated_at = utcnow()
    await session.commit()
    return _out(campaign)


# -- contacts -------------------------------------------------------------------------------


class RowErrorOut(BaseModel):
    line: int
    field: str | None
    code: str
    message: str


class ImportedRow(BaseModel):
    line: int = Field(description="the spreadsheet's row number (the header is row 1); a JSON item's index + 1")
    phone: str
    contact_id: int
    outcome: Literal["created", "updated", "unchanged"]
    status: str = Field(description="the contact's status now: pending (to be dialed), held, in_progress, done")
    held_reason: str | None = Field(description="why it is held (not dialed), when it is")


class ImportResult(BaseModel):
    total: int = Field(description="data rows in the file (blank rows not counted)")
    accepted: int = Field(description="rows stored: created, updated or unchanged (held ones included)")
    rejected: int
    created: int
    updated: int
    unchanged: int
    held: int = Field(description="accepted rows whose contact is held, not dialed (see held_reason)")
    encoding: str | None = Field(default=None, description="CSV: the encoding the file was read in")
    delimiter: str | None = Field(default=None, description="CSV: the delimiter found in its header row")
    rows: list[ImportedRow]
    errors: list[RowErrorOut] = Field(description="the rejected rows, one error each")


async def import_report(session: AsyncSession, campaign: Campaign, report: ImportReport) -> ImportResult:
    file_error = report.file_error
    if file_error is not None:  # nothing imported: the file as a whole is refused
        raise ProblemError(
            422, "File not imported", file_error.message, code=file_error.code, line=file_error.line,
            encoding=report.encoding, delimiter=report.delimiter,
        )  # fmt: skip
    outcomes: list[service.ImportOutcome] = []
    rows = list(report.rows)
    now = utcnow()
    for i in range(0, len(rows), 1000):
        chunk = rows[i : i + 1000]
        # Parsing and locating are CPU work: off the event loop, so live calls on this node do not stall.
        locations = await asyncio.to_thread(service.locate_rows, chunk)
        outcomes += await service.import_contacts(session, campaign=campaign, rows=chunk, now=now, locations=locations)
        await session.flush()
    await session.commit()
    imported = [
        ImportedRow(line=o.line, phone=o.phone, contact_id=o.contact.id, outcome=o.outcome,
                    status=o.contact.status, held_reason=o.held_reason)
        for o in outcomes
    ]  # fmt: skip
    count = {kind: sum(1 for r in imported if r.outcome == kind) for kind in ("created", "updated", "unchanged")}
    return ImportResult(
        total=report.total,
        accepted=report.accepted,
        rejected=report.rejected,
        **count,
        held=sum(1 for r in imported if r.status == "held"),
        encoding=report.encoding,
        delimiter=report.delimiter,
        rows=imported,
        errors=[RowErrorOut(line=e.line, field=e.field, code=e.code, message=e.message) for e in report.errors],
    )


CONTACTS_TEMPLATE = (
    "phone,name,zip,state,timezone,consent,consent_at,consent_source,existing_customer,external_id\r\n"
    "(212) 555-0123,Ada Lovelace,10001,NY,America/New_York,written,2026-05-01T10:00:00Z,web form,no,crm-1001\r\n"
    "+1 512 555 0199,Bob Smith,,TX,,express,2026-05-02T15:30:00-05:00,inbound call,yes,crm-1002\r\n"
)


@router.get(
    "/contacts/template.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "a CSV with every column and two example rows"}},
)
async def contacts_template() -> Response:
    """The contacts file's columns, as a spreadsheet to fill in (README: "Contacts files")."""
    return Response(
        CONTACTS_TEMPLATE,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="contacts-template.csv"'},
    )


@router.post("/campaigns/{campaign_id}/contacts", response_model=ImportResult)
async def import_contacts_json(
    campaign_id: CampaignIdPath, items: list[dict[str, Any]], session: SessionDep
) -> ImportResult:
    campaign = await _campaign(session, campaign_id)
    return await import_report(session, campaign, await asyncio.to_thread(parse_contacts_json, items, now=utcnow()))


@router.post(
    "/campaigns/{campaign_id}/contacts/csv",
    response_model=ImportResult,
    responses={
        422: {"description": "the file as a whole cannot be imported (empty, no phone column, ...): nothing was"}
    },
)
async def import_contacts_csv(
    campaign_id: CampaignIdPath,
    request: Request,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="CSV with a header row")],
) -> ImportResult:
    campaign = await _campaign(session, campaign_id)
    limit = request.app.state.runtime.settings.max_import_body_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(413, "File too large", f"CSV uploads are limited to {limit} bytes.")
    return await import_report(session, campaign, await asyncio.to_thread(parse_contacts_csv, data, now=utcnow()))


TRANSITIONS = {
    "start": ({"draft"}, "running"),
    "pause": ({"running"}, "paused"),
    "resume": ({"paused"}, "running"),
    "stop": ({"draft", "running", "paused"}, "stopped"),
}


async def change_status(campaign_id: int, action: str, session: SessionDep) -> CampaignOut:
    campaign = await _campaign(session, campaign_id)
    allowed, target = TRANSITIONS[action]
    if campaign.status not in allowed:
        raise ProblemError(409, "Invalid transition", f"A {campaign.status} campaign cannot {action}.")
    campaign.status = target
    campaign.updated_at = utcnow()
    await session.commit()
    return _out(campaign)


def _transition_route(action: str) -> Callable[..., Awaitable[CampaignOut]]:
    async def transition(campaign_id: CampaignIdPath, session: SessionDep) -> CampaignOut:
        return await change_status(campaign_id, action, session)

    transition.__name__ = f"{action}_campaign"
    return transition


# One route per action (not /{action}): each is documented, other paths under a campaign are never
# taken for an action, and an unknown action is a 404, not a 422.
for _action, (_from, _to) in TRANSITIONS.items():
    router.add_api_route(
        f"/campaigns/{{campaign_id}}/{_action}",
        _transition_route(_action),
        methods=["POST"],
        response_model=CampaignOut,
        summary=f"{_action.capitalize()} a campaign ({' or '.join(sorted(_from))} -> {_to})",
        responses={409: {"description": "The campaign's status does not allow this"}},
    )


ContactStatus = Literal["pending", "in_progress", "done", "held"]


class ContactOut(BaseModel):
    id: int
    phone: str
    name: str | None
    state: str | None
    timezone: str | None
    status: str
    attempts: int
    next_attempt_at: datetime | None
    disposition: str | None
    location: dict[str, Any]


@router.get("/campaigns/{campaign_id}/contacts", response_model=Page[ContactOut])
async def list_contacts(
    campaign_id: CampaignIdPath,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    phone: Annotated[Text | None, Query(max_length=40, description="any spelling of one number")] = None,
    status: Annotated[ContactStatus | None, Query()] = None,
) -> Page[ContactOut]:
    await _campaign(session, campaign_id)
    where = [Contact.campaign_id == campaign_id]
    if phone is not None:
        where.append(Contact.phone == e164(phone))
    if status is not None:
        where.append(Contact.status == status)
    total = await session.scalar(select(func.count()).select_from(Contact).where(*where)) or 0
    rows = await session.scalars(select(Contact).where(*where).order_by(Contact.id).limit(limit).offset(offset))
    items = [ContactOut.model_validate(c, from_attributes=True) for c in rows]
    return Page[ContactOut](items=items, total=total, limit=limit, offset=offset)


class RequeueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class ReleaseIn(BaseModel):
    """Why a held contact may be called, and, for a number whose location the dialer could not tell
    (toll-free, foreign, unknown), the callee's state as the operator's records show it."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason
    state: Annotated[str, Field(pattern=r"^[A-Za-z]{2}$", description="USPS code, e.g. NY")] | None = None


async def _contact(session: SessionDep, campaign_id: int, contact_id: int) -> Contact:
    await _campaign(session, campaign_id)
    contact = await session.get(Contact, contact_id)
    if contact is None or contact.campaign_id != campaign_id:
        raise ProblemError(404, "Contact not found", f"No contact {contact_id} in campaign {campaign_id}.")
    return contact


async def _requeue(
    session: AsyncSession, principal: Principal | None, contact: Contact, action: str, reason: str, *, via: str,
    **detail: Any,
) -> ContactOut:  # fmt: skip
    before = {"status": contact.status, "disposition": contact.disposition}
    contact.status, contact.disposition, contact.next_attempt_at = "pending", None, utcnow()
    await session.flush()
    # Who put the contact back in the queue, and why: in the audit log, next to reads and exports.
    await review.audit(
        session, principal, action, target=f"contact:{contact.id}", via=via,
        detail={"campaign_id": contact.campaign_id, "phone": contact.phone, "reason": reason, "before": before,
                **detail},
    )  # fmt: skip
    return ContactOut.model_validate(contact, from_attributes=True)


async def requeue(
    session: AsyncSession, principal: Principal | None, campaign_id: int, contact_id: int, reason: str, *,
    via: str = "api",
) -> ContactOut:  # fmt: skip
    """A done contact back in the queue, audited under ``principal`` (the API's and the console's rule)."""
    contact = await _contact(session, campaign_id, contact_id)
    if contact.status != "done":
        raise ProblemError(
            409, "Not finished", f"Contact {contact_id} is {contact.status}; only a done one is re-queued."
        )
    return await _requeue(session, principal, contact, "requeue_contact", reason, via=via)


async def release(
    session: AsyncSession, principal: Principal | None, campaign_id: int, contact_id: int, reason: str,
    state: str | None, *, via: str = "api",
) -> ContactOut:  # fmt: skip
    """A held contact let into the queue (with the callee's state when the number cannot tell it), audited."""
    contact = await _contact(session, campaign_id, contact_id)
    if contact.status != "held":
        raise ProblemError(409, "Not held", f"Contact {contact_id} is {contact.status}; only a held one is released.")
    location = service.location_from_dict(contact.location, contact.phone)
    detail: dict[str, Any] = {}
    if location.kind != "geographic":
        state = (state or "").upper()
        if state not in STATE_ZONES:
            raise ProblemError(
                422, "State needed",
                f"Where {contact.phone} is cannot be told from the number ({location.kind}): give the callee's state.",
            )  # fmt: skip
        contact.location = service.location_to_dict(
            Location(contact.phone, "geographic", zones=tuple(STATE_ZONES[state]), states=(state,),
                     notes=(f"located in {state} by an operator: {reason}",))
        )  # fmt: skip
        contact.state = state
        detail["state"] = state
    return await _requeue(session, principal, contact, "release_contact", reason, via=via, **detail)


@router.post("/campaigns/{campaign_id}/contacts/{contact_id}/requeue", response_model=ContactOut)
async def requeue_contact(
    campaign_id: CampaignIdPath, contact_id: ContactIdPath, body: RequeueIn, request: Request, session: SessionDep
) -> ContactOut:
    """A finished contact goes back in the queue (after a consent was recorded, say). The dialer decides
    afresh, under every rule, before it is dialed."""
    return await requeue(session, request.state.principal, campaign_id, contact_id, body.reason)


@router.post("/campaigns/{campaign_id}/contacts/{contact_id}/release", response_model=ContactOut)
async def release_contact(
    campaign_id: CampaignIdPath, contact_id: ContactIdPath, body: ReleaseIn, request: Request, session: SessionDep
) -> ContactOut:
    """A held contact is let into the queue. One held because its location is unknown needs the callee's
    state: its calling hours are then those of that state's time zones."""
    return await release(session, request.state.principal, campaign_id, contact_id, body.reason, body.state)


class ReasonOut(BaseModel):
    code: str
    message: str
    source: str


class DecisionOut(BaseModel):
    contact_id: int
    phone: str
    at: datetime
    outcome: str
    defer_until: datetime | None
    reasons: list[ReasonOut]


@router.get("/campaigns/{campaign_id}/contacts/{contact_id}/decision", response_model=DecisionOut)
async def explain_decision(
    campaign_id: CampaignIdPath,
    contact_id: ContactIdPath,
    request: Request,
    session: SessionDep,
    at: Annotated[datetime | None, Query(description="ISO instant with offset; default now")] = None,
) -> DecisionOut:
    """Why this contact would or would not be called at ``at``; nothing is dialed or recorded."""
    campaign = await _campaign(session, campaign_id)
    contact = await session.get(Contact, contact_id)
    if contact is None or contact.campaign_id != campaign_id:
        raise ProblemError(404, "Contact not found", f"No contact {contact_id} in campaign {campaign_id}.")
    when = at or utcnow()
    if when.tzinfo is None:
        raise ProblemError(422, "Ambiguous instant", "Give `at` with a UTC offset, e.g. 2026-07-01T15:00:00Z.")
    if not 2000 <= when.year <= 2100:
        raise ProblemError(422, "Instant out of range", "`at` must fall between the years 2000 and 2100.")
    jurisdiction: Jurisdiction = request.app.state.runtime.jurisdiction
    decision = await service.decide_for_contact(
        session, campaign=campaign, contact=contact, now=when, jurisdiction=jurisdiction
    )
    return DecisionOut(
        contact_id=contact.id,
        phone=contact.phone,
        at=when,
        outcome=decision.outcome.value,
        defer_until=decision.defer_until,
        reasons=[ReasonOut(code=r.code, message=r.message, source=r.source) for r in decision.reasons],
    )


class DecisionRecordOut(BaseModel):
    id: int
    contact_id: int
    phone: str
    decided_at: datetime
    outcome: str
    defer_until: datetime | None
    reasons: list[dict[str, Any]]
    attempt_id: int | None


@router.get("/campaigns/{campaign_id}/decisions", response_model=Page[DecisionRecordOut])
async def list_decisions(
    campaign_id: CampaignIdPath, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> Page[DecisionRecordOut]:
    where = DialDecisionRecord.campaign_id == campaign_id
    total = await session.scalar(select(func.count()).select_from(DialDecisionRecord).where(where)) or 0
    rows = await session.scalars(
        select(DialDecisionRecord).where(where).order_by(DialDecisionRecord.id.desc()).limit(limit).offset(offset)
    )
    items = [DecisionRecordOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[DecisionRecordOut](items=items, total=total, limit=limit, offset=offset)


class AttemptOut(BaseModel):
    id: int
    contact_id: int
    phone: str
    placed_at: datetime
    call_sid: str | None
    status: str
    answered_by: str | None
    disposition: str | None
    ended_at: datetime | None = Field(description="when the call's final status came; null while it goes on")


@router.get("/campaigns/{campaign_id}/attempts", response_model=Page[AttemptOut])
async def list_attempts(
    campaign_id: CampaignIdPath, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> Page[AttemptOut]:
    where = Attempt.campaign_id == campaign_id
    total = await session.scalar(select(func.count()).select_from(Attempt).where(where)) or 0
    rows = await session.scalars(select(Attempt).where(where).order_by(Attempt.id.desc()).limit(limit).offset(offset))
    items = [AttemptOut.model_validate(a, from_attributes=True) for a in rows]
    return Page[AttemptOut](items=items, total=total, limit=limit, offset=offset)


class Progress(BaseModel):
    contacts: dict[str, int]
    attempts: dict[str, int]
    answered_30d: int
    abandoned_30d: int
    abandonment_rate_30d: float | None = Field(
        description="abandoned / answered; the legal limit for marketing is 0.03"
    )
    finished: bool = Field(description="every contact is done or held: nothing is left to dial")


@router.get("/campaigns/{campaign_id}/progress", response_model=Progress)
async def campaign_progress(campaign_id: CampaignIdPath, session: SessionDep) -> Progress:
    """Contacts by status, attempts by disposition, and the 30-day abandonment rate: answered calls
    where the agent did not speak within 2 s of the call's start (47 CFR 64.1200(a)(7))."""
    await _campaign(session, campaign_id)
    contacts: dict[str, int] = dict(
        (await session.execute(
            select(Contact.status, func.count()).where(Contact.campaign_id == campaign_id).group_by(Contact.status)
        )).all()
    )  # fmt: skip
    attempts: dict[str, int] = dict(
        (await session.execute(
            select(func.coalesce(Attempt.disposition, Attempt.status), func.count())
            .where(Attempt.campaign_id == campaign_id)
            .group_by(func.coalesce(Attempt.disposition, Attempt.status))
        )).all()
    )  # fmt: skip
    since = utcnow() - timedelta(days=30)
    first_words = (
        select(TranscriptSegment.call_id, func.min(TranscriptSegment.offset_ms).label("first_ms"))
        .where(TranscriptSegment.speaker == "agent")
        .group_by(TranscriptSegment.call_id)
        .subquery()
    )
    answered = (
        await session.execute(
            select(Attempt.id, first_words.c.first_ms)
            .join(Call, Call.call_sid == Attempt.call_sid, isouter=True)
            .join(first_words, first_words.c.call_id == Call.id, isouter=True)
            .where(Attempt.campaign_id == campaign_id, Attempt.disposition == "answered", Attempt.placed_at >= since)
        )
    ).all()
    abandoned = sum(1 for _, first_ms in answered if first_ms is None or first_ms > ABANDON_AFTER_MS)
    rate = abandoned / len(answered) if answered else None
    return Progress(
        contacts=contacts,
        attempts=attempts,
        answered_30d=len(answered),
        abandoned_30d=abandoned,
        abandonment_rate_30d=rate,
        finished=bool(contacts) and set(contacts) <= {"done", "held"},
    )


# -- consent and do-not-call ----------------------------------------------------------------


Phone = Annotated[Text, Field(min_length=1, max_length=40)]
Reason = Annotated[Text, Field(min_length=1, max_length=200)]


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: Phone
    kind: Literal["written", "express"]
    source: Annotated[Text, Field(max_length=200)] | None = None
    granted_at: datetime | None = None

    @field_validator("granted_at")
    @classmethod
    def _an_instant(cls, v: datetime | None) -> datetime | None:
        if v is not None and (v.tzinfo is None or v.utcoffset() is None):
            raise ValueError("give the time with its offset (e.g. 2026-12-02T09:00:00-05:00)")
        return v


class RevocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: Phone
    reason: Reason = "revoked through the API"


class DncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: Phone
    reason: Reason


class DncStatus(BaseModel):
    phone: str
    internal: bool
    national: bool
    national_as_of: date | None


@router.post("/consents", status_code=201)
async def record_consent(body: ConsentIn, session: SessionDep) -> dict[str, str]:
    phone = e164(body.phone)
    session.add(
        ConsentRecord(phone=phone, kind=body.kind, source=body.source, granted_at=body.granted_at, recorded_at=utcnow())
    )
    await session.commit()
    return {"phone": phone, "kind": body.kind}


@router.post("/consents/revoke", status_code=201)
async def revoke_consent(body: RevocationIn, session: SessionDep) -> dict[str, str]:
    """Revocation by API: blocks the number for every campaign at once and adds it to the internal DNC."""
    phone = e164(body.phone)
    await service.revoke(session, phone=phone, reason=body.reason, source="api", now=utcnow())
    await session.commit()
    return {"phone": phone, "status": "revoked"}


@router.post("/dnc", status_code=201)
async def add_dnc(body: DncIn, session: SessionDep) -> dict[str, str]:
    phone = e164(body.phone)
    if not await service.on_internal_dnc(session, phone):
        session.add(DncEntry(phone=phone, reason=body.reason, source="api", added_at=utcnow()))
        await session.commit()
    return {"phone": phone, "status": "listed"}


@router.delete("/dnc/{phone}")
async def remove_dnc(
    phone: Annotated[Text, Path(max_length=40)], session: SessionDep, reason: Annotated[Reason, Query()]
) -> dict[str, str]:
    normal = e164(phone)
    entries = list(
        await session.scalars(select(DncEntry).where(DncEntry.phone == normal, DncEntry.removed_at.is_(None)))
    )
    if not entries:
        raise ProblemError(404, "Not listed", f"{normal} is not on the internal do-not-call list.")
    for entry in entries:
        entry.removed_at, entry.removed_reason = utcnow(), reason
    await session.commit()
    return {"phone": normal, "status": "removed"}


@router.get("/dnc/{phone}", response_model=DncStatus)
async def check_dnc(phone: Annotated[Text, Path(max_length=40)], session: SessionDep) -> DncStatus:
    normal = e164(phone)
    return DncStatus(
        phone=normal,
        internal=await service.on_internal_dnc(session, normal),
        national=await service.on_national_dnc(session, normal),
        national_as_of=await service.national_registry_date(session),
    )


class BulkDncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phones: list[Annotated[str, Field(max_length=40)]] = Field(max_length=100_000)
    reason: Reason


@router.post("/dnc/import")
async def import_dnc(body: BulkDncIn, session: SessionDep) -> dict[str, Any]:
    now = utcnow()
    added, rejected = 0, []
    for i, raw in enumerate(body.phones):
        phone = normalise(raw)
        if phone is None:
            rejected.append({"index": i, "phone": raw, "reason": "not a phone number"})
            continue
        if not await service.on_internal_dnc(session, phone):
            session.add(DncEntry(phone=phone, reason=body.reason, source="import", added_at=now))
            await session.flush()
            added += 1
    await session.commit()
    return {"added": added, "rejected": rejected}


class NationalDncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: date
    phones: list[Annotated[str, Field(max_length=40)]] = Field(max_length=5_000_000)


@router.post("/national-dnc", status_code=201)
async def import_national_dnc(body: NationalDncIn, session: SessionDep) -> dict[str, Any]:
    """Replace the deployment's national registry copy; its date gates marketing campaigns."""
    phones = {p for p in (normalise(raw) for raw in body.phones) if p is not None}
    await session.execute(delete(NationalDncNumber))
    record = NationalDncImport(as_of=body.as_of, numbers=len(phones), imported_at=utcnow())
    session.add(record)
    await session.flush()
    session.add_all(NationalDncNumber(phone=p, import_id=record.id) for p in phones)
    await session.commit()
    return {"as_of": body.as_of.isoformat(), "numbers": len(phones)}
