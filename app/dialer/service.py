"""The dialer's I/O shell: look up the facts the compliance engine needs, store what it decided."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.dialer.contacts_import import ContactRow
from app.dialer.location import Location, locate
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
from app.dialer.policy import (
    CampaignRules,
    Consent,
    ContactFacts,
    DialDecision,
    Jurisdiction,
    PastAttempt,
    Purpose,
    decide,
)

HISTORY_DAYS = 31


def location_to_dict(loc: Location) -> dict[str, Any]:
    return {
        "e164": loc.e164,
        "kind": loc.kind,
        "zones": list(loc.zones),
        "states": list(loc.states),
        "notes": list(loc.notes),
    }


def location_from_dict(data: dict[str, Any] | None, phone: str) -> Location:
    """A stored location; one that lacks what a decision needs (written by hand, or by an older
    version) reads as an invalid number, so the contact is held rather than dialed on a guess."""
    data = data if isinstance(data, dict) else {}
    kind = data.get("kind")
    return Location(
        e164=str(data.get("e164") or phone),
        kind=kind if kind in ("geographic", "non_geographic", "invalid", "foreign") else "invalid",
        zones=tuple(data.get("zones", ())),
        states=tuple(data.get("states", ())),
        notes=tuple(data.get("notes", ())),
    )


def campaign_rules(campaign: Campaign, *, national_dnc_as_of: date | None) -> CampaignRules:
    window = None
    if campaign.window_start_min is not None and campaign.window_end_min is not None:
        window = (campaign.window_start_min, campaign.window_end_min)
    return CampaignRules(Purpose(campaign.purpose), campaign.subject, window, national_dnc_as_of)


async def national_registry_date(session: AsyncSession) -> date | None:
    return await session.scalar(select(NationalDncImport.as_of).order_by(NationalDncImport.as_of.desc()).limit(1))


async def consent_for(session: AsyncSession, phone: str) -> tuple[Consent | None, bool]:
    """(best standing consent, revoked): a revocation after the latest grant blocks every campaign."""
    records = list(
        await session.scalars(select(ConsentRecord).where(ConsentRecord.phone == phone).order_by(ConsentRecord.id))
    )
    if not records:
        return None, False
    if records[-1].revoked_at is not None:
        return None, True
    last_revocation = max((i for i, r in enumerate(records) if r.revoked_at is not None), default=-1)
    kinds = {r.kind for r in records[last_revocation + 1 :]}  # only grants given after the last revocation
    if "written" in kinds:
        return Consent.written, False
    return (Consent.express, False) if "express" in kinds else (None, False)


async def on_internal_dnc(session: AsyncSession, phone: str) -> bool:
    found = await session.scalar(
        select(DncEntry.id).where(DncEntry.phone == phone, DncEntry.removed_at.is_(None)).limit(1)
    )
    return found is not None


async def on_national_dnc(session: AsyncSession, phone: str) -> bool:
    return await session.get(NationalDncNumber, phone) is not None


async def history_for(session: AsyncSession, phone: str, now: datetime) -> list[PastAttempt]:
    since = now - timedelta(days=HISTORY_DAYS)
    rows = await session.execute(
        select(Attempt.placed_at, Attempt.subject, Attempt.purpose).where(
            Attempt.phone == phone, Attempt.placed_at > since, Attempt.placed_at <= now
        )
    )
    return [PastAttempt(_aware(at), subject, Purpose(purpose)) for at, subject, purpose in rows]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # SQLite hands back naive UTC


async def decide_for_contact(
    session: AsyncSession,
    *,
    campaign: Campaign,
    contact: Contact,
    now: datetime,
    jurisdiction: Jurisdiction,
) -> DialDecision:
    consent, revoked = await consent_for(session, contact.phone)
    facts = ContactFacts(
        location=location_from_dict(contact.location, contact.phone),
        consent=consent,
        revoked=revoked,
        internal_dnc=await on_internal_dnc(session, contact.phone),
        national_dnc=await on_national_dnc(session, contact.phone),
        existing_customer=contact.existing_customer,
    )
    rules = campaign_rules(campaign, national_dnc_as_of=await national_registry_date(session))
    return decide(facts, rules, now, await history_for(session, contact.phone, now), jurisdiction)


def decision_record(
    decision: DialDecision, *, campaign_id: int, contact: Contact, now: datetime, attempt_id: int | None = None
) -> DialDecisionRecord:
    return DialDecisionRecord(
        campaign_id=campaign_id,
        contact_id=contact.id,
        phone=contact.phone,
        decided_at=now,
        outcome=decision.outcome.value,
        defer_until=decision.defer_until,
        reasons=[{"code": r.code, "message": r.message, "source": r.source} for r in decision.reasons],
        attempt_id=attempt_id,
    )


HELD_REASONS = {
    "non_geographic": "a toll-free or other non-geographic number: no callee-local time can be known; held for review",
    "foreign": "not a US number: US calling rules cannot be applied; held for review",
    "invalid": "not a number that can be placed; held for review",
}


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    line: int
    phone: str
    contact: Contact
    outcome: str  # created | updated | unchanged

    @property
    def held_reason(self) -> str | None:
        """Why the contact is held (not dialed) after the import, when it is."""
        if self.contact.status != "held":
            return None
        kind = (self.contact.location or {}).get("kind")
        return HELD_REASONS.get(str(kind), "held for review")


def locate_rows(rows: Sequence[ContactRow]) -> dict[str, Location]:
    """Where each row's callee may be (CPU-bound: ~150 us a number; callers run it off the event loop)."""
    return {row.phone: locate(row.phone, state=row.state, timezone=row.timezone, zip_code=row.zip) for row in rows}


async def import_contacts(
    session: AsyncSession,
    *,
    campaign: Campaign,
    rows: Sequence[ContactRow],
    now: datetime,
    locations: dict[str, Location] | None = None,
) -> list[ImportOutcome]:
    """Upsert contacts by (campaign, phone) and record their consent: what became of each row (its contact
    has an id once the session is flushed).

    Idempotent: importing the same rows again changes nothing."""
    where = locations if locations is not None else {}
    existing = {
        c.phone: c
        for c in await session.scalars(
            select(Contact).where(Contact.campaign_id == campaign.id, Contact.phone.in_([r.phone for r in rows]))
        )
    }
    consents = {
        (c.phone, c.kind, c.source, _aware(c.granted_at) if c.granted_at else None)
        for c in await session.scalars(select(ConsentRecord).where(ConsentRecord.phone.in_([r.phone for r in rows])))
    }
    outcomes: list[ImportOutcome] = []
    for row in rows:
        fields = {
            "name": row.name,
            "zip": row.zip,
            "state": row.state,
            "timezone": row.timezone,
            "existing_customer": row.existing_customer,
            "external_id": row.external_id,
        }
        contact = existing.get(row.phone)
        if contact is None:
            loc = where.get(row.phone) or locate(row.phone, state=row.state, timezone=row.timezone, zip_code=row.zip)
            contact = Contact(
                campaign_id=campaign.id,
                phone=row.phone,
                location=location_to_dict(loc),
                status="pending" if loc.kind == "geographic" else "held",
                next_attempt_at=now,
                created_at=now,
                **fields,
            )
            session.add(contact)
            existing[row.phone] = contact
            outcome = "created"
        elif any(getattr(contact, k) != v for k, v in fields.items()):
            for k, v in fields.items():
                setattr(contact, k, v)
            loc = where.get(row.phone) or locate(row.phone, state=row.state, timezone=row.timezone, zip_code=row.zip)
            contact.location = location_to_dict(loc)
            outcome = "updated"
        else:
            outcome = "unchanged"
        outcomes.append(ImportOutcome(row.line, row.phone, contact, outcome))
        if row.consent is not None:
            key = (row.phone, row.consent.value, row.consent_source, row.consent_at)
            if key not in consents:
                consents.add(key)
                session.add(
                    ConsentRecord(
                        phone=row.phone,
                        kind=row.consent.value,
                        source=row.consent_source,
                        granted_at=row.consent_at,
                        recorded_at=now,
                    )
                )
    return outcomes


async def revoke(session: AsyncSession, *, phone: str, reason: str, source: str, now: datetime) -> None:
    """Revocation and the internal DNC, together and at once (an opt-out by any reasonable means)."""
    session.add(
        ConsentRecord(
            phone=phone, kind="revocation", source=source, recorded_at=now, revoked_at=now, revoked_reason=reason
        )
    )
    if not await on_internal_dnc(session, phone):
        session.add(DncEntry(phone=phone, reason=reason, source=source, added_at=now))
