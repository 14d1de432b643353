"""Celery tasks, one per job kind, and the hooks that run inside worker processes.

A task is a few lines around `execution.run_job`: the message carries only a job id, and the
database says what to do with it. Task names and queues come from the registry of kinds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import Task, signals
from celery.worker.request import Request

from ftqueue import db, execution, lifecycle
from ftqueue.celery_app import app
from ftqueue.kinds import JobKind, all_kinds

log = logging.getLogger(__name__)


class JobRequest(Request):
    """Marks the job failed when the worker kills it at the hard time limit."""

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


class JobTask(Task):
    Request = JobRequest
    acks_late = True
    reject_on_worker_lost = True


def worker_name(request: Any) -> str:
    """The claiming worker's name: the Celery node name, or a per-process name when eager."""
    hostname = getattr(request, "hostname", None)
    if hostname and not getattr(request, "is_eager", False):
        return str(hostname)
    return f"eager@{socket.gethostname()}:{os.getpid()}"


def _task_for(kind: JobKind[Any]) -> Task:
    def run(self: Task, job_id: int) -> str:
        request = self.request
        return execution.run_job(int(job_id), worker=worker_name(request), task_id=request.id)

    run.__name__ = run.__qualname__ = kind.name
    task: Task = app.task(name=kind.task_name, base=JobTask, bind=True)(run)
    return task


#: The task of each kind, by kind name.
TASKS: dict[str, Task] = {kind.name: _task_for(kind) for kind in all_kinds()}


# --- hooks run inside Celery worker processes ---------------------------------------------


@signals.worker_process_init.connect
def _pool_process_started(**_: Any) -> None:
    # Connections inherited through fork would be shared with the parent: start afresh.
    db.dispose_engines()
    # Import the training stack in the background so the first job does not wait for it;
    # the pool gives a new process only a few seconds to report that it is alive.
    threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()


def _warm_imports() -> None:
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401

        import ftqueue.training  # noqa: F401
    except Exception:  # a broken install shows up, with its traceback, in the first job
        log.debug("warm-up import failed", exc_info=True)


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **_: Any) -> None:
    from ftqueue.reaper import Reaper

    Reaper().start()
