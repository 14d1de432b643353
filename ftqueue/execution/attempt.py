"""Running one attempt of a job: claim, heart-beat, perform, publish, record.

This is the one path every delivery takes (a Celery worker, eager mode, tests); it holds no
Celery state. The attempt number from the claim fences every write: a heartbeat, the
publication of the job's directory and its results go through only while this attempt still
holds the job, so a superseded or cancelled attempt records nothing.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from ftqueue import kinds
from ftqueue.artifacts import paths, publishing
from ftqueue.core.outcome import Measurement, Outcome, Progress
from ftqueue.core.states import AttemptEnd, JobStatus, Phase
from ftqueue.errors import (
    DatabaseError,
    DatabaseReplaced,
    FtqueueError,
    JobCancelled,
    JobSuperseded,
    first_line,
)
from ftqueue.execution import synthetic, tracking
from ftqueue.settings import get_settings
from ftqueue.store import lifecycle, reads
from ftqueue.sweeps import asha

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How long a finished attempt keeps trying to record while the database is unreachable.
RECORD_RETRY_SECONDS = 300.0
#: The longest wait between two tries of an unavailable database.
MAX_RETRY_DELAY = 10.0


class Heartbeat:
    """Renews a running job's lease and writes its progress from a background thread.

    The work calls :meth:`on_progress`; it raises JobCancelled or JobSuperseded there once the
    heartbeat learns that the job was cancelled or taken over, so the work stops at a step.

    Every beat (each second) looks at the row, so a cancel is seen within a second or two,
    but it writes only when the progress changed or a third of the lease has gone by since
    the last write: a thousand jobs waiting on something cost a thousand cheap reads a
    second, not a thousand row versions.
    """

    def __init__(
        self,
        claim: lifecycle.Claim,
        *,
        lease_seconds: int,
        on_epoch: Callable[[Progress], None] | None = None,
    ) -> None:
        self.claim = claim
        self.on_epoch = on_epoch
        self.lease_seconds = lease_seconds
        self.interval = min(1.0, lease_seconds / 4)
        #: A lease is renewed this long after the last write; two renewals may fail in a row
        #: (a database restart) before it lapses.
        self.renew_after = lease_seconds / 3
        self._written = time.monotonic()  # the claim wrote the first lease
        #: Writes and read-only looks since the start, for the fleet benchmark and tests.
        self.writes = 0
        self.reads = 0
        self.progress = Progress(Phase.STARTING)
        #: The last training step reported: an epoch's end is told with its step and loss.
        self._last_step: Progress | None = None
        self._dirty = False
        self.cancelled = threading.Event()
        self.superseded = threading.Event()
        self.lost_because = f"job {claim.job_id} was taken over by another attempt"
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

    def on_progress(self, update: Progress) -> None:
        with self._lock:
            last = self.progress
            if update.phase == Phase.TRAIN and update.step:
                self._last_step = update
            epoch_end = update.val_accuracy is not None
            if epoch_end:
                # An epoch's end says only its accuracy; the step and loss are the last seen.
                step = self._last_step or last
                update = replace(
                    update,
                    step=update.step if update.step is not None else step.step,
                    total=update.total if update.total is not None else step.total,
                    loss=update.loss if update.loss is not None else step.loss,
                )
            else:
                update = replace(update, val_accuracy=last.val_accuracy, val_epoch=last.val_epoch)
            self.progress = update
            self._dirty = True
            if self.first_step_after is None and update.phase == Phase.TRAIN and update.step:
                self.first_step_after = time.monotonic() - self.started
        if epoch_end:
            self._epoch_ended(update)
        self.check()

    def _epoch_ended(self, p: Progress) -> None:
        steps = f"step {p.step}/{p.total}" if p.step is not None and p.total else "step ?"
        loss = f"train loss {p.loss:.4f}" if p.loss is not None else "train loss ?"
        log.info("job %s: epoch %s: %s, %s, validation accuracy %.4f",
                 self.claim.job_id, p.val_epoch, steps, loss, p.val_accuracy)  # fmt: skip
        if self.on_epoch is not None:
            self.on_epoch(p)

    def check(self) -> None:
        if self.superseded.is_set():
            raise JobSuperseded(self.lost_because)
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.claim.job_id} was cancelled")

    def beat(self) -> None:
        now = time.monotonic()
        with self._lock:
            update = self.progress if self._dirty else None
            self._dirty = False
        if update is not None or now - self._written >= self.renew_after:
            try:
                owned, cancel = lifecycle.heartbeat(
                    self.claim, update, lease_seconds=self.lease_seconds
                )
            except BaseException:
                if update is not None:
                    with self._lock:  # written by the next beat, unless newer progress came
                        self._dirty = True
                raise
            self._written = now
            self.writes += 1
        else:
            owned, cancel = reads.attempt_held(self.claim.job_id, self.claim.attempt)
            self.reads += 1
        if not owned:
            log.warning(
                "job %s: attempt %s no longer holds it; stopping, nothing recorded",
                self.claim.job_id,
                self.claim.attempt,
            )
            self.superseded.set()
        elif cancel:
            self.cancelled.set()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.beat()
                if failing:
                    log.warning("job %s: heartbeat recorded again", self.claim.job_id)
                failing = False
            except DatabaseReplaced as exc:
                self.lost_because = f"job {self.claim.job_id}: {exc.message}"
                log.error("%s; this attempt stops and records nothing", self.lost_because)
                self.superseded.set()
            except DatabaseError as exc:
                # The lease may lapse while the database is away; ownership is checked again
                # when the result is recorded, so this attempt cannot record over another.
                if not failing:
                    log.warning("job %s: heartbeat failed: %s", self.claim.job_id, exc)
                failing = True
            except Exception:
                log.exception("job %s: heartbeat failed", self.claim.job_id)
            if self.superseded.is_set():
                return


def run_job(job_id: int, *, worker: str, task_id: str | None = None) -> AttemptEnd:
    """Claim and run one job; returns how this delivery ended."""
    claim = claim_when_writable(job_id, worker=worker, task_id=task_id)
    if claim is None:
        return AttemptEnd.SKIPPED
    log.info("job %s: attempt %s on %s", job_id, claim.attempt, worker)
    ended = execute(claim)
    if ended != AttemptEnd.SUPERSEDED:
        _after_trial(job_id)
    return ended


def _after_trial(job_id: int) -> None:
    """A sweep's trial ended: tell its search, and fill the freed slot (never fails the job)."""
    from ftqueue.sweeps import trials

    try:
        trials.after_trial(job_id)
    except Exception:
        # The reaper fills sweeps' free slots too; nothing is lost by failing here.
        log.exception("job %s: could not start the next trial of its sweep", job_id)


def claim_when_writable(
    job_id: int, *, worker: str, task_id: str | None = None
) -> lifecycle.Claim | None:
    """Claim a job, waiting while the database is unavailable or read-only.

    A worker takes no job it could not record: while it waits here its one slot stays taken,
    so it fetches no other message, and this one stays unacknowledged in Redis.
    """
    delay, since = 0.5, None
    while True:
        try:
            claim = lifecycle.claim(
                job_id, worker=worker, lease_seconds=get_settings().lease_seconds, task_id=task_id
            )
        except DatabaseReplaced:
            raise
        except DatabaseError as exc:
            if since is None:
                since = time.monotonic()
                log.warning("job %s: not claiming until the database is back: %s", job_id, exc)
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            continue
        if since is not None:
            log.warning("job %s: database back after %.0fs", job_id, time.monotonic() - since)
        return claim


def published_dir(claim: lifecycle.Claim) -> Path:
    """Where this job's directory is published; re-checked against symlinks made since."""
    default = kinds.lookup(claim.kind).artifacts
    assert default is not None, f"{claim.kind} jobs publish nothing"
    return paths.job_dir(get_settings().artifacts_dir, claim.job_id, claim.output_dir, default)


def rung_check(claim: lifecycle.Claim, heartbeat: Heartbeat) -> Callable[[int, float], bool]:
    """The job's ``keep_going``: its sweep's rung decision at each rung, True elsewhere."""
    policy = _with_db_retry(lambda: asha.policy_of(claim.job_id))

    def keep_going(epoch: int, accuracy: float) -> bool:
        heartbeat.check()
        if policy is None or epoch not in policy.rungs:
            return True
        return _with_db_retry(lambda: asha.decide(claim, policy, epoch, accuracy))

    return keep_going


def perform(claim: lifecycle.Claim, *, staging: Path | None, heartbeat: Heartbeat) -> Outcome:
    """Decode the job's spec and run its kind's work (or the synthetic stand-in)."""
    kind = kinds.lookup(claim.kind)
    spec = kind.spec(claim.spec)
    context = kinds.JobContext(
        job_id=claim.job_id,
        attempt=claim.attempt,
        staging=staging,
        cache_dir=get_settings().cache_dir,
        on_progress=heartbeat.on_progress,
        keep_going=rung_check(claim, heartbeat),
    )
    if synthetic.is_synthetic(spec.model):
        return synthetic.run(spec, kind, context)
    return kind.perform(spec, context)


def execute(claim: lifecycle.Claim) -> AttemptEnd:
    """Run a claimed attempt to its end and record that end."""
    settings = get_settings()
    staging: Path | None = None
    heartbeat = Heartbeat(claim, lease_seconds=settings.lease_seconds)
    tracked: tracking.MlflowRun | None = None
    published: list[str] = []
    try:
        with heartbeat:
            # Under the heartbeat: a slow tracker must not let the lease lapse.
            tracked = tracking.start(
                claim.job_id, attempt=claim.attempt, worker=claim.worker, spec=claim.spec
            )
            if tracked is not None:
                heartbeat.on_epoch = tracked.epoch
            if kinds.lookup(claim.kind).publishes:
                final = published_dir(claim)
                remove_stale_staging(final)
                staging = publishing.new_staging_dir(final.parent, final.name)
            outcome = perform(claim, staging=staging, heartbeat=heartbeat)
        heartbeat.check()
        publish: Callable[[], str | None] | None = None
        if staging is not None and outcome.artifact_dir is not None:
            src = Path(outcome.artifact_dir)

            def publish() -> str:
                target = published_dir(claim)  # checked again: a symlink may be new
                publishing.publish_dir(src, target)
                published.append(str(target))
                return str(target)

        measurements = list(outcome.measurements)
        stats = {**outcome.stats, "seconds_to_first_step": heartbeat.first_step_after}
        pruned = stats.get("pruned_at") is not None
        status = JobStatus.PRUNED if pruned else JobStatus.SUCCEEDED
        recorded = _with_db_retry(
            lambda: lifecycle.record_success(
                claim, measurements, stats=stats, publish=publish, status=status
            )
        )
        if recorded:
            log.info("job %s: %s%s", claim.job_id, status, _headline(measurements))
            ended = AttemptEnd.PRUNED if pruned else AttemptEnd.SUCCEEDED
            if tracked is not None:
                tracked.finish(ended, outcome, output_path=next(iter(published), None))
            return ended
        log.warning(
            "job %s: attempt %s no longer holds it; result discarded", claim.job_id, claim.attempt
        )
        if tracked is not None:
            tracked.finish(AttemptEnd.SUPERSEDED, outcome)
        return AttemptEnd.SUPERSEDED
    except JobCancelled:
        _with_db_retry(lambda: lifecycle.record_cancelled(claim))
        if tracked is not None:
            tracked.finish(AttemptEnd.CANCELLED)
        return AttemptEnd.CANCELLED
    except JobSuperseded:
        if tracked is not None:
            tracked.finish(AttemptEnd.SUPERSEDED)
        return AttemptEnd.SUPERSEDED
    except DatabaseReplaced as exc:
        log.error("job %s: %s; this attempt records nothing", claim.job_id, exc.message)
        if tracked is not None:
            tracked.finish(AttemptEnd.SUPERSEDED)
        return AttemptEnd.SUPERSEDED
    except Exception as exc:
        # Any error inside a job ends it: retrying is for workers that die, not for code that
        # raises (bad data, out of memory, the time limit would only happen again).
        error_type, message = describe_failure(exc)
        if isinstance(exc, FtqueueError) or _expected(exc):
            log.error("job %s failed: %s: %s", claim.job_id, error_type, message)
        else:
            log.exception("job %s failed", claim.job_id)
        _with_db_retry(lambda: lifecycle.record_failure(claim, error_type, message))
        if tracked is not None:
            tracked.finish(AttemptEnd.FAILED, error=f"{error_type}: {message}")
        return AttemptEnd.FAILED
    finally:
        # Still here only when nothing was published (failure, cancel, superseded).
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _headline(measurements: list[Measurement]) -> str:
    """The last measurement of the job, for the worker's log line."""
    if not measurements:
        return ""
    m = measurements[-1]
    return f": {m.split} accuracy {m.accuracy:.4f}, loss {m.loss:.4f} (epoch {m.epoch})"


def remove_stale_staging(final: Path) -> list[Path]:
    """Delete staging directories left by earlier attempts of a job this attempt now holds."""
    root = final.parent
    stale = sorted(root.glob(f"{publishing.STAGING_PREFIX}{final.name}-*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _soft_time_limit(exc: BaseException) -> bool:
    from celery.exceptions import SoftTimeLimitExceeded

    return isinstance(exc, SoftTimeLimitExceeded)


def _cuda_out_of_memory(exc: BaseException) -> bool:
    # torch is only ever loaded by the jobs that need it; if it is not, no error came from it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def _expected(exc: BaseException) -> bool:
    """Failures that are the user's to fix: logged in one line, without a traceback."""
    return _soft_time_limit(exc) or _cuda_out_of_memory(exc)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """The error type and message a failed job's row keeps."""
    if _soft_time_limit(exc):
        limit = get_settings().soft_time_limit
        return (
            "TimeLimitExceeded",
            f"the job ran past its time limit of {limit}s (FTQUEUE_TIME_LIMIT)",
        )
    if _cuda_out_of_memory(exc):
        return "CudaOutOfMemory", (
            f"{first_line(exc)} - lower --batch-size or --max-length, or use a larger GPU"
        )
    return type(exc).__name__, str(exc).strip() or repr(exc)


def _with_db_retry(action: Callable[[], T]) -> T:
    started = time.monotonic()
    delay = 0.5
    failing = False
    while True:
        try:
            done = action()
        except DatabaseReplaced:
            raise
        except DatabaseError as exc:
            if time.monotonic() > started + RECORD_RETRY_SECONDS:
                raise
            if not failing:
                log.warning("database unavailable, retrying for up to %.0fs: %s",
                            RECORD_RETRY_SECONDS, exc)  # fmt: skip
            failing = True
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            continue
        if failing:
            log.warning("database back after %.0fs", time.monotonic() - started)
        return done
