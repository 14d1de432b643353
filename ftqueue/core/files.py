"""Writing files so that a reader sees the old file, or the new one whole, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_UMASK_LOCK = threading.Lock()


def stat_or_none(path: Path) -> os.stat_result | None:
    """``os.stat``, or None where nothing is, or nothing can be (a name too long, a NUL byte)."""
    try:
        return path.stat()
    except (OSError, ValueError):
        return None


def is_dir(path: Path) -> bool:
    st = stat_or_none(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def current_umask() -> int:
    """The process umask (reading it means setting it, so briefly under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a plain ``mkdir`` would give a new directory."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` only when the block ends without error.

    The data is written to a temporary sibling, flushed to disk, given the permissions the
    umask allows (temporary files are private by default), and renamed over ``path``.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON, whole or not at all."""
    with atomic_write(path) as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path) as handle:
        handle.write(data)


def share_tree(root: Path) -> None:
    """Give ``root`` and everything under it the modes the umask allows.

    Some writers (safetensors among them) create private 0600 files; on a shared artifacts
    directory the other users of it could not read them.
    """
    files, dirs = file_mode(), dir_mode()
    root.chmod(dirs)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), dirs)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), files)
