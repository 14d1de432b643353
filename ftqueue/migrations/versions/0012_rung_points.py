"""Rung points: rungs anywhere in training, and verdicts that wait for enough arrivals.

``sweep_rungs.rung`` becomes a float (a rung may sit half-way through an epoch, or at an
optimizer step); ``arrival`` numbers the trials reaching a rung; ``keep``, ``rank``,
``out_of`` and ``decided_at`` become nullable, empty while a verdict waits for ``eta``
arrivals. Rows from before were judged on arrival, so their ``arrival`` is their ``out_of``.
On SQLite the table is copied (batch mode).

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NULLABLE = (("keep", sa.Boolean()), ("rank", sa.Integer()), ("out_of", sa.Integer()))


def upgrade() -> None:
    with op.batch_alter_table("sweep_rungs") as batch:
        batch.alter_column("rung", type_=sa.Float(), existing_type=sa.Integer())
        batch.add_column(sa.Column("arrival", sa.Integer(), nullable=True))
        for name, type_ in _NULLABLE:
            batch.alter_column(name, existing_type=type_, nullable=True)
        batch.alter_column(
            "decided_at",
            existing_type=sa.DateTime(timezone=True),
            nullable=True,
            server_default=None,
        )
    op.execute("UPDATE sweep_rungs SET arrival = out_of")
    with op.batch_alter_table("sweep_rungs") as batch:
        batch.alter_column("arrival", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    # Pending arrivals have no verdict to keep, and fractional rungs no epoch: both go.
    op.execute("DELETE FROM sweep_rungs WHERE keep IS NULL OR rung <> CAST(rung AS INTEGER)")
    with op.batch_alter_table("sweep_rungs") as batch:
        batch.drop_column("arrival")
        for name, type_ in _NULLABLE:
            batch.alter_column(name, existing_type=type_, nullable=False)
        batch.alter_column(
            "decided_at",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        )
        batch.alter_column("rung", type_=sa.Integer(), existing_type=sa.Float())
