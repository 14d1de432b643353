"""The process supervisor behind `ftqueue worker`: one Celery worker process per GPU.

Each process sees exactly one GPU (``CUDA_VISIBLE_DEVICES``) and runs one job at a time;
without a GPU, CPU workers share the cores. A process that dies is restarted, within limits,
and the job it was running is re-queued at once (lost.py), not when its lease lapses.
The supervisor itself never imports torch or initialises CUDA.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ftqueue.core.states import gpu_class_from_name
from ftqueue.worker import lost
from ftqueue.worker.gpuclaim import nvidia_smi
from ftqueue.worker.nodes import NAME_TAKEN_EXIT

log = logging.getLogger(__name__)

#: Set for the processes `ftqueue worker` starts, so that their rows in the workers table name it.
SUPERVISOR_ENV = "FTQUEUE_SUPERVISOR_PID"
#: The GPU class a worker process serves, for its row in the workers table.
CLASS_ENV = "FTQUEUE_WORKER_CLASS"


def detect_gpus() -> list[str]:
    """GPU indices visible to this machine, found without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return [index for (index,) in nvidia_smi("index")]


def gpu_names() -> dict[str, str]:
    """Each GPU's name by its index and by its UUID, without initialising CUDA here."""
    names: dict[str, str] = {}
    for index, uuid, name in nvidia_smi("index", "uuid", "name"):
        names[index] = names[uuid] = name
    return names


def class_queues(queues: list[str], gpu_class: str | None) -> list[str]:
    """What a worker of ``gpu_class`` consumes: its class's queue of each kind, then the
    shared ones (asked of Redis in that order: see app.py's queue_order_strategy)."""
    if not gpu_class:
        return list(queues)
    return [f"{q}.{gpu_class}" for q in queues] + list(queues)


@dataclass
class Slot:
    """One worker process: a GPU (or none, for a CPU worker) and its Celery node name."""

    name: str
    gpu: str | None
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    #: The GPU class whose queues it consumes as well as the shared ones.
    gpu_class: str | None = None

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
            ",".join(class_queues(queues, self.gpu_class)),
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
        if self.gpu_class:
            env[CLASS_ENV] = self.gpu_class
        if self.threads is not None and "OMP_NUM_THREADS" not in os.environ:
            # CPU workers share the cores: each taking all of them makes every one slower.
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env


def plan_slots(
    gpus: list[str], *, processes: int, prefix: str | None, gpu_class: str | None = None
) -> list[Slot]:
    """One slot per GPU, or ``processes`` CPU slots; each of ``gpu_class`` when given, else
    of the class its GPU's name gives (``h200``), or ``cpu``."""
    host = socket.gethostname()
    if gpus:
        names = gpu_names() if gpu_class is None else {}
        return [
            Slot(
                f"{prefix or 'gpu'}{g}@{host}",
                g,
                gpu_class=gpu_class or gpu_class_from_name(names.get(g) or "GPU"),
            )
            for g in gpus
        ]
    threads = max(1, (os.cpu_count() or 1) // processes)
    return [
        Slot(f"{prefix or 'cpu'}{i}@{host}", None, threads=threads, gpu_class=gpu_class or "cpu")
        for i in range(processes)
    ]


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
