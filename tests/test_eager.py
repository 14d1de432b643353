"""Eager jobs (FTQUEUE_EAGER=1) whose `ftqueue submit` process dies are not left running.

A real `ftqueue submit` subprocess runs a grid in-process and is killed for real; the next
command that looks at its jobs ends them, and SIGHUP or SIGTERM ends them at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ftqueue.cli import cli
from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import eager
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job, utcnow
from tests.procs import child_env, wait_for

pytestmark = pytest.mark.slow

LEASE = 2
SLOW = "synthetic:seconds=60,steps=60"


def _short_lease(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", str(LEASE))
    reset_settings()
    return child_env(FTQUEUE_EAGER="1")


@pytest.fixture
def eager_env(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Both databases, short leases."""
    return _short_lease(monkeypatch)


@pytest.fixture
def eager_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return _short_lease(monkeypatch)


class EagerSubmit:
    """`FTQUEUE_EAGER=1 ftqueue submit lora` on a 3-job grid, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        command = [sys.executable, "-m", "ftqueue", "submit", "lora", "--model", SLOW,
                   "--dataset", "movie-snippets", "--seed", "0..2"]  # fmt: skip
        self.proc = subprocess.Popen(
            command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_running(self) -> list[Job]:
        """The grid's rows once the first job is heart-beating inside its attempt."""

        def started() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            return any(j.status == "running" and j.progress_step for j in rows())

        wait_for(started, timeout=60, what="the first eager job to run")
        return rows()

    def signal(self, sig: int) -> int:
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout=30)


def rows() -> list[Job]:
    with db.session_scope() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def wait_lease_lapsed() -> None:
    def lapsed() -> bool:
        return all(j.lease_expires_at is None or j.lease_expires_at < utcnow() for j in rows())

    wait_for(lapsed, timeout=LEASE * 5, what="the leases to lapse")


def cli_run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_eager_jobs_hold_their_rows_under_a_lease(
    eager_env: dict[str, str], tmp_path: Path
) -> None:
    submit = EagerSubmit(eager_env, tmp_path / "submit.log")
    try:
        jobs = submit.wait_running()
        holder = {j.worker for j in jobs}
        assert len(holder) == 1 and holder.pop().startswith(eager.PREFIX)
        assert [j.status for j in jobs] == ["running", "queued", "queued"]
        first = {j.id: j.lease_expires_at for j in jobs}
        time.sleep(LEASE)
        renewed = {j.id: j.lease_expires_at for j in rows()}
        assert all(renewed[i] > first[i] for i in first)  # queued ones too, by the keeper
        # A live eager process's jobs are left alone by the commands that look at them.
        assert eager.settle() == []
    finally:
        submit.signal(signal.SIGKILL)


def test_sigkill_then_list_ends_every_job_of_the_grid(
    eager_env: dict[str, str], tmp_path: Path, isolated_home: Path
) -> None:
    submit = EagerSubmit(eager_env, tmp_path / "submit.log")
    jobs = submit.wait_running()
    staging = list((isolated_home / "artifacts" / "adapters").glob(".staging-job-*"))
    assert len(staging) == 1
    assert submit.signal(signal.SIGKILL) == -signal.SIGKILL
    assert [j.status for j in rows()] == ["running", "queued", "queued"]
    wait_lease_lapsed()
    code, out = cli_run("list", "--json")
    assert code == 0
    listed = {j["id"]: j for j in json.loads(out)}
    running, *queued = (listed[j.id] for j in jobs)
    assert running["status"] == "failed" and running["error_type"] == "WorkerLost"
    assert "stopped heart-beating" in running["error_message"]
    for job in queued:
        assert job["status"] == "failed" and "died before it started" in job["error_message"]
    assert not any(p.exists() for p in staging)


def test_sigkill_then_follow_ends_once_the_lease_lapses(
    eager_sqlite: dict[str, str], tmp_path: Path
) -> None:
    submit = EagerSubmit(eager_sqlite, tmp_path / "submit.log")
    running = submit.wait_running()[0]
    submit.signal(signal.SIGKILL)
    started = time.monotonic()
    code, out = cli_run("status", str(running.id), "--follow")
    assert code == 1 and "failed" in out
    assert time.monotonic() - started < LEASE + 5


def test_sigkill_then_cancel_cancels(eager_sqlite: dict[str, str], tmp_path: Path) -> None:
    submit = EagerSubmit(eager_sqlite, tmp_path / "submit.log")
    jobs = submit.wait_running()
    submit.signal(signal.SIGKILL)
    wait_lease_lapsed()
    code, out = cli_run("cancel", *(str(j.id) for j in jobs))
    assert code == 0, out
    assert [j.status for j in rows()] == ["cancelled"] * 3


def test_sigkill_then_the_same_spec_is_submitted_anew(
    eager_sqlite: dict[str, str], tmp_path: Path
) -> None:
    from ftqueue.submit.submission import submit as queue

    submit = EagerSubmit(eager_sqlite, tmp_path / "submit.log")
    jobs = submit.wait_running()
    submit.signal(signal.SIGKILL)
    wait_lease_lapsed()
    spec = LoraSpec(model=SLOW, data=DataSpec(dataset="movie-snippets"), seed=0)
    again = queue([spec])  # eager settings, but not run: the row is what matters here
    assert not again.duplicates and len(again.created) == 1
    assert rows()[0].id == jobs[0].id and rows()[0].status == "failed"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_and_sigterm_end_the_jobs_at_once(
    any_db_url: str, sig: int, tmp_path: Path, isolated_home: Path
) -> None:
    env = child_env(FTQUEUE_EAGER="1", FTQUEUE_LEASE_SECONDS="600")
    submit = EagerSubmit(env, tmp_path / "submit.log")
    submit.wait_running()
    assert submit.signal(sig) == 128 + sig
    ended = rows()  # no lease has lapsed: the process ended them on its way out
    assert [j.status for j in ended] == ["failed"] * 3
    assert {j.error_type for j in ended} == {"Interrupted"}
    assert signal.Signals(sig).name in (ended[0].error_message or "")
    assert not list((isolated_home / "artifacts" / "adapters").glob(".staging-job-*"))
    assert signal.Signals(sig).name in submit.log.read_text()


def test_a_workers_reaper_runs_what_a_dead_eager_process_left(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where workers share the database and broker, their reaper re-queues the lapsed running
    job and publishes the never-started ones: all three succeed, the first on attempt 2."""
    from tests.procs import WorkerProcess, all_terminal

    env = _short_lease(monkeypatch)
    model = "synthetic:seconds=3,steps=30"
    command = [sys.executable, "-m", "ftqueue", "submit", "lora", "--model", model,
               "--dataset", "movie-snippets", "--seed", "0..2"]  # fmt: skip
    log = tmp_path / "submit.log"
    proc = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    wait_for(lambda: any(j.progress_step for j in rows()), timeout=60, what="a running job")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    worker_env = {k: v for k, v in env.items() if k != "FTQUEUE_EAGER"}
    worker = WorkerProcess("reaper", env=worker_env, log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        ids = [j.id for j in rows()]
        wait_for(lambda: all_terminal(ids), timeout=120, what="the reaper and worker to run them")
    finally:
        worker.stop()
    jobs = rows()
    assert [j.status for j in jobs] == ["succeeded"] * 3, worker.log()[-3000:]
    assert jobs[0].attempts == 2 and [j.attempts for j in jobs[1:]] == [1, 1]
    assert all(j.worker and not j.worker.startswith(eager.PREFIX) for j in jobs)


def test_the_eager_holder_is_the_name_eager_attempts_claim_with() -> None:
    from types import SimpleNamespace

    from ftqueue.worker.tasks import worker_name

    assert worker_name(SimpleNamespace(hostname=None, is_eager=True)) == eager.holder()


def test_held_jobs_are_not_republished_while_their_holder_lives(sqlite_url: str) -> None:
    """The reaper's lost-message scan leaves a live eager process's waiting jobs alone."""
    import datetime as dt

    from ftqueue.store import insert, recovery

    new = insert.NewJob(kind="lora", spec={}, spec_hash="h", model="m", dataset="d")
    with db.session_scope(write=True) as session:
        [held] = insert.create_jobs(
            session, [new], max_attempts=3, held_by=eager.holder(), lease_seconds=60
        )
    later = utcnow() + dt.timedelta(seconds=1)
    assert recovery.queued_without_message(set(), older_than=later) == []
    with db.session_scope(write=True) as session:
        row = session.get(Job, held.id)
        assert row is not None
        row.lease_expires_at = utcnow() - dt.timedelta(seconds=1)
    assert [j.id for j in recovery.queued_without_message(set(), older_than=later)] == [held.id]
