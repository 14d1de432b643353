"""Atomic publication of artifact directories: write into a staging sibling, then rename."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Re-exported: the adapter files' names and their check have always been imported from here.
from ftqueue.artifacts.adapter_files import ADAPTER_CONFIG as ADAPTER_CONFIG
from ftqueue.artifacts.adapter_files import ADAPTER_METADATA as ADAPTER_METADATA
from ftqueue.artifacts.adapter_files import ADAPTER_WEIGHTS as ADAPTER_WEIGHTS
from ftqueue.artifacts.adapter_files import PICKLE_SUFFIXES as PICKLE_SUFFIXES
from ftqueue.artifacts.adapter_files import check_adapter_dir as check_adapter_dir
from ftqueue.core.files import dir_mode
from ftqueue.errors import AdapterError, FtqueueError, SpecError, first_line

STAGING_PREFIX = ".staging-"
ASIDE_PREFIX = ".replaced-"
#: A stray staging or moved-aside directory of a job's directory (``job-<id>``).
_STRAY_JOB = re.compile(r"^\.(?:staging|replaced)-job-(\d+)-")


def new_staging_dir(parent: Path, name: str) -> Path:
    """Create and return a unique, empty ``.staging-<name>-*`` directory inside ``parent``.

    mkdtemp makes it private; it gets the mode the umask allows instead, so that a shared
    artifacts directory stays readable by the other users of it.
    """
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=parent))
    staging.chmod(dir_mode())
    return staging


@contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A new staging directory for ``final``, removed on the way out unless it was published."""
    staging = new_staging_dir(final.parent, final.name)
    try:
        yield staging
    finally:
        discard(staging)


def discard(path: Path) -> None:
    """Remove a staging or moved-aside directory, if it is still there."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_staging(final: Path) -> list[Path]:
    """Delete staging directories left by earlier attempts of a job this attempt now holds."""
    root = final.parent
    stale = sorted(root.glob(f"{STAGING_PREFIX}{final.name}-*")) if root.is_dir() else []
    for path in stale:
        discard(path)
    return stale


def _fsync_tree(root: Path) -> None:
    # Without this a power cut after the rename can leave a published directory of empty files.
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(staging: Path, final: Path) -> Path:
    """Rename a complete ``staging`` directory to ``final``, replacing any previous one.

    Both must be on the same filesystem (a staging sibling from ``new_staging_dir`` is). A
    reader sees either the old directory, nothing (briefly, while one is replaced), or the new
    one, never a mix.
    """
    if not staging.is_dir():
        raise FtqueueError(f"cannot publish {staging}: it is not a directory (already published?)")
    final.parent.mkdir(parents=True, exist_ok=True)
    if os.stat(staging).st_dev != os.stat(final.parent).st_dev:
        raise FtqueueError(
            f"cannot publish {staging} to {final}: they are on different filesystems; "
            "create the staging directory with new_staging_dir(final.parent, ...)"
        )
    _fsync_tree(staging)
    aside: Path | None = None
    if final.exists() or final.is_symlink():
        aside = final.parent / f"{ASIDE_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, aside)
    try:
        os.rename(staging, final)
    except OSError:
        if aside is not None:
            os.rename(aside, final)  # put the old one back rather than leave nothing
        raise
    _fsync_dir(final.parent)
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    return final


def find_stray_staging(root: Path, *, older_than: float = 0.0) -> list[Path]:
    """Staging and moved-aside directories under ``root`` left by crashed or killed writers.

    ``older_than`` (seconds since last modification) spares the staging dirs of running jobs.
    """
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        for d in list(dirnames):
            if d.startswith((STAGING_PREFIX, ASIDE_PREFIX)):
                dirnames.remove(d)  # do not descend into a stray
                path = Path(dirpath) / d
                if path.stat().st_mtime <= cutoff:
                    found.append(path)
    return sorted(found)


def stray_staging_by_job(root: Path) -> dict[int, list[Path]]:
    """The stray directories under ``root`` (see find_stray_staging) by the job they were for."""
    strays: dict[int, list[Path]] = {}
    for path in find_stray_staging(root):
        match = _STRAY_JOB.match(path.name)
        if match:
            strays.setdefault(int(match.group(1)), []).append(path)
    return strays


#: What a predict job publishes; the trainer writes them, the kind names them.
PREDICTIONS_FILES = ("predictions.parquet", "predictions.csv")


def check_exportable(metadata: dict[str, Any], job_id: int) -> None:
    """Refuse, in one line, an adapter whose head no stock transformers class computes.

    Adapters of format 2 record the stock class (or None); older ones only their pooling.
    """
    pooling = metadata.get("pooling")
    if pooling == "pooler" and (int(metadata.get("format", 1)) < 2 or metadata.get("stock_class")):
        return
    if pooling == "pooler":
        why = f"its {metadata.get('model_type')} model's stock head is not the pooler head"
    else:
        why = f"it was trained with --pooling {pooling}, which no stock transformers class computes"
    raise AdapterError(
        f"job {job_id}'s adapter cannot be exported as a standard model: {why}; train with "
        "--pooling pooler (the default) on a BERT-style model to export one, or use this one "
        f"as it is with `ftqueue predict {job_id} TEXT` or `ftqueue submit predict "
        f"--adapter-job {job_id}`"
    )


def check_pairs(metadata: dict[str, Any], pairs: bool, job_id: int | None) -> None:
    """Refuse, in one line, single texts for an adapter trained on sentence pairs, or pairs
    for one trained on single texts."""
    trained = bool(metadata.get("text_pair"))
    if trained == pairs:
        return
    which = f"job {job_id}'s adapter" if job_id is not None else "the adapter"
    if trained:
        raise AdapterError(
            f"{which} was trained on sentence pairs: name the column of each text's second "
            "text with --text-pair-column",
            param="--text-pair-column",
        )
    raise AdapterError(
        f"{which} was trained on single texts, not pairs: leave --text-pair-column out",
        param="--text-pair-column",
    )


def check_new_dir(path: Path, *, param: str = "DIRECTORY") -> None:
    """A directory to write a whole new output into: absent, or empty. Never overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SpecError(
            f"{path} exists and is not an empty directory: give a new directory (an export "
            "never overwrites anything)",
            param=param,
        )


def check_can_create(path: Path, *, param: str = "DIRECTORY") -> None:
    """Refuse, in one line, a new directory ``path`` where its nearest existing ancestor is
    not a directory this process may write into (permissions, a read-only filesystem)."""
    existing = path.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"cannot create {path}: {existing} is not a directory", param=param)
    # access(2) also says no for a read-only filesystem and an immutable directory, even to root.
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"cannot create {path}: {existing} is not writable by this user (or is on a "
            "read-only filesystem); give a directory you can write to",
            param=param,
        )


#: renameat2's flag: fail with EEXIST rather than replace what is at the destination.
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` only if nothing is at ``dst`` (FileExistsError otherwise).

    False where the system cannot (no renameat2: not Linux, an old libc or kernel, or a
    filesystem without the flag); the caller then claims ``dst`` another way.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]  # fmt: skip
    if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(path) and not path.is_symlink() else None


def _rename_new(staging: Path, final: Path, given: tuple[int, int] | None) -> None:
    """Rename ``staging`` to ``final`` without replacing anything someone else put there.

    ``given`` identifies the empty directory that was at ``final`` when the export began:
    rename(2) replaces a directory only while it is empty, so that one is taken as it is.
    Elsewhere renameat2(RENAME_NOREPLACE) claims the name atomically; without it, ``mkdir``
    claims it (it fails if anything is there) and the rename replaces that empty directory.
    """
    if given is not None and _dir_id(final) == given:
        os.rename(staging, final)
        return
    if _renameat2_noreplace(staging, final):
        return
    os.mkdir(final)
    try:
        os.rename(staging, final)
    except OSError:
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()  # this export's own claim, still empty
        raise


def publish_new_dir(
    final: Path, write: Callable[[Path], None], *, param: str = "DIRECTORY"
) -> Path:
    """Make the new directory ``final`` whole: ``write(staging)`` fills a fresh sibling, which
    is renamed to ``final`` only if nothing else is there by then.

    Nothing but this call's own staging directory is ever deleted or replaced: where another
    writer (a second export) created ``final`` meanwhile, it keeps it and this raises
    SpecError. A reader sees nothing at ``final``, or the whole new directory.
    """
    final = final.absolute()
    check_new_dir(final, param=param)
    check_can_create(final, param=param)
    given = _dir_id(final)
    try:
        staging = new_staging_dir(final.parent, final.name)
    except OSError as exc:
        raise SpecError(
            f"cannot create {final}: {first_line(exc)}; give a directory you can write to",
            param=param,
        ) from None
    try:
        try:
            write(staging)
            _fsync_tree(staging)
        except OSError as exc:
            raise FtqueueError(f"could not write {final}: {first_line(exc)}") from None
        try:
            _rename_new(staging, final, given)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FtqueueError(f"could not create {final}: {first_line(exc)}") from None
            raise SpecError(
                f"{final} was created by someone else (another export?) while this one was "
                "writing: it was left as it is and nothing was written; give a new directory",
                param=param,
            ) from None
        _fsync_dir(final.parent)
        return final
    finally:
        discard(staging)
