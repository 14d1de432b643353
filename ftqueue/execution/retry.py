"""Retrying a database action while the database is unavailable (never while it is replaced)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ftqueue.errors import DatabaseError, DatabaseReplaced

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How long a finished attempt keeps trying to record while the database is unreachable.
RECORD_RETRY_SECONDS = 300.0
#: The longest wait between two tries of an unavailable database.
MAX_RETRY_DELAY = 10.0


def with_db_retry(
    action: Callable[[], T],
    *,
    give_up_after: float | None = RECORD_RETRY_SECONDS,
    waiting: str | None = None,
    prefix: str = "",
) -> T:
    """Run ``action``, trying again with a growing delay while the database is unavailable.

    Raises the DatabaseError after ``give_up_after`` seconds (None: never gives up), and a
    DatabaseReplaced at once: another database holds no record of this work. ``waiting`` is
    logged once, at the first failure, after ``prefix``; so is the recovery.
    """
    started = time.monotonic()
    if waiting is None:
        waiting = f"database unavailable, retrying for up to {give_up_after:.0f}s"
    delay = 0.5
    failing_since: float | None = None
    while True:
        try:
            done = action()
        except DatabaseReplaced:
            raise
        except DatabaseError as exc:
            if give_up_after is not None and time.monotonic() > started + give_up_after:
                raise
            if failing_since is None:
                failing_since = time.monotonic()
                log.warning("%s%s: %s", prefix, waiting, exc)
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
            continue
        if failing_since is not None:
            log.warning("%sdatabase back after %.0fs", prefix, time.monotonic() - failing_since)
        return done
