"""Running one job attempt: claim it, heart-beat while the work runs, record exactly once.

This is the plain function every delivery path calls (a Celery worker, eager mode, tests); it
holds no Celery state of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftqueue import lifecycle, paths
from ftqueue.errors import DatabaseError, FtqueueError, JobCancelled, JobSuperseded
from ftqueue.settings import get_settings

log = logging.getLogger(__name__)

#: How long a finished attempt keeps trying to record while the database is unreachable.
RECORD_RETRY_SECONDS = 300.0
#: Failures that are expected (the user's to fix): logged in one line, without a traceback.
EXPECTED = ("OutOfMemoryError", "SoftTimeLimitExceeded")


class Heartbeat:
    """Renews a running job's lease and writes its progress from a background thread.

    The work calls :meth:`on_progress`; it raises JobCancelled or JobSuperseded there once the
    heartbeat learns that the job was cancelled or taken over, so the work stops at a step.
    """

    def __init__(self, claim: lifecycle.Claim, *, lease_seconds: int) -> None:
        self.claim = claim
        self.lease_seconds = lease_seconds
        self.interval = min(1.0, lease_seconds / 4)
        self.progress = lifecycle.ProgressState()
        self.cancelled = threading.Event()
        self.superseded = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        #: Seconds from the claim to the first training step: what a warm worker saves.
        self.first_step_after: float | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def on_progress(self, update: Any) -> None:
        with self._lock:
            p = self.progress
            p.phase = getattr(update, "phase", p.phase)
            p.epoch = getattr(update, "epoch", p.epoch)
            p.step = getattr(update, "step", p.step)
            p.total = getattr(update, "total_steps", p.total)
            p.loss = getattr(update, "loss", p.loss)
            p.dirty = True
            if self.first_step_after is None and p.phase == "train" and (p.step or 0) >= 1:
                self.first_step_after = time.monotonic() - self.started
        self.check()

    def check(self) -> None:
        if self.superseded.is_set():
            raise JobSuperseded(f"job {self.claim.job_id} was taken over by another attempt")
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.claim.job_id} was cancelled")

    def beat(self) -> None:
        with self._lock:
            snapshot = dataclasses.replace(self.progress)
            self.progress.dirty = False
        owned, cancel = lifecycle.heartbeat(self.claim, snapshot, lease_seconds=self.lease_seconds)
        if not owned:
            self.superseded.set()
        elif cancel:
            self.cancelled.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except DatabaseError as exc:
                # The lease may lapse while the database is away; ownership is checked again
                # when the result is recorded, so this attempt cannot record over another.
                log.warning("job %s: heartbeat failed: %s", self.claim.job_id, exc)
            except Exception:
                log.exception("job %s: heartbeat failed", self.claim.job_id)
            if self.superseded.is_set():
                return


def run_job(job_id: int, *, worker: str, task_id: str | None = None) -> str:
    """Claim and run one job; returns what happened (succeeded, failed, cancelled, skipped...)."""
    settings = get_settings()
    claim = lifecycle.claim(
        job_id, worker=worker, lease_seconds=settings.lease_seconds, task_id=task_id
    )
    if claim is None:
        return "skipped"
    log.info("job %s: attempt %s on %s", job_id, claim.attempt, worker)
    return execute(claim)


def final_adapter_dir(claim: lifecycle.Claim) -> Path:
    return paths.adapter_dir(get_settings().artifacts_dir, claim.job_id, claim.output_dir)


def execute(claim: lifecycle.Claim) -> str:
    """Run a claimed attempt to its end and record that end."""
    from ftqueue import artifacts, work

    settings = get_settings()
    staging: Path | None = None
    heartbeat = Heartbeat(claim, lease_seconds=settings.lease_seconds)
    try:
        with heartbeat:
            if claim.kind == "lora":
                final = final_adapter_dir(claim)
                remove_stale_staging(final)
                staging = artifacts.new_staging_dir(final.parent, final.name)
                # mkdtemp makes it private; a shared artifacts directory needs it readable.
                staging.chmod(0o755)
            outcome = work.perform(claim, staging=staging, on_progress=heartbeat.on_progress)
        heartbeat.check()
        publish: Callable[[], str | None] | None = None
        if staging is not None and outcome.adapter_dir is not None:
            src = Path(outcome.adapter_dir)

            def publish() -> str:
                target = final_adapter_dir(claim)  # checked again: a symlink may be new
                artifacts.publish_dir(src, target)
                return str(target)

        measurements = list(outcome.measurements)
        stats = {**outcome.stats, "seconds_to_first_step": heartbeat.first_step_after}
        recorded = _with_db_retry(
            lambda: lifecycle.record_success(claim, measurements, stats=stats, publish=publish)
        )
        if recorded:
            log.info("job %s: succeeded", claim.job_id)
            return "succeeded"
        log.warning(
            "job %s: attempt %s no longer holds it; result discarded", claim.job_id, claim.attempt
        )
        return "superseded"
    except JobCancelled:
        _with_db_retry(lambda: lifecycle.record_cancelled(claim))
        return "cancelled"
    except JobSuperseded:
        return "superseded"
    except Exception as exc:
        # Any error inside a job ends it: retrying is for workers that die, not for code that
        # raises (bad data, out of memory, the time limit would only happen again).
        error_type, message = describe_failure(exc)
        if isinstance(exc, FtqueueError) or type(exc).__name__ in EXPECTED:
            log.error("job %s failed: %s: %s", claim.job_id, error_type, message)
        else:
            log.exception("job %s failed", claim.job_id)
        _with_db_retry(lambda: lifecycle.record_failure(claim, error_type, message))
        return "failed"
    finally:
        # Still here only when the adapter was not published (failure, cancel, superseded).
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(final: Path) -> list[Path]:
    """Delete staging directories left by earlier attempts of a job this attempt now holds."""
    root = final.parent
    stale = sorted(root.glob(f".staging-{final.name}-*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def describe_failure(exc: BaseException) -> tuple[str, str]:
    name = type(exc).__name__
    text = str(exc).strip() or repr(exc)
    if name == "SoftTimeLimitExceeded":
        limit = get_settings().soft_time_limit
        return (
            "TimeLimitExceeded",
            f"the job ran past its time limit of {limit}s (FTQUEUE_TIME_LIMIT)",
        )
    if name == "OutOfMemoryError":
        return "CudaOutOfMemory", (
            f"{text.splitlines()[0]} - lower --batch-size or --max-length, or use a larger GPU"
        )
    return name, text


def _with_db_retry(action: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + RECORD_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            return action()
        except DatabaseError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
