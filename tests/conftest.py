"""Shared fixtures: an isolated FTQUEUE_HOME per test, real SQLite and PostgreSQL databases."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ftqueue.inputs import hub
from ftqueue.settings import reset_settings
from ftqueue.store import db
from ftqueue.testing import IN_CI, FtqueueEnv, service_missing

# The plugin's fixtures (ftqueue/testing) make the isolated homes, databases and Redis.
pytest_plugins = ["ftqueue.testing"]

PG_SERVER = os.environ.get("FTQUEUE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")

__all__ = ["IN_CI", "PG_SERVER", "TrainedAdapter", "job_count", "run", "service_missing"]


@pytest.fixture(autouse=True)
def isolated_home(ftqueue_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FTQUEUE_HOME, so nothing touches ~/.ftqueue."""
    # No test may reach the real Hugging Face hub; tests of hub checks use a local endpoint.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.forget()
    return ftqueue_home


@pytest.fixture
def sqlite_url(ftqueue_sqlite: str) -> str:
    """A migrated SQLite file, set as FTQUEUE_DATABASE_URL."""
    return ftqueue_sqlite


@pytest.fixture
def eager(ftqueue_env: FtqueueEnv) -> str:
    """A migrated SQLite file whose jobs run in the test's process (FTQUEUE_EAGER=1)."""
    return ftqueue_env.database_url


def _pg_admin() -> object:
    from sqlalchemy import create_engine

    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def _pg_database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database on the running server (a copy of ``template``), dropped after."""
    from sqlalchemy import text

    admin = _pg_admin()
    name = f"ftqueue_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except Exception as exc:
        admin.dispose()  # type: ignore[attr-defined]
        service_missing(f"PostgreSQL at {PG_SERVER}", exc)
    try:
        yield name
    finally:  # also when what the caller did with it failed (a migration, say)
        db.dispose_engines()
        with admin.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A new, empty PostgreSQL database on the running server, dropped afterwards."""
    with _pg_database() as name:
        yield f"{PG_SERVER}/{name}"


@pytest.fixture(scope="session")
def pg_migrated_template() -> Iterator[str]:
    """A PostgreSQL database migrated once per session, which `pg_url` copies."""
    with _pg_database() as name:
        db.upgrade(f"{PG_SERVER}/{name}")
        db.dispose_engines()  # CREATE DATABASE ... TEMPLATE needs it unused
        yield name


@pytest.fixture
def pg_url(pg_migrated_template: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated PostgreSQL database (a copy of one migrated once), set as
    FTQUEUE_DATABASE_URL."""
    with _pg_database(template=pg_migrated_template) as name:
        url = f"{PG_SERVER}/{name}"
        monkeypatch.setenv("FTQUEUE_DATABASE_URL", url)
        reset_settings()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def redis_url(ftqueue_redis: str) -> str:
    """A flushed Redis database on the running server, set as FTQUEUE_BROKER_URL."""
    return ftqueue_redis


# --- a LoRA adapter trained once per session, for the tests that use adapters -------------


@dataclass
class TrainedAdapter:
    """An adapter of the default recipe on a slice of movie-snippets: 1 epoch, with the bolder
    adapter learning rate a dozen steps need."""

    spec: Any
    directory: Path
    #: The test split's accuracy the training job recorded.
    test_accuracy: float
    test_texts: list[str]
    test_labels: list[int]


@pytest.fixture(scope="session")
def default_adapter(tmp_path_factory: pytest.TempPathFactory) -> TrainedAdapter:
    """Trained under umask 022, as a shared artifacts directory would be written."""
    from ftqueue.artifacts.publishing import new_staging_dir, publish_dir
    from ftqueue.inputs.labelled import resolve_dataset
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec
    from ftqueue.training import run_lora

    root = tmp_path_factory.mktemp("default-adapter")
    data = DataSpec(dataset="movie-snippets", train_samples=384, eval_samples=200)
    spec = LoraSpec(model="minilm", data=data, epochs=1, lr=2e-3)
    previous = os.umask(0o022)
    try:
        staging = new_staging_dir(root / "adapters", "job-1")
        outcome = run_lora(spec, adapter_dir=staging, cache_dir=root / "cache")
        final = publish_dir(staging, root / "adapters" / "job-1")
    finally:
        os.umask(previous)
    test = resolve_dataset(data).test
    [accuracy] = [m.accuracy for m in outcome.measurements if m.split == "test"]
    return TrainedAdapter(spec, final, accuracy, list(test.texts), list(test.labels))


def run(*args: str) -> tuple[int, str]:
    """``ftqueue ARGS`` in this process: its exit code and output (an unexpected exception
    is raised, not hidden in the result)."""
    from click.testing import CliRunner

    from ftqueue.cli import cli

    result = CliRunner().invoke(cli, list(args), prog_name="ftqueue")
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def job_count() -> int:
    """How many job rows the configured database holds."""
    from sqlalchemy import func, select

    from ftqueue.store.schema import Job

    with db.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)
