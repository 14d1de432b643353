"""Running the service: the results database's schema, and the worker processes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ftqueue.store import db

if TYPE_CHECKING:
    from ftqueue.worker.supervisor import Slot

log = logging.getLogger(__name__)


def db_url() -> str:
    """The results database's URL (FTQUEUE_DATABASE_URL), its password hidden."""
    return db.safe_url(db.database_url())


def db_upgrade(*, revision: str = "head") -> tuple[str | None, str | None]:
    """Create or upgrade the tables to ``revision``; returns the revisions before and after."""
    url = db.database_url()
    before = db.upgrade(url, revision)  # read under the lock: a concurrent upgrade came first
    return before, db.current_revision(url)


def db_downgrade_loss(*, revision: str) -> tuple[int, int] | None:
    """The jobs and results a downgrade to ``revision`` would drop; None when it drops none."""
    return db.downgrade_loss(db.database_url(), revision)


def db_downgrade(*, revision: str) -> str | None:
    """Downgrade the schema to ``revision``; returns the revision it is at now (None: base)."""
    url = db.database_url()
    db.downgrade(url, revision)
    return db.current_revision(url)


def db_current() -> dict[str, Any]:
    """The database's URL (password hidden), its schema revision and the newest one (head)."""
    url = db.database_url()
    return {
        "url": db.safe_url(url),
        "revision": db.current_revision(url),
        "head": db.head_revision(),
    }


def check_workers(*, prefix: str | None = None) -> list[str]:
    """Check the workers' name prefix, the database and the broker; returns the GPUs visible."""
    from ftqueue.queue.broker import check_broker
    from ftqueue.submit.submission import check_label
    from ftqueue.worker import supervisor

    if prefix:
        check_label(prefix, "--name")
    db.ensure_ready()
    check_broker()
    return supervisor.detect_gpus()


def plan_workers(
    *,
    gpus: Sequence[str],
    processes: int,
    prefix: str | None,
    wait_for_gpu: bool = False,
    on_wait: Callable[[str], None] | None = None,
    gpu_class: str | None = None,
) -> list[Slot]:
    """One worker per GPU (CPU workers when none), each name checked free of a live worker.

    Each GPU is claimed for this process's life, host-wide: GpuTaken when another worker
    holds one (or, with ``wait_for_gpu``, wait for it, telling ``on_wait``). Each consumes
    the queues of ``gpu_class`` (default: its GPU's, or ``cpu``) as well as the shared ones.
    """
    from ftqueue.queue.broker import redis_client
    from ftqueue.worker import gpuclaim, lost, nodes, supervisor

    slots = supervisor.plan_slots(
        list(gpus), processes=processes, prefix=prefix, gpu_class=gpu_class
    )
    claims = [(slot.gpu, slot.name) for slot in slots if slot.gpu is not None]
    gpuclaim.claim(claims, wait=wait_for_gpu, on_wait=on_wait)
    gone = nodes.check_free(redis_client(), [slot.name for slot in slots])
    for name, holder in gone.items():  # killed with its supervisor: its jobs wait for no lease
        why = f"the worker process before this one ({holder.describe()}) is gone"
        try:
            lost.release(name, why=why)
        except Exception as exc:  # their leases are the backstop: the worker starts anyway
            log.warning("could not re-queue the jobs of the previous %s: %s", name, exc)
    return slots


def run_workers(slots: Sequence[Slot], *, queues: Sequence[str], loglevel: str) -> int:
    """Start the workers and restart them as needed until stopped; returns the exit code."""
    from ftqueue.worker import supervisor

    return supervisor.supervise(list(slots), queues=list(queues), loglevel=loglevel)
