"""Output locations relative to the artifacts root: moving the root becomes a setting.

``jobs.output_path`` held the absolute path of a job's published directory. Rows now hold it
relative to the artifacts root (FTQUEUE_ARTIFACTS_DIR, a directory or an ``s3://`` URL), so
that workers need not mount the directory at the same place and the root can move. This
revision rewrites the paths under the configured root as relative ones; a path outside it
stays absolute, and readers still take it as it is. Data only; ``downgrade()`` makes the
relative paths absolute again under the same root (a local one).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from ftqueue.settings import get_settings

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JOBS = sa.table("jobs", sa.column("id", sa.Integer), sa.column("output_path", sa.Text))
_BATCH = 1000


def _paths() -> Iterator[tuple[int, str]]:
    rows = op.get_bind().execute(
        sa.select(_JOBS.c.id, _JOBS.c.output_path).where(_JOBS.c.output_path.is_not(None))
    )
    yield from ((int(job_id), str(path)) for job_id, path in rows)


def _rewrite(changes: list[tuple[int, str]]) -> None:
    bind = op.get_bind()
    update = _JOBS.update().where(_JOBS.c.id == sa.bindparam("job_id"))
    for start in range(0, len(changes), _BATCH):
        batch = changes[start : start + _BATCH]
        bind.execute(
            update.values(output_path=sa.bindparam("path")),
            [{"job_id": job_id, "path": path} for job_id, path in batch],
        )


def _local_root() -> Path | None:
    settings = get_settings()
    return None if settings.artifacts_url else settings.artifacts_dir.expanduser().absolute()


def upgrade() -> None:
    root = _local_root()
    if root is None:  # an object store root: no absolute local path lies under it
        return
    changes = []
    for job_id, path in _paths():
        local = Path(path)
        if local.is_absolute() and local.is_relative_to(root) and local != root:
            changes.append((job_id, local.relative_to(root).as_posix()))
    _rewrite(changes)


def downgrade() -> None:
    root = _local_root()
    if root is None:
        return
    _rewrite([(j, str(root / p)) for j, p in _paths() if not Path(p).is_absolute()])
