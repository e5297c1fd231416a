"""The dialer's ledger: campaigns, contacts, consent, do-not-call lists, attempts and every decision."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(16))  # marketing | informational | healthcare | emergency
    subject: Mapped[str] = mapped_column(String(200))  # frequency caps count calls on the same subject
    caller_id: Mapped[str] = mapped_column(String(20))
    instructions: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | running | paused | stopped
    window_start_min: Mapped[int | None] = mapped_column(Integer)  # narrowing override, callee-local
    window_end_min: Mapped[int | None] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    retry_spacing_min: Mapped[int] = mapped_column(Integer, default=240)
    daily_attempt_limit: Mapped[int] = mapped_column(Integer, default=1)
    concurrency: Mapped[int] = mapped_column(Integer, default=5)
    calls_per_second: Mapped[float] = mapped_column(default=1.0)
    machine_action: Mapped[str] = mapped_column(String(16), default="voicemail")  # voicemail | hangup
    engine: Mapped[str | None] = mapped_column(String(16), default=None)  # realtime | cascaded; None: ENGINE
    # Post-call results: the extraction's JSON schema (None: the deployment's), and where they are pushed
    extraction_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    webhook_secret: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "phone"),
        Index("ix_contacts_due", "campaign_id", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(20), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    zip: Mapped[str | None] = mapped_column(String(5))
    state: Mapped[str | None] = mapped_column(String(2))
    timezone: Mapped[str | None] = mapped_column(String(64))
    existing_customer: Mapped[bool] = mapped_column(Boolean, default=False)
    external_id: Mapped[str | None] = mapped_column(String(100))
    location: Mapped[dict[str, Any]] = mapped_column(JSON)  # kind, zones, states: computed once at import
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | in_progress | done | held
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    disposition: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConsentRecord(Base):
    """Consent per number (any campaign of this deployment), with its source; revocations kept."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # written | express
    source: Mapped[str | None] = mapped_column(String(200))
    granted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(200))


class DncEntry(Base):
    """The internal do-not-call list; removals are kept with their reason."""

    __tablename__ = "dnc_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(64))  # api | opt_out_tool | dtmf | import
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    removed_reason: Mapped[str | None] = mapped_column(String(200))


class NationalDncImport(Base):
    __tablename__ = "national_dnc_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    as_of: Mapped[date] = mapped_column(Date)
    numbers: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime())


class NationalDncNumber(Base):
    __tablename__ = "national_dnc_numbers"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("national_dnc_imports.id", ondelete="CASCADE"), index=True)


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(16))
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(24), default="placing")
    answered_by: Mapped[str | None] = mapped_column(String(32))
    disposition: Mapped[str | None] = mapped_column(String(32))
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DialDecisionRecord(Base):
    """Every decision the dialer took, dialed or not, with the rules that decided it."""

    __tablename__ = "dial_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    phone: Mapped[str] = mapped_column(String(20))
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    outcome: Mapped[str] = mapped_column(String(8))
    defer_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    attempt_id: Mapped[int | None] = mapped_column(ForeignKey("attempts.id", ondelete="SET NULL"))
