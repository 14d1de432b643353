"""The reaper: re-queues jobs of dead workers and re-publishes queued jobs whose message was lost.

Every worker's main process runs one (started when the worker is ready); a Redis lock lets
one of them act at a time, so there is no coordinator process to lose.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from dataclasses import dataclass, field

from redis.exceptions import LockError

from ftqueue.artifacts import objects, publishing
from ftqueue.errors import FtqueueError, first_line
from ftqueue.kinds import rows
from ftqueue.notify import flush as notify
from ftqueue.queue import broker
from ftqueue.settings import get_settings
from ftqueue.store import reads, recovery
from ftqueue.store.schema import utcnow

log = logging.getLogger(__name__)

REAPER_LOCK = "ftqueue:reaper"
# A stray's name carries its job: .staging-job-12-xxxx, or .replaced-job-12-xxxx from publish.


class Reaper(threading.Thread):
    """Runs `reap_once` every half lease, until stopped."""

    def __init__(self, interval: float | None = None) -> None:
        super().__init__(name="ftqueue-reaper", daemon=True)
        lease = get_settings().lease_seconds
        self.interval = interval if interval is not None else max(1.0, lease / 2)
        self.stopping = threading.Event()

    def run(self) -> None:
        failing: str | None = None
        while not self.stopping.wait(self.interval):
            try:
                summary = reap_once(lock_seconds=self.interval)
            except Exception as exc:  # the broker or database may be away; try next time
                # One line when a failure starts (or changes), not one per pass.
                problem = first_line(exc)
                if problem != failing:
                    log.warning("reaper: %s (retrying every %.0fs)", problem, self.interval)
                failing = problem
                continue
            if failing is not None and summary.ran:
                log.warning("reaper: working again")
                failing = None


@dataclass
class ReapSummary:
    #: False when another reaper held the lock and this pass did nothing.
    ran: bool = False
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    republished: list[int] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    #: New trials of sweeps whose free slots no worker filled (it died after a trial ended).
    filled: list[int] = field(default_factory=list)
    #: Sweeps whose end no worker saw (it died just after their last trial ended).
    ended: list[str] = field(default_factory=list)
    #: Sweeps this pass could not fill, marked broken (the others were filled all the same).
    broken: list[str] = field(default_factory=list)


def reap_once(*, lock_seconds: float = 10.0, grace_seconds: float | None = None) -> ReapSummary:
    """One reaper pass; returns what it did (nothing when another reaper holds the lock)."""
    summary = ReapSummary()
    lock = broker.redis_client().lock(REAPER_LOCK, timeout=max(1.0, lock_seconds))
    if not lock.acquire(blocking=False):
        return summary
    summary.ran = True
    try:
        report = recovery.reap_expired()
        summary.failed = report.failed
        if report.requeued:
            broker.publish(report.requeued)
            summary.requeued = [job.id for job in report.requeued]
        grace = grace_seconds if grace_seconds is not None else broker.lost_message_grace()
        pending = broker.pending_task_ids()
        lost = recovery.queued_without_message(
            pending, older_than=utcnow() - dt.timedelta(seconds=grace)
        )
        if lost:
            broker.publish(lost)
            summary.republished = [job.id for job in lost]
        summary.cleaned = clean_staging()
        summary.filled, summary.broken = _fill_sweeps(report.failed)
        summary.ended = _end_sweeps()
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: another reaper may hold it
            lock.release()
    for what in ("requeued", "failed", "republished", "cleaned", "filled", "ended", "broken"):
        if getattr(summary, what):
            log.warning("reaper %s: %s", what, getattr(summary, what))
    # Outside the lock: a slow receiver must not hold up the next pass. This also sends what
    # a process left unsent (it died between its commit and its send).
    notify()
    return summary


def _fill_sweeps(failed: list[int]) -> tuple[list[int], list[str]]:
    """Tell sweeps about the trials this pass failed, then fill every sweep's free slots;
    returns the new trials' ids and the sweeps found broken."""
    from ftqueue.sweeps import trials

    for job_id in failed:
        try:
            trials.after_trial(job_id)
        except Exception as exc:  # a broken sweep must not stop the pass; fill_all marks it
            log.warning("reaper: job %s's sweep not told: %s", job_id, first_line(exc))
    filled = trials.fill_all()
    return [job.id for job in filled.created], filled.broken


def _end_sweeps() -> list[str]:
    from ftqueue.sweeps import trials

    return trials.end_all()


def clean_staging() -> list[str]:
    """Remove staging (and moved-aside) directories, and temporary upload prefixes on an
    object store, of jobs no attempt is writing to any more."""
    strays = publishing.stray_staging_by_job(get_settings().artifacts_dir)
    root = rows.object_root()
    uploads: dict[int, list[str]] = {}
    if root is not None:
        try:
            uploads = objects.uploads_by_job(root)
        except FtqueueError as exc:  # the store away must not stop the pass; the next one tries
            log.warning("reaper: %s", exc.message)
    if not strays and not uploads:
        return []
    live = reads.unfinished(set(strays) | set(uploads))
    removed: list[str] = []
    for jid in set(strays) - live:
        for path in strays[jid]:
            publishing.discard(path)
            removed.append(str(path))
    if root is not None:
        stale = [key for jid in set(uploads) - live for key in uploads[jid]]
        try:
            objects.remove_uploads(root, stale)
        except FtqueueError as exc:
            log.warning("reaper: %s", exc.message)
            stale = []
        removed += [f"{root.url.split('://')[0]}://{key}" for key in stale]
    return removed
