"""Every cap enforcement, with the figures that triggered it."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime


class BudgetEnforcement(Base):
    __tablename__ = "budget_enforcements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    day: Mapped[date] = mapped_column(Date, index=True)  # the operator's day
    action: Mapped[str] = mapped_column(
        String(24)
    )  # alert | wrap_up | hard_stop | refuse_call | pause_campaign | resume_campaign
    cap: Mapped[str | None] = mapped_column(String(24))
    spent_micros: Mapped[int] = mapped_column(Integer)
    limit_micros: Mapped[int | None] = mapped_column(Integer)
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    reason: Mapped[str] = mapped_column(String(300))
    price_version: Mapped[str | None] = mapped_column(String(64))
