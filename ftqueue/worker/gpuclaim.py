"""A GPU is one worker's on its host, whatever the workers' names.

Worker names keep two live workers from sharing a name, not a GPU: `ftqueue worker --name a`
and `--name b` could both be given GPU 0. Each `ftqueue worker` now claims its GPUs before
it starts anything: an advisory lock (``flock``) on one file per GPU in a host-wide directory
(FTQUEUE_GPU_LOCK_DIR, default the system's temporary directory), held for the supervisor's
life. The kernel drops the lock when the process ends, however it ends, so a claim never
outlives its worker and there is nothing to clean up. A second worker asking for a claimed GPU
is refused in one line (exit 2) or, asked to, waits for it.

A GPU is keyed by its UUID where nvidia-smi can tell it, so ``0`` and ``GPU-8c3...`` are the
same claim; elsewhere by the index or UUID the worker was given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ftqueue.errors import FtqueueError, GpuTaken
from ftqueue.settings import get_settings

log = logging.getLogger(__name__)

#: The lock files this process holds, open for its life: closing one would drop its claim.
_HELD: dict[str, int] = {}


def lock_dir() -> Path:
    return get_settings().gpu_lock_dir or Path(tempfile.gettempdir())


def nvidia_smi(*fields: str) -> list[list[str]]:
    """``nvidia-smi --query-gpu=FIELDS`` as rows of stripped values; none where it cannot
    tell (no nvidia-smi, no driver, a hang of more than 20 s)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = ([v.strip() for v in line.split(",", len(fields) - 1)] for line in out.splitlines())
    return [row for row in rows if len(row) == len(fields) and all(row)]


def _uuids() -> dict[str, str]:
    """nvidia-smi's GPU index -> UUID, or nothing where it cannot tell."""
    return {index: uuid for index, uuid in nvidia_smi("index", "uuid")}


def key_of(gpu: str, uuids: dict[str, str]) -> str:
    """The claim's name: the GPU's UUID where known, else what the worker was given."""
    key = uuids.get(gpu, gpu)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:100]


def path_of(key: str) -> Path:
    return lock_dir() / f"ftqueue-gpu-{key}.lock"


def _open(path: Path, gpu: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise FtqueueError(
            f"cannot claim GPU {gpu}: {exc.strerror} ({path}): set FTQUEUE_GPU_LOCK_DIR to a "
            "directory every worker on this host can write"
        ) from None
    with contextlib.suppress(OSError):  # any user's worker may claim it next (not the umask's)
        os.fchmod(fd, 0o666)
    return fd


def _holder(fd: int) -> str:
    """Who holds the claim, as its holder wrote it: "pid 1234, gpu0@host, since 12:00:00"."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw)
        return f"pid {int(info['pid'])}, {info['worker']}, since {info['since']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "a process that left no name"


def _write_holder(fd: int, worker: str) -> None:
    since = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    record = {"pid": os.getpid(), "worker": worker, "host": socket.gethostname(), "since": since}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def claim(
    gpus: Sequence[tuple[str, str]],
    *,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Claim each ``(gpu, worker name)`` for this process's life; GpuTaken if one is held.

    ``wait``: wait for a claimed GPU instead, calling ``on_wait`` with a line saying which.
    The GPUs claimed before a refusal are released again.
    """
    uuids = _uuids() if gpus else {}
    taken: list[str] = []
    try:
        for gpu, worker in gpus:
            key = key_of(gpu, uuids)
            if key in _HELD:
                continue
            path = path_of(key)
            fd = _open(path, gpu)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    os.close(fd)
                    raise GpuTaken(
                        f"GPU {gpu} is already claimed by another worker on this host "
                        f"({holder}): stop that worker, give this one other GPUs with --gpus, "
                        "or add --wait-for-gpu to wait for it",
                        param="--gpus",
                    ) from None
                if on_wait is not None:
                    on_wait(f"waiting for GPU {gpu}, claimed by another worker ({holder})")
                fcntl.flock(fd, fcntl.LOCK_EX)
            _write_holder(fd, worker)
            _HELD[key] = fd
            taken.append(key)
            log.info("claimed GPU %s (%s)", gpu, path)
    except BaseException:
        for key in taken:
            release(key)
        raise


def release(key: str) -> None:
    fd = _HELD.pop(key, None)
    if fd is not None:
        os.close(fd)  # drops the lock
