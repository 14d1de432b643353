"""The job lifecycle in SQL, on SQLite and PostgreSQL: claims, fencing, cancel, reaping."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select

from ftqueue.core.outcome import Measurement, Progress
from ftqueue.core.states import Phase
from ftqueue.store import db, insert, lifecycle, recovery
from ftqueue.store.schema import Job, Result, utcnow

M = Measurement("test", 1, 0.9, 0.3, 0.89, 100)


def make_job(max_attempts: int = 3, spec_hash: str = "h") -> int:
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(
            session,
            [insert.NewJob(kind="lora", spec={"r": 8}, spec_hash=spec_hash, model="m",
                              dataset="d")],
            max_attempts=max_attempts,
        )  # fmt: skip
        return job.id


def row(job_id: int) -> Job:
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def result_count(job_id: int) -> int:
    with db.session_scope() as session:
        return int(session.scalar(select(func.count()).where(Result.job_id == job_id)) or 0)


def test_only_one_of_many_concurrent_claims_wins(any_db_url: str) -> None:
    job_id = make_job()
    claims: list[lifecycle.Claim | None] = []
    barrier = threading.Barrier(8)

    def grab(i: int) -> None:
        barrier.wait()
        claims.append(lifecycle.claim(job_id, worker=f"w{i}", lease_seconds=60))

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].attempt == 1
    assert (row(job_id).status, row(job_id).attempts) == ("running", 1)


def test_a_superseded_attempt_cannot_record(any_db_url: str) -> None:
    job_id = make_job()
    first = lifecycle.claim(job_id, worker="a", lease_seconds=1)
    assert first is not None
    # The lease lapses; the reaper hands the job to a new attempt.
    report = recovery.reap_expired(now=utcnow() + dt.timedelta(seconds=5))
    assert [j.id for j in report.requeued] == [job_id]
    second = lifecycle.claim(job_id, worker="b", lease_seconds=60)
    assert second is not None and second.attempt == 2
    assert lifecycle.heartbeat(first, None, lease_seconds=60) == (False, False)
    published: list[str] = []
    assert not lifecycle.record_success(first, [M], stats={}, publish=lambda: published.append("x"))
    assert published == [] and result_count(job_id) == 0
    assert lifecycle.record_success(second, [M], stats={"train_seconds": 2.0})
    assert result_count(job_id) == 1
    job = row(job_id)
    assert (job.status, job.attempts, job.train_seconds) == ("succeeded", 2, 2.0)
    assert lifecycle.claim(job_id, worker="c", lease_seconds=60) is None  # done is done


def test_a_live_attempt_is_never_superseded_even_by_its_own_name(any_db_url: str) -> None:
    job_id = make_job()
    first = lifecycle.claim(job_id, worker="gpu0@h", lease_seconds=600)
    assert first is not None
    assert lifecycle.claim(job_id, worker="gpu1@h", lease_seconds=600) is None  # lease is live
    assert lifecycle.claim(job_id, worker="gpu0@h", lease_seconds=600) is None  # same name too
    assert lifecycle.heartbeat(first, None, lease_seconds=1) == (True, False)
    with db.session_scope(write=True) as session:  # the lease lapses: now it may be taken
        job = session.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = utcnow() - dt.timedelta(seconds=1)
    again = lifecycle.claim(job_id, worker="gpu0@h", lease_seconds=600)
    assert again is not None and again.attempt == 2
    assert lifecycle.heartbeat(first, None, lease_seconds=60) == (False, False)


def test_attempts_are_bounded(any_db_url: str) -> None:
    job_id = make_job(max_attempts=2)
    later = utcnow() + dt.timedelta(seconds=5)
    for _ in range(2):
        assert lifecycle.claim(job_id, worker="w", lease_seconds=1) is not None
        recovery.reap_expired(now=later)
        later += dt.timedelta(seconds=5)
    job = row(job_id)
    assert (job.status, job.attempts, job.error_type) == ("failed", 2, "WorkerLost")


def test_cancel_queued_and_running(any_db_url: str) -> None:
    queued, running = make_job(spec_hash="q"), make_job(spec_hash="r")
    claim = lifecycle.claim(running, worker="w", lease_seconds=60)
    assert claim is not None
    outcomes = {o.job_id: (o.before, o.after) for o in lifecycle.cancel([queued, running])}
    assert outcomes == {queued: ("queued", "cancelled"), running: ("running", "running")}
    assert lifecycle.claim(queued, worker="w", lease_seconds=60) is None
    assert lifecycle.heartbeat(claim, None, lease_seconds=60) == (True, True)
    assert not lifecycle.record_success(claim, [M], stats={})  # a cancel beats a late result
    assert row(running).status == "cancelled" and result_count(running) == 0


def test_progress_is_stored_by_the_heartbeat(any_db_url: str) -> None:
    job_id = make_job()
    claim = lifecycle.claim(job_id, worker="w", lease_seconds=60)
    assert claim is not None
    progress = Progress(Phase.TRAIN, 2, 30, 90, 0.41)
    assert lifecycle.heartbeat(claim, progress, lease_seconds=60) == (True, False)
    job = row(job_id)
    assert (job.progress_epoch, job.progress_step, job.progress_total) == (2, 30, 90)
    assert job.progress_loss == 0.41 and job.progress_phase == "train"
    # No new progress: the lease is renewed and the stored progress stays as it was.
    assert lifecycle.heartbeat(claim, None, lease_seconds=60) == (True, False)
    assert row(job_id).progress_step == 30


def test_lost_messages_are_found_by_task_id(any_db_url: str) -> None:
    kept, lost = make_job(spec_hash="k"), make_job(spec_hash="l")
    pending = {row(kept).task_id or ""}
    old_task = row(lost).task_id
    assert (
        recovery.queued_without_message(pending, older_than=utcnow() - dt.timedelta(hours=1)) == []
    )
    found = recovery.queued_without_message(pending, older_than=utcnow() + dt.timedelta(seconds=1))
    assert [j.id for j in found] == [lost]
    assert row(lost).task_id != old_task  # re-published under a new id
