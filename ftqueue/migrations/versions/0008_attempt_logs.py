"""Attempt logs: each attempt's log lines and a failed attempt's traceback, in the database.

A job's log and traceback were only in the log of the machine that ran it; the attempt_logs
table keeps them where every machine reads them (`ftqueue logs`, `show --json`). One row per
batch of lines, so a running attempt appends without rewriting what it wrote before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attempt_logs",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.CheckConstraint("stream IN ('log', 'traceback')", name=op.f("ck_attempt_logs_stream")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_attempt_logs_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "attempt", "stream", "seq", name=op.f("pk_attempt_logs")),
    )


def downgrade() -> None:
    op.drop_table("attempt_logs")
