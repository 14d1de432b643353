"""Workers: one row per live Celery worker process, for `ftqueue workers`, `top` and `status`.

Each worker writes its row when it is ready and refreshes it every few seconds; a row not
refreshed for a few intervals reads as gone, and live workers delete it a while later. Queue
visibility (how many live workers consume a queue) reads this table. No other table changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("supervisor_pid", sa.Integer(), nullable=True),
        sa.Column("gpu", sa.String(64), nullable=True),
        sa.Column("gpu_name", sa.String(128), nullable=True),
        sa.Column("gpu_memory_mb", sa.Integer(), nullable=True),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("ftqueue_version", sa.String(32), nullable=True),
        sa.Column("torch_version", sa.String(32), nullable=True),
        sa.Column("transformers_version", sa.String(32), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("refresh_seconds", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )
    op.create_index("ix_workers_last_seen_at", "workers", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_workers_last_seen_at", table_name="workers")
    op.drop_table("workers")
