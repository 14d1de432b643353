"""The schema is Alembic's: upgrade/downgrade round-trips, and models and migrations agree."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from ftqueue.errors import DatabaseError
from ftqueue.store import db
from ftqueue.store.schema import Base

TABLES = {
    "jobs",
    "results",
    "job_tags",
    "job_events",
    "sweeps",
    "sweep_rungs",
    "workers",
    "attempt_logs",
    "notifications",
    "report_summary",
    "alembic_version",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, isolated_home) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{isolated_home / 'fresh' / 'ftqueue.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


def _tables(url: str) -> set[str]:
    return set(inspect(db.get_engine(url)).get_table_names())


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    assert db.current_revision(empty_url) is None
    db.upgrade(empty_url)
    assert _tables(empty_url) == TABLES
    assert db.current_revision(empty_url) == db.head_revision()
    db.upgrade(empty_url)  # idempotent
    db.downgrade(empty_url, "base")
    assert _tables(empty_url) == {"alembic_version"}
    assert db.current_revision(empty_url) is None
    db.upgrade(empty_url)
    assert _tables(empty_url) == TABLES


def test_models_match_migrations(empty_url: str) -> None:
    db.upgrade(empty_url)
    with db.get_engine(empty_url).connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_results_reject_a_second_measurement(empty_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    from ftqueue.store.schema import Job, Result

    db.upgrade(empty_url)
    with db.session_scope(url=empty_url, write=True) as session:
        job = Job(kind="lora", spec={}, spec_hash="h", model="m", dataset="d")
        session.add(job)
        session.flush()
        job_id = job.id
    row = dict(
        job_id=job_id,
        attempt=1,
        split="test",
        epoch=1,
        accuracy=0.5,
        loss=0.7,
        macro_f1=0.5,
        n_examples=10,
    )
    with db.session_scope(url=empty_url, write=True) as session:
        session.add(Result(**row))
    with pytest.raises(IntegrityError), db.session_scope(url=empty_url, write=True) as session:
        session.add(Result(**row))


def test_sqlite_uses_wal_and_busy_timeout(isolated_home) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{isolated_home / 'w.db'}"
    db.upgrade(url)
    with db.get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_ensure_ready_names_the_fix(isolated_home) -> None:  # type: ignore[no-untyped-def]
    path = isolated_home / "never.db"
    with pytest.raises(DatabaseError, match="ftqueue db upgrade"):
        db.ensure_ready(f"sqlite:///{path}")
    assert not path.exists()  # checking must not create the file


def test_unreachable_server_names_the_url() -> None:
    url = "postgresql+psycopg://someone:secret@127.0.0.1:1/nothing"
    with pytest.raises(DatabaseError) as err:
        db.ensure_ready(url)
    assert "127.0.0.1:1/nothing" in err.value.message
    assert "secret" not in err.value.message
