"""Report summary: sums of the kept epoch's results per configuration and split.

``report_summary`` holds, per model, dataset, kind, configuration (the adapter's for a job
that names one) and split, the count, sums, sums of squares, lowest and highest of accuracy
and loss over succeeded jobs at the epoch each kept, with train seconds and trainable
shares: the default `ftqueue report` reads it instead of every result. ``record_success``
keeps it up to date; this revision counts the jobs already recorded, in one INSERT ... SELECT.

Revision ID: 0021
Revises: 0013
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT_FIRST = 2**31 - 1
_FLOATS: tuple[str, ...] = ("acc_sum", "acc_squares", "acc_min", "acc_max", "loss_sum")
_FLOATS += ("loss_squares", "loss_min", "loss_max", "seconds_sum")


def _order(r: str) -> str:
    return f"CASE WHEN {r}.epoch = j.selected_epoch THEN {KEPT_FIRST} ELSE {r}.epoch END"


def _fill_sql(dialect: str) -> str:
    if dialect == "postgresql":
        ref = "CAST(j.spec ->> 'adapter_job' AS INTEGER)"
    else:
        ref = "json_extract(j.spec, '$.adapter_job')"
    return f"""
INSERT INTO report_summary (model, dataset, kind, adapter, config, split, n, acc_sum,
    acc_squares, acc_min, acc_max, loss_sum, loss_squares, loss_min, loss_max, seconds_sum,
    seconds_n, share_sum, share_n, first_job, examples_min)
SELECT model, dataset, kind, adapter, config, split,
    COUNT(*), SUM(accuracy), SUM(accuracy * accuracy), MIN(accuracy), MAX(accuracy),
    SUM(loss), SUM(loss * loss), MIN(loss), MAX(loss),
    COALESCE(SUM(seconds), 0), COUNT(seconds), COALESCE(SUM(share), 0), COUNT(share),
    MIN(job_id), MIN(n_examples)
FROM (
    SELECT j.id AS job_id, j.model AS model, j.dataset AS dataset, j.kind AS kind,
        ({ref} IS NOT NULL) AS adapter,
        COALESCE(a.config_hash, j.config_hash) AS config,
        r.split AS split, r.accuracy AS accuracy, r.loss AS loss, r.n_examples AS n_examples,
        COALESCE(a.train_seconds, j.train_seconds) AS seconds,
        CAST(COALESCE(a.trainable_params, j.trainable_params) AS FLOAT)
            / CAST(NULLIF(COALESCE(a.total_params, j.total_params), 0) AS FLOAT) AS share
    FROM results r
    JOIN jobs j ON j.id = r.job_id
    LEFT JOIN jobs a ON a.id = {ref}
    WHERE j.status = 'succeeded'
      AND NOT EXISTS (
        SELECT 1 FROM results l
        WHERE l.job_id = r.job_id AND l.split = r.split AND {_order("l")} > {_order("r")}
      )
) kept
GROUP BY model, dataset, kind, adapter, config, split
"""


def upgrade() -> None:
    op.create_table(
        "report_summary",
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("dataset", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("adapter", sa.Boolean(), nullable=False),
        sa.Column("config", sa.String(64), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False) for name in _FLOATS),
        sa.Column("seconds_n", sa.Integer(), nullable=False),
        sa.Column("share_sum", sa.Float(), nullable=False),
        sa.Column("share_n", sa.Integer(), nullable=False),
        sa.Column("first_job", sa.Integer(), nullable=False),
        sa.Column("examples_min", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint(
            "model", "dataset", "kind", "adapter", "config", "split", name="pk_report_summary"
        ),
    )
    op.execute(_fill_sql(op.get_bind().dialect.name))


def downgrade() -> None:
    op.drop_table("report_summary")
