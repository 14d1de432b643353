"""A worker's own row in the workers table: who it is, what it has, kept fresh from a thread.

The Celery main process of each worker writes its row when it is ready (name, host, pid, the
`ftqueue worker` supervisor that started it, its GPU, queues and versions), refreshes it
every FTQUEUE_WORKER_REFRESH seconds with the job it runs, deletes rows of workers gone long
since, and deletes its own row when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from ftqueue.errors import first_line
from ftqueue.settings import get_settings
from ftqueue.store import workers
from ftqueue.worker.supervisor import CLASS_ENV, SUPERVISOR_ENV

log = logging.getLogger(__name__)

#: Beats between two looks for rows to forget: each reads every row, and a fleet of a
#: thousand workers looking on every beat would read 200,000 rows a second for nothing.
FORGET_EVERY = 12


def version_of(package: str) -> str | None:
    """An installed distribution's version, read without importing it (torch takes seconds)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def gpu_info(device: str | None) -> tuple[str | None, int | None]:
    """The name and memory (MiB) of the GPU ``device`` (an index or a UUID), through NVML.

    None, None without NVML, a driver or such a device: a CPU machine is no error.
    """
    if not device:
        return None, None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py, no driver, no GPU: all the same here
        return None, None
    try:
        # NVML numbers GPUs as the machine does, which is what CUDA_VISIBLE_DEVICES names.
        if device.isdigit():
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(device))
        else:
            handle = pynvml.nvmlDeviceGetHandleByUUID(device)
        name = pynvml.nvmlDeviceGetName(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        name = name.decode() if isinstance(name, bytes) else str(name)
        return name, int(memory) // 2**20
    except Exception:
        return None, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def class_of(queues: Sequence[str]) -> str | None:
    """A worker's GPU class: as `ftqueue worker` set it, else what its queues say
    (``lora.a100`` is class a100's), else none (a worker started by hand on shared queues)."""
    named = os.environ.get(CLASS_ENV, "").strip()
    if named:
        return named
    suffixes = sorted({q.split(".", 1)[1] for q in queues if "." in q})
    return suffixes[0] if suffixes else None


def describe(name: str, queues: Sequence[str]) -> dict[str, Any]:
    """This process's row: every column but the times."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    device = visible.split(",")[0].strip() if visible and visible != "-1" else None
    gpu_name, gpu_memory = gpu_info(device)
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    return {
        "name": name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "supervisor_pid": int(supervisor) if supervisor.isdigit() else None,
        "gpu": device,
        "gpu_name": gpu_name,
        "gpu_memory_mb": gpu_memory,
        "queues": sorted(queues),
        "gpu_class": class_of(queues),
        "ftqueue_version": version_of("ftqueue"),
        "torch_version": version_of("torch"),
        "transformers_version": version_of("transformers"),
        "refresh_seconds": float(get_settings().worker_refresh_seconds),
    }


class Roster(threading.Thread):
    """Keeps one worker's row fresh until stopped, then deletes it."""

    def __init__(self, name: str, queues: Sequence[str], *, interval: float | None = None) -> None:
        super().__init__(name="ftqueue-roster", daemon=True)
        self.row = describe(name, queues)
        if interval is not None:
            self.row["refresh_seconds"] = float(interval)
        self.interval = self.row["refresh_seconds"]
        self.stopping = threading.Event()
        self._registered = False
        self._beats = 0

    def run(self) -> None:
        failing: str | None = None
        while True:
            try:
                self.beat()
                if failing is not None:
                    log.warning("workers table: writing again")
                failing = None
            except Exception as exc:  # the database may be away: try again next time
                problem = first_line(exc)
                if problem != failing:  # one line when a failure starts, not one per pass
                    log.warning("workers table: %s (retrying every %.0fs)", problem, self.interval)
                failing = problem
            if self.stopping.wait(self.interval):
                return

    def beat(self) -> None:
        name, pid = self.row["name"], self.row["pid"]
        if not self._registered or not workers.refresh(name, pid=pid):
            workers.register(**self.row)
            self._registered = True
        if self._beats % FORGET_EVERY == 0:
            workers.forget_gone()
        self._beats += 1

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        try:
            workers.remove(self.row["name"], pid=self.row["pid"])
        except Exception as exc:  # the row ages out by itself
            log.warning("workers table: could not remove %s: %s", self.row["name"], exc)
