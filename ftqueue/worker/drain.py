"""A worker about to be stopped hands its running jobs back: Kubernetes' preStop hook.

Told to stop (SIGTERM), `ftqueue worker` passes the signal on to its Celery processes, whose
warm shutdown waits for the running job to end: hours, perhaps. A pod is killed when its grace
period ends, and its job would then wait for its lease to lapse. Run before the signal
(``python -m ftqueue.worker.drain``), this re-queues the running jobs of the workers on this
host at once, as for a worker seen to die (lost.py): the attempt sees at its next step that
the job was taken over and stops, recording nothing, so the warm shutdown ends within a step.
The attempt counts toward the job's attempts, as a lapsed lease's does.
"""

from __future__ import annotations

import logging
import socket
import sys

from sqlalchemy import select

from ftqueue.core.states import JobStatus
from ftqueue.core.text import printable
from ftqueue.errors import first_line
from ftqueue.store import db
from ftqueue.store.schema import Job
from ftqueue.worker import lost

log = logging.getLogger(__name__)


def running_workers(host: str) -> list[str]:
    """The names (``<prefix>@<host>``) of this host's workers that hold a running job."""
    with db.session_scope() as session:
        names = session.scalars(
            select(Job.worker)
            .where(Job.status == JobStatus.RUNNING, Job.worker.like(f"%@{host}"))
            .distinct()
        )
        return sorted(name for name in names if name and name.rsplit("@", 1)[-1] == host)


def drain(host: str | None = None) -> list[int]:
    """Re-queue (or fail, once out of attempts) the running jobs of ``host``'s workers."""
    host = host or socket.gethostname()
    released: list[int] = []
    for name in running_workers(host):
        report = lost.release(name, why=f"worker {name} is stopping")
        released += [job.id for job in report.requeued] + report.failed
    return released


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="ftqueue drain: %(message)s")
    try:
        released = drain()
    except Exception as exc:  # the lease is the backstop: stopping must go on
        problem = printable(first_line(exc))
        print(f"ftqueue drain: could not release this host's jobs: {problem}", file=sys.stderr)
        return 1
    print(f"ftqueue drain: released jobs {released or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
