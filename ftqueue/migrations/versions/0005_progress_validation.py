"""jobs.progress_val_accuracy and progress_val_epoch: the last finished epoch's validation.

`submit --wait` and `status --follow` print it as each epoch ends, while the job runs; the
results table gets every epoch only when the job has ended.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("progress_val_accuracy", sa.Float(), nullable=True))
        batch.add_column(sa.Column("progress_val_epoch", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progress_val_epoch")
        batch.drop_column("progress_val_accuracy")
