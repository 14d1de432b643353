"""The queue end to end: real Redis, real `ftqueue worker` processes, real kills."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.specs import DataSpec
from ftqueue.store import db, lifecycle
from ftqueue.store.schema import Job, JobEvent, Result
from ftqueue.submit.submission import submit
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for

pytestmark = pytest.mark.slow

LEASE = "2"


@pytest.fixture
def queue_env(pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """PostgreSQL + Redis, and short leases so dead workers are noticed within seconds."""
    from ftqueue.settings import reset_settings

    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", LEASE)
    reset_settings()
    return child_env()


@pytest.fixture
def workers(queue_env: dict[str, str], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def start_worker(
    pool: list[WorkerProcess], name: str, env: dict[str, str], tmp: Path, **kwargs: object
) -> WorkerProcess:
    worker = WorkerProcess(name, env=env, log_dir=tmp, **kwargs).start()  # type: ignore[arg-type]
    pool.append(worker)
    return worker.wait_ready()


def synthetic(
    seconds: float, *, seed: int = 0, fault: str | None = None, epochs: int = 1
) -> LoraSpec:
    model = f"synthetic:seconds={seconds},steps=10" + (f",fault={fault}" if fault else "")
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), seed=seed, epochs=epochs)


def results_of(job_id: int) -> list[tuple[str, int, int]]:
    with db.session_scope() as session:
        rows = session.execute(
            select(Result.split, Result.epoch, Result.attempt).where(Result.job_id == job_id)
        )
        return sorted(rows.all())  # type: ignore[arg-type]


def adapter_entries(home: Path, job_id: int) -> list[str]:
    root = home / "artifacts" / "adapters"
    return (
        sorted(p.name for p in root.iterdir() if f"job-{job_id}" in p.name) if root.exists() else []
    )


def test_jobs_run_on_a_real_worker(workers, queue_env, tmp_path, isolated_home) -> None:  # type: ignore[no-untyped-def]
    start_worker(workers, "solo", queue_env, tmp_path)
    sub = submit([synthetic(0.2, seed=s, epochs=2) for s in range(5)])
    ids = [job.id for job in sub.created]
    assert len(ids) == 5 and sub.sweep_id
    wait_for(lambda: all_terminal(ids), timeout=60, what="5 jobs to end")
    assert set(statuses(ids).values()) == {"succeeded"}
    for jid in ids:
        with db.session_scope() as session:
            selected = session.scalar(select(Job.selected_epoch).where(Job.id == jid))
        # Tested at the best validation epoch (select_epoch's default), which it records.
        assert selected in (1, 2)
        expected = [("test", selected, 1), ("validation", 1, 1), ("validation", 2, 1)]
        assert results_of(jid) == sorted(expected)
        assert adapter_entries(isolated_home, jid) == [f"job-{jid}"]
        assert (
            isolated_home / "artifacts" / "adapters" / f"job-{jid}" / "adapter_model.safetensors"
        ).is_file()


def test_real_training_jobs_on_a_real_worker(workers, queue_env, tmp_path, isolated_home) -> None:  # type: ignore[no-untyped-def]
    """minilm LoRA jobs and the base evaluation through Redis and a worker process."""
    start_worker(workers, "trainer", queue_env, tmp_path)
    data = DataSpec(dataset="movie-snippets", train_samples=96, eval_samples=48)
    loras = [LoraSpec(model="minilm", data=data, epochs=1, batch_size=16, seed=s) for s in (1, 2)]
    base = EvaluateSpec(model="minilm", data=data)
    ids = [job.id for job in submit([*loras, base]).created]
    wait_for(lambda: all_terminal(ids), timeout=600, what="training jobs to end")
    assert set(statuses(ids).values()) == {"succeeded"}
    for jid in ids[:2]:
        assert results_of(jid) == [("test", 1, 1), ("validation", 1, 1)]
        assert adapter_entries(isolated_home, jid) == [f"job-{jid}"]
    assert results_of(ids[2]) == [("test", 1, 1)]
    [evaluated] = submit([EvaluateSpec(model="minilm", data=data, adapter_job=ids[0])]).created
    wait_for(lambda: all_terminal([evaluated.id]), timeout=300, what="the adapter evaluation")
    assert results_of(evaluated.id) == [("test", 0, 1)]
    with db.session_scope() as session:
        jobs = {jid: session.get(Job, jid) for jid in [*ids, evaluated.id]}
        n_test = session.scalar(
            select(Result.n_examples).where(Result.job_id == ids[0], Result.split == "test")
        )
    assert n_test == 48
    first, second = jobs[ids[0]], jobs[ids[1]]
    assert first is not None and second is not None and jobs[evaluated.id] is not None
    # The second job on the same model and data found both caches warm in the worker.
    assert (second.stats or {}).get("model_cached") and (second.stats or {}).get("tokens_cached")
    assert 0 < (first.trainable_params or 0) < (first.total_params or 0)


def test_kill_9_during_a_job_records_it_exactly_once(
    workers, queue_env, tmp_path, isolated_home
) -> None:  # type: ignore[no-untyped-def]
    first = start_worker(workers, "victim", queue_env, tmp_path)
    [job] = submit([synthetic(8.0)]).created
    wait_for(lambda: statuses([job.id])[job.id] == "running", timeout=30, what="job to start")
    wait_for(lambda: _progress(job.id) >= 2, timeout=30, what="a few steps")
    first.kill(signal.SIGKILL)
    assert statuses([job.id])[job.id] == "running"  # nobody has noticed yet
    start_worker(workers, "victim", queue_env, tmp_path)  # same name, as a restart would be
    wait_for(lambda: all_terminal([job.id]), timeout=90, what="the job to finish after the kill")
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None
        assert (row.status, row.attempts) == ("succeeded", 2)
        events = [
            e.detail or ""
            for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job.id))
        ]
    assert any("re-queued" in d or "task" in d for d in events)
    assert results_of(job.id) == [("test", 1, 2), ("validation", 1, 2)]
    assert adapter_entries(isolated_home, job.id) == [f"job-{job.id}"]  # no stray staging left


def _progress(job_id: int) -> int:
    with db.session_scope() as session:
        return int(session.scalar(select(Job.progress_step).where(Job.id == job_id)) or 0)


def test_the_same_message_twice_records_once(workers, queue_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    start_worker(workers, "pair", queue_env, tmp_path, processes=2)
    [job] = submit([synthetic(1.5)]).created
    with db.session_scope() as session:
        again = session.get(Job, job.id)
        assert again is not None
        broker.publish([again, again])  # two more copies of the message, same task id
    wait_for(lambda: all_terminal([job.id]), timeout=60, what="the job to end")
    wait_for(lambda: len(broker.pending_task_ids()) == 0, timeout=30, what="every copy consumed")
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None and (row.status, row.attempts) == ("succeeded", 1)
        n = session.scalar(select(func.count()).select_from(Result).where(Result.job_id == job.id))
    assert n == 2


def test_cancel_queued_and_running(workers, queue_env, tmp_path, isolated_home) -> None:  # type: ignore[no-untyped-def]
    [queued] = submit([synthetic(0.1, seed=1)]).created
    assert lifecycle.cancel([queued.id])[0].after == "cancelled"
    start_worker(workers, "canceller", queue_env, tmp_path)
    [running] = submit([synthetic(30.0, seed=2)]).created
    wait_for(lambda: _progress(running.id) >= 1, timeout=30, what="the long job to step")
    outcome = lifecycle.cancel([running.id])[0]
    assert (outcome.before, outcome.after) == ("running", "running")
    wait_for(lambda: all_terminal([running.id]), timeout=20, what="the running job to stop")
    wait_for(lambda: len(broker.pending_task_ids()) == 0, timeout=30, what="messages consumed")
    with db.session_scope() as session:
        q = session.get(Job, queued.id)
        r = session.get(Job, running.id)
        assert q is not None and r is not None
        assert (q.status, q.attempts) == ("cancelled", 0)  # never started
        assert r.status == "cancelled" and r.output_path is None
    assert results_of(running.id) == []
    assert adapter_entries(isolated_home, running.id) == []


def test_a_job_that_raises_fails_with_its_error(workers, queue_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    start_worker(workers, "raiser", queue_env, tmp_path)
    sub = submit(
        [synthetic(0.3, fault="raise"), synthetic(0.3, fault="oom", seed=3), synthetic(0.2, seed=4)]
    )
    ids = [job.id for job in sub.created]
    wait_for(lambda: all_terminal(ids), timeout=60, what="jobs to end")
    with db.session_scope() as session:
        rows = {jid: session.get(Job, jid) for jid in ids}
    raised, oom, fine = (rows[i] for i in ids)
    assert raised is not None and oom is not None and fine is not None
    assert (raised.status, raised.error_type, raised.attempts) == ("failed", "RuntimeError", 1)
    assert "synthetic failure" in (raised.error_message or "")
    assert (oom.status, oom.error_type, oom.attempts) == ("failed", "CudaOutOfMemory", 1)
    assert "--batch-size" in (oom.error_message or "")
    assert fine.status == "succeeded"  # the worker lived on after both failures
