"""Worker names: one live worker per Celery node name, held as a lease in Redis.

Job rows, logs and the hard time limit name a worker by its node name, so two live workers
under one name would be mistaken for each other. A worker takes the lease
``ftqueue:node:<name>`` when it starts and renews it every few seconds; a second worker with
the same name refuses to start. The lease of a worker that died lapses after
:data:`LEASE_SECONDS`, or at once when the holder ran on this host and its process is gone,
so a restart under the same name is not held up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil
from redis.exceptions import LockError, RedisError

from ftqueue.errors import NameTaken

log = logging.getLogger(__name__)

KEY_PREFIX = "ftqueue:node:"
LEASE_SECONDS = 15.0
#: Exit status of a worker process that refused to start because its name is taken.
NAME_TAKEN_EXIT = 78


@dataclass(frozen=True)
class Holder:
    """Which process holds a node name (the lease's token)."""

    host: str
    pid: int
    #: The process's start time, so that a reused pid is not taken for the holder.
    started: float

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    @classmethod
    def decode(cls, raw: bytes | str) -> Holder | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def gone(self) -> bool:
        """Whether this holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) > 0.01
        except psutil.Error:
            return True

    def describe(self) -> str:
        since = dt.datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {self.pid} on {self.host}, started {since}"


def taken_message(name: str, holder: Holder | None) -> str:
    who = f" ({holder.describe()})" if holder else ""
    return (
        f"a worker named {name} is already running{who}: stop it, or start this one with "
        "another --name."
    )


class NodeLease:
    """The lease on one node name, renewed from a background thread while held."""

    def __init__(self, client: Any, name: str, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.client = client
        self.name = name
        self.key = KEY_PREFIX + name
        self.lease_seconds = lease_seconds
        self.renew_seconds = lease_seconds / 5
        # The renewing thread is not the acquiring one: the token must not be thread-local.
        self.lock = client.lock(self.key, timeout=lease_seconds, thread_local=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The holder whose lease :meth:`acquire` cleared because its process was gone.
        self.replaced: Holder | None = None

    def acquire(self) -> None:
        """Take the name, waiting at most one lease for a dead holder's lease to lapse.

        Raises NameTaken as soon as the holder is seen renewing (it is alive), or when its
        lease has not lapsed within one lease period.
        """
        token = Holder.me().encode()
        deadline = time.monotonic() + self.lease_seconds + 1
        last_ttl: int | None = None
        while True:
            if self.lock.acquire(blocking=False, token=token):
                return
            raw, ttl = self.client.pipeline().get(self.key).pttl(self.key).execute()
            if raw is None:
                continue  # lapsed or released just now
            holder = Holder.decode(raw)
            if holder is None or holder.gone():
                with contextlib.suppress(LockError):  # someone else cleared it first
                    self.lock.do_release(raw)
                self.replaced = holder
                log.info("worker name %s: cleared the lease of a process that is gone", self.name)
                continue
            renewed = last_ttl is not None and ttl > last_ttl + 100
            if renewed or time.monotonic() > deadline:
                raise NameTaken(taken_message(self.name, holder))
            last_ttl = ttl
            time.sleep(0.2)

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew, name="ftqueue-node-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        failing = False
        while not self._stop.wait(self.renew_seconds):
            try:
                try:
                    self.lock.reacquire()
                except LockError:  # lapsed while Redis was away: take it again if free
                    if not self.lock.acquire(blocking=False, token=Holder.me().encode()):
                        holder = Holder.decode(self.client.get(self.key) or b"")
                        raise NameTaken(taken_message(self.name, holder)) from None
                if failing:
                    log.warning("worker name %s: lease renewed again", self.name)
                failing = False
            except (RedisError, NameTaken) as exc:
                if not failing:
                    log.warning("worker name %s: cannot renew its lease: %s", self.name, exc)
                failing = True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(LockError, RedisError):
            self.lock.release()


def check_free(client: Any, names: list[str]) -> dict[str, Holder]:
    """Raise NameTaken when a live worker already holds one of these names.

    Returns the names whose lease a process that is gone still held (cleared now), with it.
    """
    replaced = {}
    for name in names:
        lease = NodeLease(client, name)
        lease.acquire()
        lease.release()
        if lease.replaced is not None:
            replaced[name] = lease.replaced
    return replaced
