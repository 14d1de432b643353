"""Worker processes: Celery signal hooks, the reaper, and the one-process-per-GPU supervisor."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import signals
from redis.exceptions import LockError
from sqlalchemy import select

from ftqueue import artifacts, db, lifecycle
from ftqueue.celery_app import QUEUES
from ftqueue.models import TERMINAL_STATUSES, Job, utcnow
from ftqueue.settings import get_settings

log = logging.getLogger(__name__)

REAPER_LOCK = "ftqueue:reaper"
# A stray's name carries its job: .staging-job-12-xxxx, or .replaced-job-12-xxxx from publish.
_STRAY_JOB = re.compile(r"^\.(?:staging|replaced)-job-(\d+)-")


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
    Reaper().start()


# --- the reaper ----------------------------------------------------------------------------


class Reaper(threading.Thread):
    """Re-queues jobs of dead workers and re-publishes queued jobs whose message was lost.

    Every worker's main process runs one; a Redis lock lets one of them act at a time.
    """

    def __init__(self, interval: float | None = None) -> None:
        super().__init__(name="ftqueue-reaper", daemon=True)
        lease = get_settings().lease_seconds
        self.interval = interval if interval is not None else max(1.0, lease / 2)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                reap_once(lock_seconds=self.interval)
            except Exception as exc:  # the broker or database may be away; try next time
                log.warning("reaper: %s", exc)


@dataclass
class ReapSummary:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    republished: list[int] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)


def reap_once(*, lock_seconds: float = 10.0, grace_seconds: float | None = None) -> ReapSummary:
    """One reaper pass; returns what it did (nothing when another reaper holds the lock)."""
    from ftqueue import broker

    summary = ReapSummary()
    lock = broker.redis_client().lock(REAPER_LOCK, timeout=max(1.0, lock_seconds))
    if not lock.acquire(blocking=False):
        return summary
    try:
        report = lifecycle.reap_expired()
        summary.failed = report.failed
        if report.requeued:
            broker.publish(report.requeued)
            summary.requeued = [job.id for job in report.requeued]
        lease = get_settings().lease_seconds
        grace = grace_seconds if grace_seconds is not None else max(10.0, float(lease))
        pending = broker.pending_task_ids()
        lost = lifecycle.queued_without_message(
            pending, older_than=utcnow() - dt.timedelta(seconds=grace)
        )
        if lost:
            broker.publish(lost)
            summary.republished = [job.id for job in lost]
        summary.cleaned = [str(p) for p in clean_staging()]
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: another reaper may hold it
            lock.release()
    for what in ("requeued", "failed", "republished", "cleaned"):
        if getattr(summary, what):
            log.warning("reaper %s: %s", what, getattr(summary, what))
    return summary


def clean_staging() -> list[Path]:
    """Remove staging (and moved-aside) directories of jobs no attempt is writing to any more."""
    strays: dict[int, list[Path]] = {}
    for path in artifacts.find_stray_staging(get_settings().artifacts_dir):
        match = _STRAY_JOB.match(path.name)
        if match:
            strays.setdefault(int(match.group(1)), []).append(path)
    if not strays:
        return []
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(list(strays))))
        live = {jid for jid, status in rows if status not in TERMINAL_STATUSES}
    removed = []
    for jid in set(strays) - live:
        for path in strays[jid]:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --- the supervisor behind `ftqueue worker` ------------------------------------------------


def detect_gpus() -> list[str]:
    """GPU indices visible to this machine, found without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@dataclass
class Slot:
    """One worker process: a GPU (or none, for a CPU worker) and its Celery node name."""

    name: str
    gpu: str | None
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def command(self, queues: list[str], loglevel: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ftqueue.celery_app:app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--queues",
            ",".join(queues),
            "--hostname",
            self.name,
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]

    threads: int | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Each process sees exactly one GPU as cuda:0; a CPU worker sees none.
        env["CUDA_VISIBLE_DEVICES"] = self.gpu if self.gpu is not None else ""
        if self.threads is not None and "OMP_NUM_THREADS" not in os.environ:
            # CPU workers share the cores: each taking all of them makes every one slower.
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


def plan_slots(gpus: list[str], *, processes: int, prefix: str | None) -> list[Slot]:
    host = socket.gethostname()
    if gpus:
        return [Slot(f"{prefix or 'gpu'}{g}@{host}", g) for g in gpus]
    threads = max(1, (os.cpu_count() or 1) // processes)
    return [Slot(f"{prefix or 'cpu'}{i}@{host}", None, threads=threads) for i in range(processes)]


def supervise(slots: list[Slot], *, queues: list[str], loglevel: str, max_restarts: int = 5) -> int:
    """Run one Celery worker per slot, restart any that dies, stop all on SIGINT/SIGTERM."""
    stopping = threading.Event()

    def start(slot: Slot) -> None:
        slot.process = subprocess.Popen(slot.command(queues, loglevel), env=slot.env())
        log.info("started %s (pid %s)", slot.name, slot.process.pid)

    def stop(signum: int, _frame: Any) -> None:
        stopping.set()
        for slot in slots:
            if slot.process and slot.process.poll() is None:
                slot.process.send_signal(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in slots:
            start(slot)
        status = 0
        while True:
            alive = [s for s in slots if s.process and s.process.poll() is None]
            if stopping.is_set() and not alive:
                return status
            for slot in slots:
                code = slot.process.poll() if slot.process else None
                if code is None or stopping.is_set():
                    continue
                now = time.monotonic()
                slot.restarts = [t for t in slot.restarts if now - t < 60] + [now]
                if len(slot.restarts) > max_restarts:
                    log.error(
                        "%s exited %s %d times in a minute; giving up",
                        slot.name,
                        code,
                        len(slot.restarts),
                    )
                    stop(signal.SIGTERM, None)
                    status = 1
                    continue
                log.warning("%s exited with %s; restarting", slot.name, code)
                start(slot)
            time.sleep(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


DEFAULT_QUEUES = list(QUEUES)
