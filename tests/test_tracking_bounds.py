"""What a misbehaving tracker costs a worker process: bounded time, one warning, no leftovers.

A real TCP server on 127.0.0.1 accepts connections and never answers; a SQLite tracking URI
points where nothing can be written. Jobs run eagerly, several in one process, as a worker
process runs them one after another.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftqueue.core.breaker import CircuitBreaker
from ftqueue.execution import tracking
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job
from ftqueue.submit.submission import submit
from ftqueue.worker.tasks import run_eagerly
from tests.procs import read_only_dir

#: The per-call timeout the tests set (MLflow reads whole seconds).
TIMEOUT = 1
JOBS = 6


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_in_a_row_and_probes_once_after_its_cooldown() -> None:
    clock = _Clock()
    guard = CircuitBreaker(threshold=2, cooldown=10, clock=clock)
    assert guard.allow() and not guard.failure()  # one failure: still closed
    assert guard.allow() and not guard.success()  # a success resets the count
    assert not guard.failure() and guard.failure()  # the second in a row opens it, said once
    assert not guard.allow() and guard.is_open
    clock.now = 9.9
    assert not guard.allow()
    clock.now = 10.0
    assert guard.allow()  # half-open: one probe...
    assert not guard.allow()  # ...and only one
    assert guard.failure()  # the probe failed: open again, said again (once per cooldown)
    clock.now = 19.9
    assert not guard.allow()
    clock.now = 20.0
    assert guard.allow() and guard.success()  # the probe succeeded: closed, and it was open
    assert guard.allow() and not guard.failure()
    assert guard.trip() and not guard.trip() and not guard.allow()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def fresh_breakers() -> Iterator[None]:
    tracking.forget_breakers()
    yield
    tracking.forget_breakers()


def synthetic(seconds: float, *, seed: int) -> LoraSpec:
    model = f"synthetic:seconds={seconds},steps=6"
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), epochs=2, r=8, seed=seed)


_SEEDS = iter(range(1_000_000))


def _run_jobs(count: int) -> float:
    """Seconds ``count`` new quick jobs take, one after another in this process; all succeed."""
    created = submit([synthetic(0.05, seed=next(_SEEDS)) for _ in range(count)]).created
    assert len(created) == count
    started = time.perf_counter()
    run_eagerly(created)
    elapsed = time.perf_counter() - started
    with db.session_scope() as session:
        assert {session.get(Job, j.id).status for j in created} == {"succeeded"}  # type: ignore[union-attr]
    return elapsed


def _tracking_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ftqueue.execution.tracking" and r.levelno >= logging.WARNING
    ]


@pytest.mark.slow
def test_a_tracker_that_never_answers_costs_a_worker_process_a_few_timeouts(
    sqlite_url: str,
    silent_server: str,
    fresh_breakers: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("mlflow")
    import mlflow.tracking  # noqa: F401  (imported before the clock starts: seconds of imports)

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    baseline = _run_jobs(JOBS)
    monkeypatch.setenv("FTQUEUE_MLFLOW_TRACKING_URI", silent_server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT))  # the user's own bound
    reset_settings()
    with caplog.at_level(logging.WARNING, logger="ftqueue.execution.tracking"):
        tracked = _run_jobs(JOBS)
    extra = tracked - baseline
    # Before: MLflow's retries with back-off held every job (52 s each at its defaults).
    # Now: one timeout per job until the breaker opens, then nothing.
    assert extra < tracking.BREAKER_THRESHOLD * TIMEOUT + 2.0, (baseline, tracked)
    warnings = _tracking_warnings(caplog)
    paused = [w for w in warnings if "logs no jobs to it" in w]
    assert len(paused) == 1, warnings
    assert len(warnings) == tracking.BREAKER_THRESHOLD + 1, warnings
    assert all("\n" not in w for w in warnings)
    # The bounds were set around the calls only: none is left in the environment.
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(TIMEOUT)


@pytest.mark.slow
def test_after_its_cooldown_one_job_tries_the_tracker_again(
    sqlite_url: str,
    silent_server: str,
    fresh_breakers: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setattr(tracking, "BREAKER_COOLDOWN", 0.0)
    monkeypatch.setattr(tracking, "BREAKER_THRESHOLD", 1)
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    monkeypatch.setenv("FTQUEUE_MLFLOW_TRACKING_URI", silent_server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT))
    reset_settings()
    with caplog.at_level(logging.WARNING, logger="ftqueue.execution.tracking"):
        _run_jobs(2)
    # No cooldown: each job is the half-open probe, fails, and opens the breaker again.
    paused = [w for w in _tracking_warnings(caplog) if "logs no jobs to it" in w]
    assert len(paused) == 2, _tracking_warnings(caplog)


@pytest.mark.parametrize("where", ["file", "read-only"])
def test_an_unwritable_sqlite_tracking_uri_is_one_line_and_no_wait(
    where: str,
    request: pytest.FixtureRequest,
    sqlite_url: str,
    fresh_breakers: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if where == "file":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        uri = f"sqlite:///{blocker}/mlflow.db"
    else:
        locked = read_only_dir(tmp_path / "locked", request)
        uri = f"sqlite:///{locked}/mlflow.db"
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    monkeypatch.setenv("FTQUEUE_MLFLOW_TRACKING_URI", uri)
    reset_settings()
    with caplog.at_level(logging.WARNING, logger="ftqueue.execution.tracking"):
        elapsed = _run_jobs(3)
    warnings = _tracking_warnings(caplog)
    assert len(warnings) == 1 and "cannot be written" in warnings[0], warnings
    assert "\n" not in warnings[0]
    # Before: 104 s of MLflow's retries for a 1 s job. Three 0.05 s jobs, and their overhead:
    assert elapsed < 10.0


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("sqlite:///:memory:", None),
        ("http://127.0.0.1:5000", None),
        ("databricks", None),
    ],
)
def test_remote_and_memory_uris_are_not_checked_as_files(uri: str, problem: str | None) -> None:
    assert tracking.local_store_problem(uri) == problem


def test_local_store_problems(tmp_path: Path) -> None:
    assert tracking.local_store_problem(f"sqlite:///{tmp_path}/mlflow.db") is None
    assert tracking.local_store_problem(str(tmp_path / "mlruns" / "deeper")) is None
    assert tracking.local_store_problem(f"file://{tmp_path}/mlruns") is None
    missing = tracking.local_store_problem(f"sqlite:///{tmp_path}/nowhere/mlflow.db")
    assert missing is not None and "does not exist" in missing
    (tmp_path / "db-dir").mkdir()
    wrong = tracking.local_store_problem(f"sqlite:///{tmp_path}/db-dir")
    assert wrong is not None and "is not a file" in wrong
