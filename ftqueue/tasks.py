"""Celery tasks: thin adapters from a message carrying a job id to `runner.run_job`."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Task
from celery.worker.request import Request

from ftqueue import lifecycle, runner
from ftqueue.celery_app import app

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


@app.task(name="ftqueue.lora", base=JobTask, bind=True)
def lora(self: Task, job_id: int) -> str:
    return runner.run_job(int(job_id), worker=worker_name(self.request), task_id=self.request.id)


@app.task(name="ftqueue.evaluate", base=JobTask, bind=True)
def evaluate(self: Task, job_id: int) -> str:
    return runner.run_job(int(job_id), worker=worker_name(self.request), task_id=self.request.id)


TASKS = {"lora": lora, "evaluate": evaluate}
