"""Indexes for a million jobs: `list` pages by (status, id) and (sweep_id, id).

`ftqueue list --status running` on a million jobs walked the primary key back from the
newest job until it found 50 running ones; (status, id) reads them straight off. The
sweep index gains the id for the same reason and replaces the one on sweep_id alone.

Revision ID: 0006
Revises: 0005b
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_status_id", "jobs", ["status", "id"])
    op.create_index("ix_jobs_sweep_id_id", "jobs", ["sweep_id", "id"])
    op.drop_index("ix_jobs_sweep_id", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_sweep_id", "jobs", ["sweep_id"])
    op.drop_index("ix_jobs_sweep_id_id", table_name="jobs")
    op.drop_index("ix_jobs_status_id", table_name="jobs")
