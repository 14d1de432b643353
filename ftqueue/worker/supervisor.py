"""The process supervisor behind `ftqueue worker`: one Celery worker process per GPU.

Each process sees exactly one GPU (``CUDA_VISIBLE_DEVICES``) and runs one job at a time;
without a GPU, CPU workers share the cores. A process that dies is restarted, within limits,
and the job it was running is re-queued at once (lost.py), not when its lease lapses.
The supervisor itself never imports torch or initialises CUDA.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ftqueue.worker import lost
from ftqueue.worker.nodes import NAME_TAKEN_EXIT

log = logging.getLogger(__name__)

#: Set for the processes `ftqueue worker` starts, so that their rows in the workers table name it.
SUPERVISOR_ENV = "FTQUEUE_SUPERVISOR_PID"


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
            "ftqueue.queue.app:app",
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
        # The process's row in the workers table names the supervisor that started it.
        env[SUPERVISOR_ENV] = str(os.getpid())
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


def _release_jobs(slot: Slot, code: int) -> None:
    """Re-queue the job of a Celery process that exited; its pool child died with it."""
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    try:
        lost.release(slot.name, why=f"worker process {slot.name} ended ({how})")
    except Exception as exc:  # the database or broker may be away: the lease is the backstop
        log.warning("could not re-queue the job of %s: %s", slot.name, exc)


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
                if code == NAME_TAKEN_EXIT:  # it said why; restarting would only repeat it
                    stop(signal.SIGTERM, None)
                    status = 1
                    continue
                _release_jobs(slot, code)
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
