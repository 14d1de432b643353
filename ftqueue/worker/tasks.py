"""Celery tasks, one per job kind, and the hooks that run inside worker processes.

A task is a few lines around `execution.run_job`: the message carries only a job id, and the
database says what to do with it. Task names and queues come from the registry of kinds.

A task ends in the Celery state that matches its job, so Flower and Celery events show what
happened: SUCCESS for a job that succeeded, FAILURE (JobFailed) for one that failed, REVOKED
for one that was cancelled, and for a delivery that found its job taken or ended (a duplicate,
a message redelivered after its job was re-queued under another). Every one of them
acknowledges its message, as before: the job's row is the record, and nothing is delivered
again because a job failed. A pool process that dies mid-job has its job re-queued at once
(see lost.py), and its message is redelivered for it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Task, signals
from celery.exceptions import Ignore, Reject
from celery.worker.request import Request

from ftqueue.core.states import AttemptEnd, JobStatus
from ftqueue.errors import DatabaseReplaced, JobFailed, NameTaken
from ftqueue.execution import attempt
from ftqueue.kinds import JobKind, all_kinds
from ftqueue.queue import broker, eager
from ftqueue.queue.app import app
from ftqueue.settings import get_settings
from ftqueue.store import db, lifecycle, reads
from ftqueue.store.schema import Job
from ftqueue.worker import crashes, lifeline, lost, nodes, poison, roster
from ftqueue.worker.supervisor import SUPERVISOR_ENV

log = logging.getLogger(__name__)


class JobRequest(Request):
    """Marks the job failed when the worker kills it at the hard time limit.

    Time limits carried by a message are ignored: the worker's FTQUEUE_TIME_LIMIT governs
    (publish sends none), so a message cannot lift the limit, nor stall the pool with a value
    Celery fails on only after taking the worker's one slot.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.time_limits = (None, None)
        #: The kernel's OOM kill counts when the pool took the job (see crashes.py).
        self._oom_before: tuple[int, ...] = ()

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        self._oom_before = crashes.oom_kills()  # the pool shares this process's cgroup
        super().on_accepted(pid, time_accepted)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or not self.args:
            return
        try:
            lifecycle.fail_running(
                int(self.args[0]),
                worker=str(self.hostname),
                error_type="TimeLimitExceeded",
                message=f"hard time limit of {timeout:.0f}s exceeded; the job's process was killed",
            )
        except Exception:  # a failure here must not take the worker's main process down
            log.exception("could not record the hard time limit of job %s", self.args[0])

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        # Runs in the worker's main process. When the pool child died mid-job, release its job
        # now (not at lease expiry): re-queued under its own task id, the message that Celery
        # hands back just below (reject_on_worker_lost) runs it again on the next pool child.
        if self._pool_child_lost(exc_info.exception) and self.args:
            try:
                crash = crashes.classify(
                    crashes.signal_number(str(exc_info.exception)),
                    oom_before=self._oom_before,
                    oom_after=crashes.oom_kills() if self._oom_before else (),
                )
                lost.release(
                    str(self.hostname),
                    job_id=int(self.args[0]),
                    why=f"the pool process of {self.hostname} running it died",
                    redelivered=True,
                    crash=crash,
                )
            except Exception:  # the lease is the backstop: never take the main process down
                log.exception("could not release job %s of a dead pool process", self.args[0])
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _pool_child_lost(self, exc: BaseException) -> bool:
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # Billiard reports a child's exit this way too, unless the worker killed it.
            return not (self._already_cancelled or self._already_revoked)
        return isinstance(exc, WorkerLostError)


class JobTask(Task):
    Request = JobRequest
    acks_late = True
    reject_on_worker_lost = True
    # Acknowledged like a success (task_acks_on_failure's default): a failed job is recorded
    # and must not be delivered again. Expected, so the worker logs one line, no traceback.
    acks_on_failure = True
    throws = (JobFailed,)


def worker_name(request: Any) -> str:
    """The claiming worker's name: the Celery node name, or a per-process name when eager."""
    hostname = getattr(request, "hostname", None)
    if hostname and not getattr(request, "is_eager", False):
        return str(hostname)
    return f"eager@{socket.gethostname()}:{os.getpid()}"


#: Job ids are the jobs table's INTEGER key.
MAX_JOB_ID = 2**31 - 1


def job_id_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The job id a message carries, or None when it carries anything else."""
    if kwargs or len(args) != 1:
        return None
    value = args[0]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_JOB_ID:
        return None
    return value


def _task_for(kind: JobKind[Any]) -> Task:
    # Any arguments are accepted and checked here, so that a message carrying something else
    # is set aside in one line instead of failing with a traceback in Celery's tracer.
    def run(self: Task, *args: Any, **kwargs: Any) -> str:
        request = self.request
        job_id = job_id_of(args, kwargs)
        if job_id is None:
            _set_aside(request, args, kwargs)
            return AttemptEnd.SKIPPED
        try:
            ended = attempt.run_job(job_id, worker=worker_name(request), task_id=request.id)
            if getattr(request, "is_eager", False):
                return ended  # eager: the submitting process reads the row itself
            if ended == AttemptEnd.DEFERRED:
                _defer(self, job_id)
            return _celery_end(self, job_id, ended)
        except DatabaseReplaced as exc:
            if getattr(request, "is_eager", False):
                raise
            # The message belongs to whichever database is there now: hand it back for the
            # restarted worker (the main process is shutting down, see _watch_database).
            log.error("job %s: %s; message returned to the queue", job_id, exc.message)
            time.sleep(1)
            raise Reject(exc.message, requeue=True) from None

    run.__name__ = run.__qualname__ = kind.name
    task: Task = app.task(name=kind.task_name, base=JobTask, bind=True)(run)
    return task


def _defer(task: Task, job_id: int) -> None:
    """Hand a job held back by the per-user cap back to its queue, to be looked at later.

    Celery's retry publishes the message again (same task id, queue and priority, with a
    countdown) before this one is acknowledged, so it is never lost; the job's row was not
    touched, so no attempt is counted. The jitter keeps a user's held-back jobs from all
    coming back at once.
    """
    delay = get_settings().cap_retry_seconds * random.uniform(0.75, 1.25)
    raise task.retry(countdown=delay, max_retries=None)


def _celery_end(task: Task, job_id: int, ended: AttemptEnd) -> str:
    """Return, raise JobFailed or revoke, as the job's status says after this delivery.

    A delivery that did not run the job (a duplicate, a message redelivered after its job was
    taken or ended) or whose attempt was taken over is revoked: it is not the job's end.
    """
    if ended in (AttemptEnd.SUCCEEDED, AttemptEnd.PRUNED):
        return ended
    if ended in (AttemptEnd.SKIPPED, AttemptEnd.SUPERSEDED):
        _revoke(task, job_id, f"job {job_id}: not run by this delivery ({ended})")
    try:
        state = reads.job_states([job_id]).get(job_id)
    except Exception as exc:  # only Celery's view is at stake: never the delivery
        log.warning("job %s: could not read its status for Celery: %s", job_id, exc)
        return ended
    if state is None:
        return ended
    if state.status == JobStatus.FAILED:
        raise JobFailed(f"job {job_id} failed: {state.error or 'no error message'}")
    if state.status == JobStatus.CANCELLED:
        _revoke(task, job_id, f"job {job_id} was cancelled")
    return ended


def _revoke(task: Task, job_id: int, why: str) -> None:
    """End this task as REVOKED in Celery's events (Flower), IGNORED in its own state."""
    # Celery has no way for a task to end itself as REVOKED: announce it as a revoke would,
    # then end without a result (Ignore acknowledges and sends no other event).
    try:
        task.send_event("task-revoked", terminated=False, signum=None, expired=False)
    except Exception as exc:
        log.warning("job %s: could not send its task-revoked event: %s", job_id, exc)
    log.info("%s; its task is marked revoked", why)
    raise Ignore(why)


def _set_aside(request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if getattr(request, "is_eager", False):
        raise ValueError(f"a job task takes one job id, not args={args!r} kwargs={kwargs!r}")
    entry = json.dumps(
        {"task": request.task, "id": request.id, "args": args, "kwargs": kwargs}, default=repr
    )
    queue = (request.delivery_info or {}).get("routing_key") or "?"
    reason = "it carries no job id (one whole number from 1 up is expected)"
    poison.set_aside(
        broker.redis_client(), queue=queue, reason=reason, raw=entry, worker=request.hostname
    )


#: The task of each kind, by kind name.
TASKS: dict[str, Task] = {kind.name: _task_for(kind) for kind in all_kinds()}


# --- hooks run inside Celery worker processes ---------------------------------------------


@signals.worker_process_init.connect
def _pool_process_started(**_: Any) -> None:
    if _CELERY_MAIN:
        lifeline.bind(_CELERY_MAIN[0])  # no orphan left to finish, or start, a job
    # Connections inherited through fork are the parent's: leave them, and open new ones.
    db.after_fork()
    # Import the training stack in the background so the first job does not wait for it;
    # the pool gives a new process only a few seconds to report that it is alive.
    threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()


def _warm_imports() -> None:
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401

        import ftqueue.training  # noqa: F401

        if get_settings().mlflow_tracking_uri:
            import mlflow.tracking  # noqa: F401  (seconds to import: not in the first job)
    except Exception:  # a broken install shows up, with its traceback, in the first job
        log.debug("warm-up import failed", exc_info=True)


_NODE_LEASE: list[nodes.NodeLease] = []
_ROSTER: list[roster.Roster] = []
#: The pid of this worker's Celery main process, which its pool processes end with.
_CELERY_MAIN: list[int] = []


@signals.celeryd_init.connect
def _take_node_name(sender: Any = None, **_: Any) -> None:
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if supervisor.isdigit():  # started by `ftqueue worker`: end with it, however it ends
        lifeline.bind(int(supervisor))
    _CELERY_MAIN[:] = [os.getpid()]
    # This process forks pool processes while its threads (heartbeats, the reaper) use the
    # database: no fork may copy a SQLite lock a thread holds.
    db.forking_with_threads()
    # Before the pool starts or a message is taken: a second worker under a live worker's
    # name must not start at all.
    lease = nodes.NodeLease(broker.redis_client(), str(sender))
    try:
        lease.acquire()
    except NameTaken as exc:
        print(f"Error: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(nodes.NAME_TAKEN_EXIT) from None
    lease.start_renewing()
    _NODE_LEASE.append(lease)
    if lease.replaced is not None:
        _release_jobs_of(lease)


def _release_jobs_of(lease: nodes.NodeLease) -> None:
    """Re-queue the jobs a dead process left running under this name, now that it is ours."""
    holder = lease.replaced.describe() if lease.replaced else "?"
    try:
        lost.release(lease.name, why=f"the worker process before this one ({holder}) is gone")
    except Exception:  # their leases are the backstop
        log.exception("could not re-queue the jobs of the previous %s", lease.name)


@signals.worker_shutdown.connect
def _give_up_node_name(**_: Any) -> None:
    while _ROSTER:
        _ROSTER.pop().stop()
    while _NODE_LEASE:
        _NODE_LEASE.pop().release()


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    from ftqueue.worker.reaper import Reaper

    Reaper().start()
    if sender is not None:
        queues = list(sender.app.amqp.queues.consume_from or ())
        _ROSTER.append(roster.Roster(str(sender.hostname), queues))
        _ROSTER[-1].start()
    if db.sqlite_path(db.database_url()) is not None:
        db.ping()  # opens the file now, so that a replacement is seen from now on
        threading.Thread(target=_watch_database, name="ftqueue-db-watch", daemon=True).start()


def _watch_database(interval: float = 1.0) -> None:
    """Stop this worker (warm shutdown) once its SQLite file is deleted or replaced.

    The supervisor of `ftqueue worker` starts it again, on the new file; the attempt running
    meanwhile sees the same and records nothing.
    """
    while True:
        time.sleep(interval)
        try:
            db.check_sqlite_file()
        except DatabaseReplaced as exc:
            log.critical("%s; stopping this worker", exc.message)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def run_eagerly(jobs: Sequence[Job]) -> None:
    """Run jobs in this process through the same Celery tasks a worker would (FTQUEUE_EAGER=1).

    The jobs not yet started stay held by this process (see eager.Keeper).
    """
    with eager.Keeper():
        for job in jobs:
            TASKS[job.kind].apply_async((job.id,), task_id=job.task_id)
