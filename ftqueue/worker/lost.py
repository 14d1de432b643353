"""Jobs of a worker process that died, released at once instead of at their lease's expiry.

Two places see a death first: Celery's main process when its pool child dies mid-job
(WorkerLostError), and the supervisor of `ftqueue worker` when a Celery process exits. The
lease stays the backstop for deaths nobody on the machine saw (the machine itself).
"""

from __future__ import annotations

import logging

from ftqueue.queue import broker
from ftqueue.store import recovery
from ftqueue.worker.crashes import Crash

log = logging.getLogger(__name__)


def release(
    worker: str,
    *,
    why: str,
    job_id: int | None = None,
    redelivered: bool = False,
    crash: Crash | None = None,
) -> recovery.ReapReport:
    """Re-queue (or fail, or cancel) the running jobs of dead worker ``worker``.

    ``redelivered``: the broker hands the dead attempt's message back itself (Celery rejects
    it with requeue), so the job keeps its task id and nothing is published; otherwise each
    re-queued job is published under a new task id. ``crash``: the job itself killed its
    process (crashes.py), so it fails at once with the reason instead.
    """
    report = recovery.release_lost(
        worker,
        lost=why,
        job_id=job_id,
        keep_task_id=redelivered,
        crashed=(crash.error_type, crash.message) if crash else None,
    )
    if report.requeued and not redelivered:
        broker.publish(report.requeued)
    if report.requeued:
        log.warning("re-queued %s: %s", [job.id for job in report.requeued], why)
    if report.failed:
        log.warning(
            "failed %s (%s): %s", report.failed, crash.reason if crash else "out of attempts", why
        )
        _tell_sweeps(report.failed)
        _clean_staging()
    return report


def _clean_staging() -> None:
    """The dead attempt's staging directory: no later attempt of a failed job will remove it."""
    from ftqueue.worker import reaper

    try:
        reaper.clean_staging()
    except OSError:  # the reaper's next pass tries again
        log.exception("could not remove the staging directories of ended jobs")


def _tell_sweeps(failed: list[int]) -> None:
    from ftqueue.sweeps import trials

    for job_id in failed:
        try:
            trials.after_trial(job_id)
        except Exception:  # the reaper fills sweeps' free slots too
            log.exception("job %s: could not start the next trial of its sweep", job_id)
