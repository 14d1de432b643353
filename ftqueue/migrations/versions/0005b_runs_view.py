"""The ``runs`` view, and ``jobs.spec`` as ``jsonb`` on PostgreSQL.

``runs`` has one row per job, split and epoch, with the hyper-parameters as columns, so that
ad-hoc SQL reads like `ftqueue report`: ``final_epoch`` marks each job's last epoch on a
split, ``role`` says what the job is in the comparison (``base``: a bare model evaluated with
its head trained; ``run``: a LoRA training run; ``adapter evaluation``: a run's adapter
evaluated, whose hyper-parameter columns are those of the run that trained it). ``status`` is
passed through as stored, so a status added later needs no change here.

The view is part of this revision, not of models.py (migrations/env.py keeps autogenerate
away from it). On SQLite a later revision that copies ``jobs`` or ``results`` in batch mode
must drop the view first and create it again after (SQLite checks views when a table is
renamed into place).

Revision ID: 0005b
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005b"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = "runs"

# (column, JSON path below the spec, SQL type): the hyper-parameters of the configuration.
HYPER = (
    ("r", ("r",), "integer"),
    ("alpha", ("alpha",), "real"),
    ("dropout", ("dropout",), "real"),
    ("target_modules", ("target_modules",), "list"),
    ("bias", ("bias",), "text"),
    ("pooling", ("pooling",), "text"),
    ("lr", ("lr",), "real"),
    ("head_lr", ("head_lr",), "real"),
    ("epochs", ("epochs",), "integer"),
    ("head_epochs", ("head_epochs",), "integer"),
    ("batch_size", ("batch_size",), "integer"),
    ("max_length", ("max_length",), "integer"),
    ("warmup_ratio", ("warmup_ratio",), "real"),
    ("weight_decay", ("weight_decay",), "real"),
    ("seed", ("seed",), "integer"),
    ("train_samples", ("data", "train_samples"), "integer"),
    ("eval_samples", ("data", "eval_samples"), "integer"),
    ("split_seed", ("data", "split_seed"), "integer"),
)

# An adapter evaluation is described by the configuration that trained its adapter.
HP = "COALESCE(src.spec, j.spec)"


def _sqlite_field(path: Sequence[str], kind: str) -> str:
    json_path = "$." + ".".join(path)
    if kind == "list":
        return f"(SELECT group_concat(value, ',') FROM json_each({HP}, '{json_path}'))"
    cast = {"integer": "INTEGER", "real": "REAL", "text": "TEXT"}[kind]
    return f"CAST(json_extract({HP}, '{json_path}') AS {cast})"


def _postgresql_field(path: Sequence[str], kind: str) -> str:
    parent = HP + "".join(f"->'{p}'" for p in path[:-1])
    if kind == "list":
        value = f"{parent}->'{path[-1]}'"
        return (
            f"CASE WHEN jsonb_typeof({value}) = 'array' THEN "
            f"array_to_string(ARRAY(SELECT jsonb_array_elements_text({value})), ',') END"
        )
    cast = {"integer": "integer", "real": "double precision", "text": "text"}[kind]
    return f"({parent}->>'{path[-1]}')::{cast}"


def _view_sql(dialect: str) -> str:
    if dialect == "postgresql":
        field, adapter_job = _postgresql_field, "(j.spec->>'adapter_job')::integer"
    else:
        field, adapter_job = _sqlite_field, "CAST(json_extract(j.spec, '$.adapter_job') AS INTEGER)"
    hyper = ",\n    ".join(f"{field(path, kind)} AS {name}" for name, path, kind in HYPER)
    return f"""CREATE VIEW {VIEW} AS
SELECT
    r.job_id AS job_id,
    j.kind AS kind,
    CASE
        WHEN j.kind = 'lora' THEN 'run'
        WHEN j.kind = 'evaluate' AND {adapter_job} IS NOT NULL THEN 'adapter evaluation'
        WHEN j.kind = 'evaluate' THEN 'base'
        ELSE 'other'
    END AS role,
    j.status AS status,
    j.model AS model,
    j.dataset AS dataset,
    j.sweep_id AS sweep_id,
    j.name AS name,
    r.split AS split,
    r.epoch AS epoch,
    (r.epoch = (
        SELECT MAX(f.epoch) FROM results f WHERE f.job_id = r.job_id AND f.split = r.split
    )) AS final_epoch,
    r.accuracy AS accuracy,
    r.macro_f1 AS macro_f1,
    r.loss AS loss,
    r.n_examples AS n_examples,
    {adapter_job} AS adapter_job,
    {hyper},
    j.config_hash AS config_hash,
    j.train_seconds AS train_seconds,
    j.samples_per_second AS samples_per_second,
    j.trainable_params AS trainable_params,
    j.total_params AS total_params,
    j.created_at AS created_at,
    j.finished_at AS finished_at,
    j.spec AS spec
FROM results r
JOIN jobs j ON j.id = r.job_id
LEFT JOIN jobs src ON src.id = {adapter_job}"""


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "postgresql":
        # Before the view: PostgreSQL refuses to change the type of a column a view reads.
        op.alter_column(
            "jobs",
            "spec",
            type_=postgresql.JSONB(),
            existing_type=sa.JSON(),
            existing_nullable=False,
            postgresql_using="spec::jsonb",
        )
    op.execute(_view_sql(dialect))


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    if op.get_context().dialect.name == "postgresql":
        op.alter_column(
            "jobs",
            "spec",
            type_=sa.JSON(),
            existing_type=postgresql.JSONB(),
            existing_nullable=False,
            postgresql_using="spec::json",
        )
