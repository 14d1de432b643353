"""Several workers on one PostgreSQL: what a multi-machine setup does, on this machine.

Two `ftqueue worker` processes (as two machines would run) and two `ftqueue submit` processes
at once (two people submitting) share one Redis and one PostgreSQL database.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from ftqueue.queue import broker
from ftqueue.store import db
from ftqueue.store.schema import Job, JobEvent, Result
from tests.procs import (
    WorkerProcess,
    all_terminal,
    child_env,
    running_workers,
    submit_command,
    wait_for,
)

pytestmark = pytest.mark.slow

WORKERS = ("alpha", "beta")
SEEDS = ("0..9", "10..19")


@pytest.fixture
def two_workers(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    with running_workers(WORKERS, env=child_env(), log_dir=tmp_path) as started:
        yield started


def submit_from_two_clis(tmp_path: Path) -> list[dict[str, object]]:
    """Run two `ftqueue submit` processes at the same time; returns their --json outputs."""
    procs = []
    for i, seeds in enumerate(SEEDS):
        out = (tmp_path / f"submit-{i}.out").open("w+")
        cmd = submit_command(
            "synthetic:seconds=0.3", "--epochs", "1", "--seed", seeds, "--tag", "multiworker"
        )
        procs.append((subprocess.Popen(cmd, env=child_env(), stdout=out, stderr=subprocess.PIPE,
                                       text=True), out))  # fmt: skip
    outputs = []
    for proc, out in procs:
        _, err = proc.communicate(timeout=120)
        out.seek(0)
        text = out.read()
        out.close()
        assert proc.returncode == 0, f"submit failed ({proc.returncode}):\n{err}\n{text}"
        outputs.append(json.loads(text))
    return outputs


def test_two_workers_two_submitters_every_job_once(
    two_workers: list[WorkerProcess], pg_url: str, isolated_home: Path, tmp_path: Path
) -> None:
    outputs = submit_from_two_clis(tmp_path)
    ids = [job["id"] for out in outputs for job in out["jobs"]]  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) == 20
    assert all(out["duplicates"] == [] for out in outputs)

    def logs() -> str:
        return "\n".join(w.log()[-2000:] for w in two_workers)

    try:
        wait_for(lambda: all_terminal(ids), timeout=240, what="20 jobs to end", poll=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    # Every message acknowledged: nothing is left to deliver (and so to run) a second time.
    wait_for(lambda: not broker.pending_task_ids(), timeout=60, what="every message acked")

    with db.session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        runs = Counter(session.scalars(
            select(JobEvent.job_id).where(JobEvent.job_id.in_(ids), JobEvent.status == "running")
        ))  # fmt: skip
        results = session.execute(
            select(Result.job_id, Result.split, Result.epoch, Result.attempt)
        ).all()
    assert {(j.status, j.attempts) for j in jobs} == {("succeeded", 1)}, logs()
    assert runs == Counter(ids), "a job was claimed more than once"
    assert sorted(j.spec["seed"] for j in jobs) == list(range(20))

    # Both workers took a share; the names are those given with --name on this host.
    host = socket.gethostname()
    by_worker = Counter(j.worker for j in jobs)
    assert set(by_worker) == {f"{name}0@{host}" for name in WORKERS}, by_worker

    # One set of results per job, from its one attempt; nothing else in the table.
    assert sorted(results) == sorted(
        (jid, split, 1, 1) for jid in ids for split in ("test", "validation")
    )
    # ... and it is PostgreSQL's table, read over a connection of its own.
    assert db.get_engine().dialect.name == "postgresql"
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Result)) == 40
            assert conn.scalar(
                select(func.count()).select_from(Job).where(Job.status == "succeeded")
            ) == 20  # fmt: skip
    finally:
        engine.dispose()

    # One published adapter directory per job, and no staging directory left behind.
    adapters = isolated_home / "artifacts" / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == sorted(f"job-{i}" for i in ids)
    for job in jobs:
        assert job.output_path == f"adapters/job-{job.id}"
        assert (adapters / f"job-{job.id}" / "adapter_model.safetensors").is_file()
