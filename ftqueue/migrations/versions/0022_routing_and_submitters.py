"""GPU classes, priorities and submitters: jobs.gpu_class, jobs.priority, jobs.submitted_by.

A job may name the GPU class it must run on (its messages then go to ``<kind>.<class>``),
carries its Celery priority (0 high, 3 normal, 6 low) so that a re-queue publishes it as it
was submitted, and records who submitted it; the per-user cap counts a user's running jobs
at every claim, hence the index. Each worker's row records its class. The ``runs`` view gains
a ``user`` column (quoted in PostgreSQL, where a bare ``user`` is the session's role).
Jobs from before this revision read as normal priority, any class, no submitter.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = "runs"
_RUNS = "ftqueue.migrations.versions.0010_trained_with"


def _view_sql(dialect: str) -> str:
    """Revision 0010's view, with the submitter after the job's name."""
    before = importlib.import_module(_RUNS)._view_sql(dialect)
    anchor = "    j.name AS name,\n"
    assert anchor in before
    return before.replace(anchor, anchor + '    j.submitted_by AS "user",\n')


def upgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    # Nullable columns, and one with a constant default: plain ALTER TABLEs, no table copy.
    op.add_column("jobs", sa.Column("gpu_class", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("priority", sa.Integer(), server_default="3", nullable=False))
    op.add_column("jobs", sa.Column("submitted_by", sa.String(64), nullable=True))
    op.create_index("ix_jobs_submitted_by_status", "jobs", ["submitted_by", "status"])
    op.add_column("workers", sa.Column("gpu_class", sa.String(32), nullable=True))
    op.execute(_view_sql(op.get_context().dialect.name))


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("gpu_class")
    op.drop_index("ix_jobs_submitted_by_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("submitted_by")
        batch.drop_column("priority")
        batch.drop_column("gpu_class")
    op.execute(importlib.import_module(_RUNS)._view_sql(op.get_context().dialect.name))
