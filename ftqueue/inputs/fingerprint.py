"""Content fingerprints of local files, each version of a file hashed once per process.

A file's digest is the sha256 of its bytes. Hashing a large data file or a model's weights
for every job of a grid, or for every job a worker runs on them, would cost more than setting
the job up, so a digest is remembered under the file's identity as ``stat`` reports it:
device, inode, size, modification and change time in nanoseconds. An edit in place changes the
size or the times and is hashed again; a ``touch`` is hashed again too and gives the same
digest, so it is still the same job. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

#: Digests remembered (one per file version); a worker sees a handful of files at most.
MEMO_SIZE = 4096
#: Characters of hex kept in a combined fingerprint: 128 bits, far past accidental collisions.
FINGERPRINT_CHARS = 32

_memo: OrderedDict[tuple[object, ...], str] = OrderedDict()
_lock = threading.Lock()


def _identity(path: Path, st: os.stat_result) -> tuple[object, ...]:
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: Path) -> str:
    """The sha256 (hex) of a file's bytes; OSError when it cannot be read."""
    before = os.stat(path)
    key = _identity(path, before)
    with _lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    # A file written to while it was read gives a digest of no version in particular: use it
    # for this answer (it will not match the next read) but do not remember it.
    if _identity(path, os.stat(path)) == key:
        with _lock:
            _memo[key] = digest
            while len(_memo) > MEMO_SIZE:
                _memo.popitem(last=False)
    return digest


def bytes_digest(data: bytes) -> str:
    """The sha256 (hex) of bytes already read: the same value ``file_digest`` gives the file."""
    return hashlib.sha256(data).hexdigest()


def combine(digests: Mapping[str, str]) -> str:
    """One fingerprint for several named digests (file name or split -> digest)."""
    text = json.dumps(dict(digests), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def forget() -> None:
    """Drop every remembered digest (tests)."""
    with _lock:
        _memo.clear()
