"""The heartbeat of a running attempt: lease renewal, progress and cancel checks in a thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from ftqueue.core.outcome import Progress
from ftqueue.core.states import Phase
from ftqueue.errors import DatabaseError, DatabaseReplaced, JobCancelled, JobSuperseded
from ftqueue.store import lifecycle, reads

log = logging.getLogger(__name__)


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
