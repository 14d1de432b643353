"""The heartbeat's write rule: it writes when progress changed or the lease needs renewing,
reads otherwise; a cancel is still seen within 2 s, and a dead worker's lease still lapses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ftqueue.core.outcome import Progress
from ftqueue.core.states import Phase
from ftqueue.errors import JobCancelled
from ftqueue.execution.heartbeat import Heartbeat
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, insert, lifecycle
from ftqueue.store.schema import Job
from ftqueue.submit.submission import submit
from ftqueue.worker import reaper
from tests.procs import WorkerProcess, child_env, wait_for


def make_claim(lease_seconds: int) -> lifecycle.Claim:
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(
            session,
            [insert.NewJob(kind="lora", spec={"r": 8}, spec_hash="h", model="m", dataset="d")],
            max_attempts=3,
        )
    claim = lifecycle.claim(job.id, worker="w", lease_seconds=lease_seconds)
    assert claim is not None
    return claim


def row(job_id: int) -> Job:
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_quiet_beat_reads_and_a_changed_or_due_one_writes(any_db_url: str) -> None:
    claim = make_claim(lease_seconds=60)
    beat = Heartbeat(claim, lease_seconds=60)
    claimed = row(claim.job_id)

    beat.beat()  # nothing new, lease fresh: a read, and the row is as the claim left it
    assert (beat.writes, beat.reads) == (0, 1)
    quiet = row(claim.job_id)
    assert quiet.heartbeat_at == claimed.heartbeat_at
    assert quiet.lease_expires_at == claimed.lease_expires_at

    beat.on_progress(Progress(Phase.TRAIN, 1, 5, 50, 0.7))
    beat.beat()  # progress changed: written, lease renewed with it
    assert (beat.writes, beat.reads) == (1, 1)
    moved = row(claim.job_id)
    assert moved.progress_step == 5
    assert moved.lease_expires_at is not None and claimed.lease_expires_at is not None
    assert moved.lease_expires_at > claimed.lease_expires_at

    beat.beat()  # the same progress again: no write
    assert (beat.writes, beat.reads) == (1, 2)

    beat._written -= beat.renew_after  # a third of the lease went by without a write
    beat.beat()
    assert (beat.writes, beat.reads) == (2, 2)
    renewed = row(claim.job_id)
    assert renewed.lease_expires_at is not None and moved.lease_expires_at is not None
    assert renewed.lease_expires_at > moved.lease_expires_at
    assert renewed.progress_step == 5


def test_a_cancel_is_seen_within_2s_by_a_beat_that_writes_nothing(any_db_url: str) -> None:
    claim = make_claim(lease_seconds=120)  # no renewal falls in this test's few seconds
    with Heartbeat(claim, lease_seconds=120) as beat:
        time.sleep(1.5)
        asked = time.monotonic()
        [outcome] = lifecycle.cancel([claim.job_id])
        assert outcome.after == "running"  # a running job stops at its next step
        seen = beat.cancelled.wait(timeout=10)
        waited = time.monotonic() - asked
        with pytest.raises(JobCancelled):
            beat.on_progress(Progress(Phase.TRAIN, 1, 1, 10, 0.5))
    assert seen and waited <= 2.0, waited
    assert beat.writes == 0 and beat.reads >= 2


@pytest.mark.slow
def test_a_quiet_job_keeps_its_lease_and_a_dead_workers_lease_lapses(
    pg_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One long step (no progress for 20 s) on a 3 s lease: renewals alone keep it running;
    once its worker is SIGKILLed they stop, the lease lapses and the reaper re-queues it."""
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "3")
    reset_settings()
    env = child_env()
    worker = WorkerProcess("quiet", env=env, log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        spec = LoraSpec(
            model="synthetic:seconds=40,steps=2",
            data=DataSpec(dataset="movie-snippets"),
            seed=1,
        )
        [job] = submit([spec]).created
        wait_for(lambda: row(job.id).status == "running", timeout=30, what="the claim")
        started = row(job.id)
        time.sleep(7)  # more than two leases, inside the first 20 s step
        alive = row(job.id)
        assert (alive.status, alive.attempts) == ("running", 1)
        assert alive.lease_expires_at is not None and started.lease_expires_at is not None
        assert alive.lease_expires_at > started.lease_expires_at
        worker.kill()
    finally:
        worker.stop()
    killed = row(job.id)
    assert killed.lease_expires_at is not None
    time.sleep(4)  # longer than the lease
    assert row(job.id).lease_expires_at == killed.lease_expires_at  # nobody renews it now
    summary = reaper.reap_once(lock_seconds=5)
    assert job.id in summary.requeued
    requeued = row(job.id)
    assert (requeued.status, requeued.attempts) == ("queued", 1)
