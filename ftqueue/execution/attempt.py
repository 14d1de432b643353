"""Running one attempt of a job: claim, heart-beat, perform, publish, record.

This is the one path every delivery takes (a Celery worker, eager mode, tests); it holds no
Celery state. The attempt number from the claim fences every write: a heartbeat, the
publication of the job's directory and its results go through only while this attempt still
holds the job, so a superseded or cancelled attempt records nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from ftqueue import kinds
from ftqueue.artifacts import objects, paths, publishing
from ftqueue.core.outcome import Measurement, Outcome
from ftqueue.core.states import AttemptEnd, JobStatus
from ftqueue.errors import DatabaseReplaced, FtqueueError, JobCancelled, JobSuperseded, first_line
from ftqueue.execution import logcapture, tracking
from ftqueue.execution.heartbeat import Heartbeat
from ftqueue.execution.redaction import redact
from ftqueue.execution.retry import with_db_retry
from ftqueue.kinds import rows, synthetic
from ftqueue.notify import flush as notify
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.store import lifecycle, logs
from ftqueue.sweeps import asha

log = logging.getLogger(__name__)


def run_job(job_id: int, *, worker: str, task_id: str | None = None) -> AttemptEnd:
    """Claim and run one job; returns how this delivery ended.

    DEFERRED: its submitter runs FTQUEUE_MAX_RUNNING_PER_USER jobs already; nothing was
    written, and the caller hands the message back for later.
    """
    try:
        claim = claim_when_writable(job_id, worker=worker, task_id=task_id)
    except lifecycle.OverUserCap as exc:
        log.info("job %s: %s runs %s jobs already; held back", job_id, exc.user, exc.running)
        return AttemptEnd.DEFERRED
    if claim is None:
        notify()  # the claim may have failed a job out of attempts
        return AttemptEnd.SKIPPED
    with logcapture.captured(job_id, claim.attempt):
        log.info("job %s: attempt %s on %s", job_id, claim.attempt, worker)
        ended = execute(claim)
    if ended != AttemptEnd.SUPERSEDED:
        _after_trial(job_id)
    # After every commit of the job and its sweep: what they wrote to the outbox goes now.
    notify()
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
    settings = get_settings()
    # An eager process runs only its own submitter's jobs, one at a time: no cap applies.
    cap = None if worker.startswith(eager.PREFIX) else settings.max_running_per_user
    return with_db_retry(
        lambda: lifecycle.claim(
            job_id,
            worker=worker,
            lease_seconds=settings.lease_seconds,
            task_id=task_id,
            max_running_per_user=cap,
        ),
        give_up_after=None,
        waiting="not claiming until the database is back",
        prefix=f"job {job_id}: ",
    )


def published_dir(claim: lifecycle.Claim) -> Path:
    """Where this job's directory is published; re-checked against symlinks made since."""
    default = kinds.lookup(claim.kind).artifacts
    assert default is not None, f"{claim.kind} jobs publish nothing"
    return paths.job_dir(get_settings().artifacts_dir, claim.job_id, claim.output_dir, default)


def _upload(claim: lifecycle.Claim, directory: Path) -> objects.Upload | None:
    """Upload the job's directory to the object store, under a temporary prefix (None when
    the artifacts root is a local directory)."""
    root = rows.object_root()
    if root is None:
        return None
    relative = published_dir(claim).relative_to(get_settings().artifacts_dir).as_posix()
    return objects.upload(root, directory, relative, after_file=_kill_hook(claim))


def _kill_hook(claim: lifecycle.Claim) -> Callable[[int], None] | None:
    """FTQUEUE_TEST_KILL_UPLOAD=N: the attempt N of a job kills its own process once the
    first file of its upload is stored: a worker dying mid-upload, made repeatable for tests."""
    wanted = os.environ.get("FTQUEUE_TEST_KILL_UPLOAD")
    if not wanted or wanted != str(claim.attempt):
        return None

    def kill(count: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    return kill


def rung_check(
    claim: lifecycle.Claim, heartbeat: Heartbeat, policy: asha.Policy | None
) -> Callable[[float | None, Measurement], bool]:
    """The job's ``keep_going``: its sweep's verdicts at its rungs (and at epoch ends, on the
    verdicts still pending), True without a sweep."""
    metric = policy.objective.metric if policy is not None else "accuracy"

    def keep_going(position: float | None, measured: Measurement) -> bool:
        heartbeat.check()
        if policy is None:
            return True
        if position is not None and position not in policy.rungs:
            position = None
        value = float(getattr(measured, metric)) if position is not None else None
        return with_db_retry(lambda: asha.decide(claim, policy, position, value))

    return keep_going


def perform(claim: lifecycle.Claim, *, staging: Path | None, heartbeat: Heartbeat) -> Outcome:
    """Decode the job's spec and run its kind's work (or the synthetic stand-in)."""
    kind = kinds.lookup(claim.kind)
    spec = kind.spec(claim.spec)
    policy = with_db_retry(lambda: asha.policy_of(claim.job_id))
    context = kinds.JobContext(
        job_id=claim.job_id,
        attempt=claim.attempt,
        staging=staging,
        cache_dir=get_settings().cache_dir,
        on_progress=heartbeat.on_progress,
        keep_going=rung_check(claim, heartbeat, policy),
        rungs=policy.points if policy is not None else None,
    )
    if synthetic.is_synthetic(spec.model):
        return synthetic.run(spec, kind, context)
    return kind.perform(spec, context)


def execute(claim: lifecycle.Claim) -> AttemptEnd:
    """Run a claimed attempt to its end and record that end."""
    settings = get_settings()
    staging: Path | None = None
    cleanup = contextlib.ExitStack()
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
                publishing.remove_stale_staging(final)
                staging = cleanup.enter_context(publishing.staging_dir(final))
            outcome = perform(claim, staging=staging, heartbeat=heartbeat)
            uploaded = None
            if staging is not None and outcome.artifact_dir is not None:
                uploaded = _upload(claim, Path(outcome.artifact_dir))
                if uploaded is not None:
                    cleanup.callback(objects.discard_upload, uploaded)
        heartbeat.check()
        publish: Callable[[], str | None] | None = None
        if staging is not None and outcome.artifact_dir is not None:
            src = Path(outcome.artifact_dir)

            def publish() -> str:
                target = published_dir(claim)  # checked again: a symlink may be new
                relative = target.relative_to(settings.artifacts_dir).as_posix()
                if uploaded is not None:
                    objects.publish(uploaded)
                else:
                    publishing.publish_dir(src, target)
                # The row holds the location relative to the root: moving it is a setting.
                published.append(rows.output_location(relative))
                return relative

        measurements = list(outcome.measurements)
        stats = {**outcome.stats, "seconds_to_first_step": heartbeat.first_step_after}
        pruned = stats.get("pruned_at") is not None
        status = JobStatus.PRUNED if pruned else JobStatus.SUCCEEDED
        recorded = with_db_retry(
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
        with_db_retry(lambda: lifecycle.record_cancelled(claim))
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
        _keep_traceback(claim)
        with_db_retry(lambda: lifecycle.record_failure(claim, error_type, message))
        if tracked is not None:
            tracked.finish(AttemptEnd.FAILED, error=f"{error_type}: {message}")
        return AttemptEnd.FAILED
    finally:
        # Still here only when nothing was published (failure, cancel, superseded).
        cleanup.close()


def _keep_traceback(claim: lifecycle.Claim) -> None:
    """Store the failure's traceback with the attempt, before the job reads as failed."""
    text = redact(traceback.format_exc())
    try:
        with_db_retry(lambda: logs.record_traceback(claim.job_id, claim.attempt, text))
    except Exception as exc:  # the failure is recorded all the same, with its message
        log.warning("job %s: could not store its traceback: %s", claim.job_id, exc)


def _headline(measurements: list[Measurement]) -> str:
    """The last measurement of the job, for the worker's log line."""
    if not measurements:
        return ""
    m = measurements[-1]
    return f": {m.split} accuracy {m.accuracy:.4f}, loss {m.loss:.4f} (epoch {m.epoch})"


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
