"""Archived calls: what a supervisor reads after the fact."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UtcDateTime


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str | None] = mapped_column(String(255), index=True)  # E.164, or a SIP URI / client:
    to_number: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32))
    end_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    duration_ms: Mapped[int | None] = mapped_column(Integer, index=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What a supervisor filters and sorts by, worked out once when the call is archived.
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    disposition: Mapped[str | None] = mapped_column(String(32), index=True)
    cost_micros: Mapped[int | None] = mapped_column(BigInteger, index=True)
    price_version: Mapped[str | None] = mapped_column(String(64))
    transferred: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    turns: Mapped[int | None] = mapped_column(Integer)
    latency_p50_ms: Mapped[int | None] = mapped_column(Integer)
    latency_p95_ms: Mapped[int | None] = mapped_column(Integer)
    redacted: Mapped[bool] = mapped_column(Boolean, default=False)
    transcript_purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # The call's recording in the recording store (``{call_sid}/recording.ogg``), its length, and when it was
    # deleted from the store (retention, or an admin's erasure): the key stays, to say what was there.
    recording_key: Mapped[str | None] = mapped_column(String(255))
    recording_ms: Mapped[int | None] = mapped_column(Integer)
    recording_deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Post-call results (app.results): a short summary and the extraction against the campaign's (or the
    # deployment's) schema; status pending | done | skipped | failed (None: results are not made)
    results_status: Mapped[str | None] = mapped_column(String(16), index=True)
    results_detail: Mapped[str | None] = mapped_column(Text)  # why skipped or failed
    summary: Mapped[str | None] = mapped_column(Text)
    extraction: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    results_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    segments: Mapped[list[TranscriptSegment]] = relationship(
        back_populates="call", order_by="TranscriptSegment.seq", cascade="all, delete-orphan"
    )
    tools: Mapped[list[ToolInvocation]] = relationship(
        back_populates="call", order_by="ToolInvocation.seq", cascade="all, delete-orphan"
    )


class TranscriptSegment(Base):
    """One line of a call. Full-text search: a GIN-indexed tsvector column on PostgreSQL, an FTS5 table
    kept by triggers on SQLite (both made by migration 0005, read by app.archive.search)."""

    __tablename__ = "transcript_segments"
    __table_args__ = (UniqueConstraint("call_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    offset_ms: Mapped[int] = mapped_column(Integer)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)

    call: Mapped[Call] = relationship(back_populates="segments")


class ToolInvocation(Base):
    """One tool call the agent made: its arguments, and what came of it."""

    __tablename__ = "tool_invocations"
    __table_args__ = (UniqueConstraint("call_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    tool_call_id: Mapped[str | None] = mapped_column(String(255))
    arguments: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # ok | error | skipped | done | pending
    output: Mapped[str | None] = mapped_column(Text)
    offset_ms: Mapped[int | None] = mapped_column(Integer)

    call: Mapped[Call] = relationship(back_populates="tools")


class CallEvent(Base):
    """Status callbacks, tool calls, barge-ins, errors: the audit trail of a call."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(48))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offset_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditEntry(Base):
    """Who read or exported what, and when: every supervisor read of a call and every export."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))  # read_call | export_call | export_search | search | read_live
    target: Mapped[str | None] = mapped_column(String(64))  # a call sid, or None for a search
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    via: Mapped[str] = mapped_column(String(16), default="api")  # api | console
