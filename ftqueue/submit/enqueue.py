"""Creating jobs, the one way: check the servers, insert the rows, commit, then publish the ids.

`submit`, a sweep's trials and the benchmarks all go through here, so a worker never receives
an id it cannot find, and an eager process holds what it will run itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from ftqueue.errors import PublishInterrupted
from ftqueue.kinds import registry
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.store import db, insert
from ftqueue.store.schema import Job


def ready() -> None:
    """Before anything is written: the database migrated, and the broker reachable unless eager.

    DatabaseError or BrokerError, one line saying what to do.
    """
    db.ensure_ready()
    if not get_settings().eager:
        from ftqueue.queue import broker

        broker.check_broker()


NewJobs = Sequence[insert.NewJob]


def jobs(new: NewJobs | Callable[[Session], NewJobs]) -> list[Job]:
    """Insert the jobs in one write transaction, commit, then publish their ids.

    ``new`` is the jobs, or a function that makes them inside the transaction, so that what
    decides them (earlier identical specs, a sweep's free slots under its lock) is read in
    the same one. In eager mode the rows are
    held by this process, which runs them itself, and nothing is published. A PublishError
    (with the ids that were sent) leaves the committed rows queued, for the reaper's
    lost-message scan to publish; so does Ctrl-C, as PublishInterrupted (a
    KeyboardInterrupt that says how far publishing got).
    """
    settings = get_settings()
    with db.session_scope(write=True) as session:
        wanted = new(session) if callable(new) else new
        for job in wanted:
            registry.lookup(job.kind)  # the schema does not check kinds: the registry does
        created = insert.create_jobs(
            session,
            wanted,
            max_attempts=settings.max_attempts,
            held_by=eager.holder() if settings.eager else None,
            lease_seconds=settings.lease_seconds,
        )
    if created and not settings.eager:
        from ftqueue.queue import broker

        sent: list[int] = []
        try:
            broker.publish(created, progress=sent)
        except KeyboardInterrupt:
            ids = [job.id for job in created]
            raise PublishInterrupted(
                f"interrupted after publishing {len(sent):,} of {len(ids):,} messages",
                created=ids,
                sent=list(sent),
            ) from None
    return created
