"""supervisor review: call facts to filter on, full-text search, audit log, key grants

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CALL_COLUMNS = [
    ("campaign_id", sa.Integer()),
    ("disposition", sa.String(length=32)),
    ("cost_micros", sa.BigInteger()),
    ("price_version", sa.String(length=64)),
    ("transferred", sa.Boolean()),
    ("opted_out", sa.Boolean()),
    ("turns", sa.Integer()),
    ("latency_p50_ms", sa.Integer()),
    ("latency_p95_ms", sa.Integer()),
    ("redacted", sa.Boolean()),
    ("transcript_purged_at", sa.DateTime(timezone=True)),
]
_CALL_INDEXES = ["campaign_id", "disposition", "cost_micros", "duration_ms"]

# SQLite: an external-content FTS5 table over transcript_segments, kept in step by triggers.
_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE transcript_fts USING fts5(text, content='transcript_segments', content_rowid='id',"
    " tokenize='porter unicode61')",
    "CREATE TRIGGER transcript_fts_ai AFTER INSERT ON transcript_segments BEGIN"
    " INSERT INTO transcript_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER transcript_fts_ad AFTER DELETE ON transcript_segments BEGIN"
    " INSERT INTO transcript_fts(transcript_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER transcript_fts_au AFTER UPDATE ON transcript_segments BEGIN"
    " INSERT INTO transcript_fts(transcript_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " INSERT INTO transcript_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO transcript_fts(transcript_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("calls", schema=None) as batch_op:
        for name, type_ in _CALL_COLUMNS:
            default = sa.false() if isinstance(type_, sa.Boolean) else None
            batch_op.add_column(sa.Column(name, type_, nullable=default is None, server_default=default))
        for name in _CALL_INDEXES:
            batch_op.create_index(batch_op.f(f"ix_calls_{name}"), [name], unique=False)
        batch_op.create_index("ix_calls_from_number", ["from_number"], unique=False)
        batch_op.create_index("ix_calls_to_number", ["to_number"], unique=False)
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grants", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(op.f("ix_audit_log_key_id"), "audit_log", ["key_id"], unique=False)
    op.create_index("ix_audit_log_target", "audit_log", ["target"], unique=False)
    if dialect == "postgresql":
        op.execute(
            "ALTER TABLE transcript_segments ADD COLUMN tsv tsvector"
            " GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_transcript_segments_tsv ON transcript_segments USING gin (tsv)")
    elif dialect == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_transcript_segments_tsv")
        op.execute("ALTER TABLE transcript_segments DROP COLUMN IF EXISTS tsv")
    elif dialect == "sqlite":
        for name in ("transcript_fts_ai", "transcript_fts_ad", "transcript_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS transcript_fts")
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_key_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("grants")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_to_number")
        batch_op.drop_index("ix_calls_from_number")
        for name in reversed(_CALL_INDEXES):
            batch_op.drop_index(batch_op.f(f"ix_calls_{name}"))
        for name, _ in reversed(_CALL_COLUMNS):
            batch_op.drop_column(name)
