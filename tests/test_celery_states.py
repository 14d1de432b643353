"""Celery's own view of jobs, read from a real Flower watching a real worker's task events.

A failed job's task is FAILURE, a cancelled one REVOKED (running or still queued), a job that
succeeded SUCCESS (also after its pool process was killed and its message redelivered), a
delivery that finds its job taken or ended REVOKED, never SUCCESS; each task shows its job's
id, kind, model and dataset; every message is acknowledged once, as before; the worker logs
one line per epoch with its metrics.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select

from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.specs import DataSpec
from ftqueue.store import db, lifecycle
from ftqueue.store.schema import Job, JobEvent
from ftqueue.submit.submission import submit
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Flower:
    """`celery flower` on the test's broker, its API open on a local port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ftqueue.queue.app:app", "flower",
             "--address=127.0.0.1", f"--port={self.port}"],
            env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def api(self, path: str) -> Any:
        return _get(f"http://127.0.0.1:{self.port}/api/{path}")

    def wait_ready(self, timeout: float = 60) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"flower exited:\n{self.log.read_text()[-3000:]}")
            try:
                self.api("tasks")
                return True
            except OSError:
                return False

        wait_for(up, timeout=timeout, what="Flower's API", poll=0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def env(sqlite_url: str, redis_url: str) -> dict[str, str]:
    return child_env()


@pytest.fixture
def flower(env: dict[str, str], tmp_path: Path) -> Iterator[Flower]:
    f = Flower(env, tmp_path / "flower.log")
    try:
        f.wait_ready()
        yield f
    finally:
        f.stop()


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess("states", env=env, log_dir=tmp_path).start()
    try:
        yield w.wait_ready()
    finally:
        w.stop()


def synthetic(seconds: float, steps: int, *, fault: str | None = None, seed: int = 0) -> LoraSpec:
    model = f"synthetic:seconds={seconds},steps={steps}" + (f",fault={fault}" if fault else "")
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), epochs=2, seed=seed)


def test_flower_shows_failed_and_cancelled_jobs_as_such(flower, worker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    failed, ok, running, queued = submit(
        [
            synthetic(0.4, 4, fault="raise", seed=1),
            synthetic(0.4, 4, seed=2),
            synthetic(30, 60, seed=3),
            synthetic(0.4, 4, seed=4),
        ]
    ).created
    ids = [failed.id, ok.id, running.id, queued.id]
    wait_for(
        lambda: statuses([running.id])[running.id] == "running", timeout=60, what="the slow job"
    )
    lifecycle.cancel([running.id, queued.id])
    wait_for(lambda: all_terminal(ids), timeout=60, what="all four jobs to end")
    assert statuses(ids) == {
        failed.id: "failed",
        ok.id: "succeeded",
        running.id: "cancelled",
        queued.id: "cancelled",
    }
    expected = {
        failed.task_id: "FAILURE",
        ok.task_id: "SUCCESS",
        running.task_id: "REVOKED",
        queued.task_id: "REVOKED",
    }

    def flower_agrees() -> bool:
        tasks = flower.api("tasks")
        return all(tasks.get(tid, {}).get("state") == state for tid, state in expected.items())

    try:
        wait_for(flower_agrees, timeout=30, what="Flower to show each task's end")
    except AssertionError:
        seen = {t: v.get("state") for t, v in flower.api("tasks").items()}
        raise AssertionError(f"expected {expected}, Flower shows {seen}") from None

    # Flower's Failed tab (state=FAILURE) lists the failed job, with the job's error.
    failures = flower.api("tasks?state=FAILURE")
    assert list(failures) == [failed.task_id]
    assert "synthetic failure requested" in failures[failed.task_id]["exception"]
    # Each task reads as its job: id, kind, model and dataset.
    task = flower.api(f"task/info/{ok.task_id}")
    assert task["args"] == f"(job {ok.id}: lora synthetic:seconds=0.4,steps=4 on movie-snippets)"
    assert task["name"] == "ftqueue.lora"

    # The acknowledgement behaviour is unchanged: every message acknowledged, each job run
    # by one attempt (the failed one was not delivered again). The revoke event goes out just
    # before the acknowledgement, hence the wait.
    wait_for(lambda: broker.pending_task_ids() == set(), timeout=10, what="every ack")
    with db.session_scope() as session:
        attempts = {jid: session.get(Job, jid).attempts for jid in ids}  # type: ignore[union-attr]
    assert attempts == {failed.id: 1, ok.id: 1, running.id: 1, queued.id: 0}

    # The worker's log: one line per epoch with the metrics, and the headline at the end.
    log = worker.log()
    epochs = [line for line in log.splitlines() if f"job {ok.id}: epoch" in line]
    assert len(epochs) == 2, log[-3000:]
    assert "epoch 1: step 2/4, train loss" in epochs[0] and "validation accuracy 0." in epochs[0]
    assert f"job {ok.id}: succeeded: test accuracy 0." in log
    # A failed job's task is an expected failure: logged by Celery without its traceback.
    assert "JobFailed" in log


def test_a_killed_pool_process_reruns_its_task_and_a_duplicate_is_revoked(flower, worker) -> None:  # type: ignore[no-untyped-def]
    (job,) = submit([synthetic(4, 8, seed=7)]).created

    def started() -> bool:
        with db.session_scope() as session:
            row = session.get(Job, job.id)
            return row is not None and row.status == "running" and row.progress_step is not None

    wait_for(started, timeout=60, what="the job to start")
    assert worker.proc is not None
    (celery_main,) = psutil.Process(worker.proc.pid).children()
    (pool_child,) = celery_main.children()
    pool_child.send_signal(signal.SIGKILL)
    wait_for(lambda: all_terminal([job.id]), timeout=90, what="the job to end")
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None and (row.status, row.attempts) == ("succeeded", 2)
        details = session.scalars(select(JobEvent.detail).where(JobEvent.job_id == job.id)).all()
    assert any(d and "pool process" in d for d in details), details

    # The same message again under another task id, as a redelivery would be: it finds its
    # job ended and is revoked, and the job stays as it was.
    with db.session_scope() as session:
        duplicate = session.get(Job, job.id)
    assert duplicate is not None
    duplicate.task_id = "duplicate-of-" + str(job.task_id)
    broker.publish([duplicate])
    expected = {job.task_id: "SUCCESS", duplicate.task_id: "REVOKED"}

    def flower_agrees() -> bool:
        tasks = flower.api("tasks")
        return all(tasks.get(tid, {}).get("state") == st for tid, st in expected.items())

    try:
        wait_for(flower_agrees, timeout=30, what="Flower to show each task's end")
    except AssertionError:
        seen = {t: v.get("state") for t, v in flower.api("tasks").items()}
        raise AssertionError(f"expected {expected}, Flower shows {seen}") from None
    wait_for(lambda: broker.pending_task_ids() == set(), timeout=10, what="every ack")
    assert statuses([job.id]) == {job.id: "succeeded"}


def test_workers_send_task_events_by_default() -> None:
    from ftqueue.queue.app import app

    assert app.conf.worker_send_task_events is True
