"""Sweep states: ``broken`` with its problem, and the lease of an eager sweep's process.

A sweep the reaper cannot fill (its study gone, a trial it cannot write) is marked ``broken``
with the reason, so that one such sweep no longer stops the reaper filling the others and
the command line can say what happened. An eager sweep (FTQUEUE_EAGER=1) is held by its
process under a lease, like its jobs, so that a killed one is seen as such and can be resumed.

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "status IN ('active', 'cancelled')"
NEW = "status IN ('active', 'cancelled', 'broken')"


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("problem", sa.Text(), nullable=True))
        batch.add_column(sa.Column("holder", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("ck_sweeps_status"), type_="check")
        batch.create_check_constraint("status", NEW)


def downgrade() -> None:
    op.execute("UPDATE sweeps SET status = 'cancelled' WHERE status = 'broken'")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_constraint(op.f("ck_sweeps_status"), type_="check")
        batch.create_check_constraint("status", OLD)
        batch.drop_column("lease_expires_at")
        batch.drop_column("holder")
        batch.drop_column("problem")
