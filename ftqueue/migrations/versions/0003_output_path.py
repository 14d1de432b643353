"""jobs.adapter_path becomes jobs.output_path: a job's published directory, of any kind.

Predictions are published the same way adapters are, and "adapter" would mislead there. A
rename keeps every recorded path; on SQLite it goes through batch mode (a table copy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("adapter_path", new_column_name="output_path")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("output_path", new_column_name="adapter_path")
