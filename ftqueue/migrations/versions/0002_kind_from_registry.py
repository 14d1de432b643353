"""Job kinds come from the registry: drop the CHECK constraint on jobs.kind.

A kind is declared once, in its module under ftqueue/kinds/, and checked when a job is
created; a new kind then needs no schema change. Downgrading restores the constraint with the
two kinds revision 0001 knew, so it fails while jobs of later kinds exist.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.create_check_constraint("kind", "kind IN ('evaluate', 'lora')")
