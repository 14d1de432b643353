"""Notifications: the notifications outbox and sweeps.ended_at.

A notification (FTQUEUE_NOTIFY) is written in the transaction that makes its event happen, so
two workers or a redelivered message never write it twice, and claimed by one process before
it is sent. ``sweeps.ended_at`` is set once, by a conditional UPDATE, by the process that sees
a sweep's last trial end. Sweeps that had already ended get an ``ended_at`` here, so that
upgrading announces no old sweep.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("sweep_id", sa.String(64), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_notifications_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_notifications_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_claimed_at", "notifications", ["claimed_at"])
    # A nullable column with no default: a plain ALTER TABLE, no table copy on SQLite.
    op.add_column("sweeps", sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE sweeps SET ended_at = CURRENT_TIMESTAMP"
        " WHERE (status = 'cancelled' OR created >= max_jobs)"
        " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.sweep_id = sweeps.id"
        " AND jobs.status IN ('queued', 'running'))"
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_claimed_at", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("ended_at")
