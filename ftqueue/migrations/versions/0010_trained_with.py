"""jobs.trained_with: the hyper-parameters a job trained with; the ``runs`` view reads them.

A LoRA spec may leave lr, head_lr, epochs and batch_size to the device (they stay None in the
spec, so identical specs still de-duplicate wherever they run). The job records the values it
used, and ``runs`` shows those, falling back to the spec for jobs recorded before this
revision (their ``stats.recipe``, where they have one, is copied here). The view also gains
``grad_accum``: 1 for runs whose spec leaves it out.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = "runs"

# (column, JSON path below the spec, SQL type): as revision 0005b, with grad_accum added.
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
    ("grad_accum", ("grad_accum",), "integer"),
    ("max_length", ("max_length",), "integer"),
    ("warmup_ratio", ("warmup_ratio",), "real"),
    ("weight_decay", ("weight_decay",), "real"),
    ("seed", ("seed",), "integer"),
    ("train_samples", ("data", "train_samples"), "integer"),
    ("eval_samples", ("data", "eval_samples"), "integer"),
    ("split_seed", ("data", "split_seed"), "integer"),
)

# An adapter evaluation is described by the configuration that trained its adapter: its spec
# and what it trained with.
HP = "COALESCE(src.spec, j.spec)"
USED = "(CASE WHEN src.id IS NOT NULL THEN src.trained_with ELSE j.trained_with END)"
#: What a run whose spec and record lack the field trained with.
ABSENT = {"grad_accum": "CASE WHEN j.kind = 'lora' OR src.id IS NOT NULL THEN 1 END"}


def _sqlite_value(source: str, path: Sequence[str], kind: str) -> str:
    json_path = "$." + ".".join(path)
    if kind == "list":
        return f"(SELECT group_concat(value, ',') FROM json_each({source}, '{json_path}'))"
    cast = {"integer": "INTEGER", "real": "REAL", "text": "TEXT"}[kind]
    return f"CAST(json_extract({source}, '{json_path}') AS {cast})"


def _postgresql_value(source: str, path: Sequence[str], kind: str) -> str:
    parent = source + "".join(f"->'{p}'" for p in path[:-1])
    if kind == "list":
        value = f"{parent}->'{path[-1]}'"
        return (
            f"CASE WHEN jsonb_typeof({value}) = 'array' THEN "
            f"array_to_string(ARRAY(SELECT jsonb_array_elements_text({value})), ',') END"
        )
    cast = {"integer": "integer", "real": "double precision", "text": "text"}[kind]
    return f"({parent}->>'{path[-1]}')::{cast}"


def _field(dialect: str, name: str, path: Sequence[str], kind: str) -> str:
    """The value used where recorded, else the spec's (else the field's neutral value)."""
    value = _postgresql_value if dialect == "postgresql" else _sqlite_value
    choices = [value(HP, path, kind)]
    if len(path) == 1 and kind != "list":
        choices.insert(0, value(USED, path, kind))
    if name in ABSENT:
        choices.append(ABSENT[name])
    return choices[0] if len(choices) == 1 else f"COALESCE({', '.join(choices)})"


def _view_sql(dialect: str) -> str:
    if dialect == "postgresql":
        adapter_job = "(j.spec->>'adapter_job')::integer"
    else:
        adapter_job = "CAST(json_extract(j.spec, '$.adapter_job') AS INTEGER)"
    hyper = ",\n    ".join(
        f"{_field(dialect, name, path, kind)} AS {name}" for name, path, kind in HYPER
    )
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
    j.spec AS spec,
    {USED} AS trained_with
FROM results r
JOIN jobs j ON j.id = r.job_id
LEFT JOIN jobs src ON src.id = {adapter_job}"""


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    # A nullable column with no default: a plain ALTER TABLE, no table copy on SQLite.
    column_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("jobs", sa.Column("trained_with", column_type, nullable=True))
    if dialect == "postgresql":
        op.execute(
            "UPDATE jobs SET trained_with = (stats->'recipe')::jsonb"
            " WHERE json_typeof(stats->'recipe') = 'object'"
        )
    else:
        op.execute(
            "UPDATE jobs SET trained_with = json_extract(stats, '$.recipe')"
            " WHERE json_type(stats, '$.recipe') = 'object'"
        )
    op.execute(_view_sql(dialect))


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("trained_with")
    before = importlib.import_module("ftqueue.migrations.versions.0005b_runs_view")
    op.execute(before._view_sql(op.get_context().dialect.name))
