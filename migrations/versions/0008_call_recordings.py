"""a call's recording: its object in the recording store, its length, and when it was deleted (retention, or an
admin's erasure), so that a deleted recording is known to be gone

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.add_column(sa.Column("recording_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("recording_ms", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("recording_deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch_op:
        batch_op.drop_column("recording_deleted_at")
        batch_op.drop_column("recording_ms")
        batch_op.drop_column("recording_key")
