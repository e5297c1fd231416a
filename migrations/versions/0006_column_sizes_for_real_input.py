"""column sizes for what Twilio and the model really send: SIP callers, long end reasons, tool ids

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # From/To carry SIP URIs (sip:alice.longname@customer-pbx.example.sip.twilio.com) and client: names.
    with op.batch_alter_table("calls") as batch_op:
        batch_op.alter_column("from_number", type_=sa.String(length=255), existing_type=sa.String(length=32))
        batch_op.alter_column("to_number", type_=sa.String(length=255), existing_type=sa.String(length=32))
        batch_op.alter_column("end_reason", type_=sa.Text(), existing_type=sa.String(length=200))
    with op.batch_alter_table("tool_invocations") as batch_op:
        batch_op.alter_column("name", type_=sa.String(length=128), existing_type=sa.String(length=64))
        batch_op.alter_column("tool_call_id", type_=sa.String(length=255), existing_type=sa.String(length=64))


def downgrade() -> None:
    with op.batch_alter_table("tool_invocations") as batch_op:
        batch_op.alter_column("tool_call_id", type_=sa.String(length=64), existing_type=sa.String(length=255))
        batch_op.alter_column("name", type_=sa.String(length=64), existing_type=sa.String(length=128))
    with op.batch_alter_table("calls") as batch_op:
        batch_op.alter_column("end_reason", type_=sa.String(length=200), existing_type=sa.Text())
        batch_op.alter_column("to_number", type_=sa.String(length=32), existing_type=sa.String(length=255))
        batch_op.alter_column("from_number", type_=sa.String(length=32), existing_type=sa.String(length=255))
