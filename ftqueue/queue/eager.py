"""Jobs run by the submitting process itself (FTQUEUE_EAGER=1), held like a worker's.

An eager submit holds its jobs from the moment their rows are written: the queued ones under
a lease that a keeper thread renews, the running one through its attempt's heartbeat (the
same ``execution.run_job`` a worker runs). When the process dies (SIGKILL, a closed terminal)
the leases lapse, and the next command that looks at those jobs (``status``, ``list``,
``submit``, ``--wait``, ``cancel``) ends them through ``settle``; where workers run, their
reaper re-queues a lapsed running one instead. SIGHUP and SIGTERM end them at once
(``end_own``), without waiting for the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence

from ftqueue.artifacts import publishing
from ftqueue.errors import DatabaseError
from ftqueue.settings import get_settings
from ftqueue.store import recovery

log = logging.getLogger(__name__)

#: Worker names of eager processes begin with this; Celery node names never do (no ``@`` lead).
PREFIX = "eager@"


def holder() -> str:
    """This process's name as the holder of its eager jobs (tasks.worker_name uses the same)."""
    return f"{PREFIX}{socket.gethostname()}:{os.getpid()}"


class Keeper:
    """Renews the lease on this process's queued eager jobs while it runs them one by one."""

    def __init__(self) -> None:
        self.lease_seconds = get_settings().lease_seconds
        self.interval = min(1.0, self.lease_seconds / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eager-keeper", daemon=True)

    def __enter__(self) -> Keeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        name = holder()
        while not self._stop.wait(self.interval):
            try:
                # Only queued rows: the running one is renewed by its attempt's heartbeat.
                recovery.renew_held(name, lease_seconds=self.lease_seconds)
            except DatabaseError as exc:
                log.warning("eager jobs: lease renewal failed: %s", exc)


def settle(job_ids: Sequence[int] | None = None) -> list[int]:
    """End the jobs (all, or these) whose eager process died; returns their ids."""
    ended = recovery.end_abandoned(job_ids, holder_prefix=PREFIX)
    if ended:
        log.warning("ended jobs abandoned by their eager process: %s", ended)
        _remove_staging(ended)
    return ended


def end_own(reason: str) -> list[int]:
    """End the jobs this process holds, because it is stopping (SIGHUP, SIGTERM)."""
    ended = recovery.end_held(
        holder(), error_type="Interrupted", message=f"{reason}: submit it again to run it"
    )
    _remove_staging(ended)
    return ended


def _remove_staging(job_ids: Sequence[int]) -> None:
    """Staging directories a dead eager attempt left (no worker's reaper may ever see them)."""
    strays = publishing.stray_staging_by_job(get_settings().artifacts_dir)
    for job_id in set(job_ids) & set(strays):
        for path in strays[job_id]:
            publishing.discard(path)
