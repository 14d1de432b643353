"""Faults: the queue keeps its promises while workers, Redis and the database break.

Each test names the figure it checks. The promises: every message is delivered at least once,
every job reaches exactly one end, and a job's results are recorded exactly once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job, Result, utcnow
from ftqueue.submit.submission import submit
from tests.conftest import PG_SERVER
from tests.procs import (
    PrivateRedis,
    WorkerProcess,
    all_terminal,
    child_env,
    statuses,
    submit_command,
    wait_for,
)

pytestmark = pytest.mark.slow


def spec(seconds: float, seed: int, *, fault: str | None = None, steps: int = 6) -> LoraSpec:
    model = f"synthetic:seconds={seconds},steps={steps}" + (f",fault={fault}" if fault else "")
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), seed=seed, epochs=1)


@pytest.fixture
def fault_env(pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "2")
    reset_settings()
    return child_env()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def launch(
    pool: list[WorkerProcess], name: str, env: dict[str, str], log_dir: Path, processes: int = 1
) -> WorkerProcess:
    worker = WorkerProcess(name, env=env, log_dir=log_dir, processes=processes).start()
    pool.append(worker)
    return worker.wait_ready()


def check_recorded_once(job_ids: list[int], artifacts: Path) -> dict[int, Job]:
    """Each succeeded job: one result set, written by the attempt that holds it, one adapter."""
    with db.session_scope() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
        rows = session.execute(
            select(Result.job_id, Result.split, Result.epoch, Result.attempt).where(
                Result.job_id.in_(job_ids)
            )
        ).all()
    by_job: dict[int, list[tuple[str, int, int]]] = {}
    for jid, split, epoch, attempt in rows:
        by_job.setdefault(jid, []).append((split, epoch, attempt))
    for jid, job in jobs.items():
        if job.status == "succeeded":
            attempt = job.attempts
            assert sorted(by_job.get(jid, [])) == [("test", 1, attempt), ("validation", 1, attempt)]
            assert job.output_path and (artifacts / job.output_path).is_dir()
        else:
            assert by_job.get(jid, []) == [], f"job {jid} ({job.status}) has results"
    strays = (
        [p for p in (artifacts / "adapters").glob(".*")]
        if (artifacts / "adapters").exists()
        else []
    )
    assert strays == [], f"stray staging directories: {strays}"
    return jobs


def test_40_jobs_two_workers_one_sigkilled_6_times(
    fault_env, pool, tmp_path, isolated_home, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FTQUEUE_MAX_ATTEMPTS", "8")
    reset_settings()
    env = child_env()
    launch(pool, "steady", env, tmp_path)
    victim = launch(pool, "victim", env, tmp_path)
    ids = [job.id for job in submit([spec(1.2, s) for s in range(40)]).created]
    victim_node = f"victim0@{socket.gethostname()}"
    landed = 0
    deadline = time.monotonic() + 240
    since = utcnow()
    while landed < 6 and not all_terminal(ids) and time.monotonic() < deadline:
        if _holds_running_job(victim_node, since):
            time.sleep(0.4)  # let it get into the job
            victim.kill(signal.SIGKILL)
            landed += 1
            victim = launch(pool, "victim", env, tmp_path)
            since = utcnow()
        time.sleep(0.1)
    assert landed == 6, f"only {landed} kills landed on a running job"
    wait_for(lambda: all_terminal(ids), timeout=240, what="all 40 jobs to end")
    wait_for(
        lambda: not list((isolated_home / "artifacts" / "adapters").glob(".*")),
        timeout=30,
        what="the reaper to clear staging left by killed attempts",
    )
    jobs = check_recorded_once(ids, isolated_home / "artifacts")
    assert {j.status for j in jobs.values()} == {"succeeded"}
    retried = sum(1 for j in jobs.values() if j.attempts >= 2)
    print(f"40 jobs, 6 SIGKILLs landed, {retried} jobs needed a second attempt")
    assert retried >= 5


def _holds_running_job(worker: str, since: dt.datetime) -> bool:
    """Whether this worker process (started at ``since``) is inside a job right now."""
    with db.session_scope() as session:
        return bool(
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.status == "running",
                    Job.worker == worker,
                    Job.started_at > since,
                    Job.progress_step >= 1,
                )
            )
        )


def test_visibility_timeout_3s_below_a_12s_job_records_once(
    fault_env, pool, tmp_path, isolated_home, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FTQUEUE_VISIBILITY_TIMEOUT", "3")
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "10")
    reset_settings()
    workers = launch(pool, "vt", child_env(), tmp_path, processes=2)
    [job] = submit([spec(12, 1, steps=24)]).created
    wait_for(lambda: all_terminal([job.id]), timeout=90, what="the long job to end")
    redeliveries = workers.log().count(f"job {job.id} is running")
    print(f"message delivered again {redeliveries} times during the run")
    assert redeliveries >= 1, "the short visibility timeout never re-delivered the message"
    jobs = check_recorded_once([job.id], isolated_home / "artifacts")
    assert (jobs[job.id].status, jobs[job.id].attempts) == ("succeeded", 1)


def test_redis_restart_loses_messages_and_all_6_jobs_still_finish(
    pg_url, pool, tmp_path, isolated_home, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        monkeypatch.setenv("FTQUEUE_BROKER_URL", server.url)
        monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "3")
        reset_settings()
        launch(pool, "survivor", child_env(), tmp_path)
        ids = [job.id for job in submit([spec(3, s) for s in range(6)]).created]
        wait_for(lambda: "running" in statuses(ids).values(), timeout=30, what="a job to run")
        server.kill()  # the running job's delivery and 5 queued messages are gone
        time.sleep(2)
        server.start()
        wait_for(lambda: all_terminal(ids), timeout=180, what="every job to end after the restart")
        jobs = check_recorded_once(ids, isolated_home / "artifacts")
        assert {j.status for j in jobs.values()} == {"succeeded"}
        print(f"6 jobs after a Redis restart: {sum(j.attempts for j in jobs.values())} attempts")
    finally:
        for worker in pool:
            worker.stop()
        server.kill()


def _pg_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _set_connections(name: str, allowed: bool) -> None:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
    admin.dispose()


def test_database_gone_for_5s_during_a_job_records_once(
    fault_env, pg_url, pool, tmp_path, isolated_home
) -> None:  # type: ignore[no-untyped-def]
    worker = launch(pool, "dbless", fault_env, tmp_path)
    [job] = submit([spec(3, 7, steps=12)]).created
    wait_for(lambda: statuses([job.id])[job.id] == "running", timeout=30, what="the job to start")
    db.dispose_engines()
    _set_connections(_pg_name(pg_url), False)
    try:
        time.sleep(5)
    finally:
        _set_connections(_pg_name(pg_url), True)
    wait_for(lambda: all_terminal([job.id]), timeout=120, what="the job to end")
    jobs = check_recorded_once([job.id], isolated_home / "artifacts")
    assert jobs[job.id].status == "succeeded"
    assert "heartbeat failed" in worker.log() or "database unavailable" in worker.log()
    print(f"database away 5 s: succeeded on attempt {jobs[job.id].attempts}, results once")


def test_job_that_always_crashes_fails_after_3_attempts(
    fault_env, pool, tmp_path, isolated_home
) -> None:  # type: ignore[no-untyped-def]
    launch(pool, "crashy", fault_env, tmp_path)
    ids = [
        job.id for job in submit([spec(0.6, 1, fault="crash"), spec(0.3, 2), spec(0.3, 3)]).created
    ]
    wait_for(lambda: all_terminal(ids), timeout=120, what="jobs to end")
    jobs = check_recorded_once(ids, isolated_home / "artifacts")
    crash, *others = (jobs[i] for i in ids)
    assert (crash.status, crash.attempts, crash.error_type) == ("failed", 3, "WorkerLost")
    assert [j.status for j in others] == ["succeeded", "succeeded"]


def test_time_limit_3s_soft_4s_hard_fails_and_worker_goes_on(
    pg_url, redis_url, pool, tmp_path, isolated_home, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FTQUEUE_TIME_LIMIT", "4")
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "2")
    reset_settings()
    launch(pool, "limited", child_env(), tmp_path)
    ids = [
        job.id
        for job in submit(
            [spec(1, 1, fault="hang"), spec(1, 2, fault="stuck"), spec(0.3, 3)]
        ).created
    ]
    wait_for(lambda: all_terminal(ids), timeout=120, what="jobs to end")
    jobs = check_recorded_once(ids, isolated_home / "artifacts")
    soft, hard, fine = (jobs[i] for i in ids)
    assert (soft.status, soft.error_type, soft.attempts) == ("failed", "TimeLimitExceeded", 1)
    assert "time limit of 3s" in (soft.error_message or "")
    assert (hard.status, hard.error_type, hard.attempts) == ("failed", "TimeLimitExceeded", 1)
    assert "hard time limit" in (hard.error_message or "")
    assert fine.status == "succeeded"


def test_8_clis_submitting_at_once_on_sqlite_see_no_lock_error(
    sqlite_url, redis_url, pool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    env = child_env()
    launch(pool, "busy", env, tmp_path)  # heart-beats and records while the CLIs write
    cmd = submit_command("synthetic:seconds=0.05,steps=2")
    procs = [
        subprocess.Popen(
            [*cmd, "--seed", f"{i * 25}..{i * 25 + 24}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 200


def test_pickle_message_is_refused_and_runs_nothing(fault_env, pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kombu import Connection

    from ftqueue.store import insert

    worker = launch(pool, "picky", fault_env, tmp_path)
    job_spec = spec(0.1, 99)
    with db.session_scope(write=True) as session:  # a queued row whose only message is pickle
        [job] = insert.create_jobs(
            session,
            [
                insert.NewJob(
                    kind="lora",
                    spec=job_spec.to_dict(),
                    spec_hash=job_spec.spec_hash(),
                    model=job_spec.model,
                    dataset="movie-snippets",
                )
            ],
            max_attempts=3,
        )
    with Connection(os.environ["FTQUEUE_BROKER_URL"]) as conn:
        conn.Producer().publish(
            ((job.id,), {}, {}),
            exchange="",
            routing_key="lora",
            serializer="pickle",
            headers={"task": "ftqueue.lora", "id": job.task_id, "lang": "py"},
        )
    wait_for(lambda: "pickle" in worker.log(), timeout=20, what="the worker to see the message")
    time.sleep(1)
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None and (row.status, row.attempts) == ("queued", 0)
    assert "Refusing to deserialize untrusted content of type pickle" in worker.log()
