"""Atomic publication of artifact directories: write into a staging sibling, then rename."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftqueue.core.files import dir_mode
from ftqueue.errors import AdapterError, FtqueueError, SpecError

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


ADAPTER_METADATA = "ftqueue_adapter.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: What a predict job publishes; the trainer writes them, the kind names them.
PREDICTIONS_FILES = ("predictions.parquet", "predictions.csv")
#: Weight formats that unpickle (and so can run code) on load; never read.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_METADATA_KEYS = ("model", "num_labels", "label_names", "pooling", "max_length")


def check_adapter_dir(path: Path) -> dict[str, Any]:
    """Refuse an adapter directory that is missing, incomplete or holds pickle weights.

    Returns its metadata. Torch-free, so the CLI can check an adapter at submit time.
    """
    if not path.is_dir():
        raise AdapterError(
            f"adapter directory {path} does not exist: give the id of a training job that "
            "succeeded",
            param="--adapter-job",
        )
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(
            f"adapter {path} contains pickle weights ({', '.join(pickles)}), which can run code "
            "when loaded: only safetensors adapters are accepted; re-save it with "
            "save_pretrained(..., safe_serialization=True)",
            param="--adapter-job",
        )
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_METADATA):
        if not (path / name).is_file():
            raise AdapterError(
                f"adapter {path} is incomplete: {name} is missing (was it written by ftqueue "
                "and published?); "
                "re-run the job that trained it",
                param="--adapter-job",
            )
    try:
        metadata = json.loads((path / ADAPTER_METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(
            f"adapter {path}: {ADAPTER_METADATA} is not valid JSON ({exc}); "
            "re-run the job that trained it",
            param="--adapter-job",
        ) from None
    missing = [k for k in _METADATA_KEYS if not isinstance(metadata, dict) or k not in metadata]
    if missing:
        raise AdapterError(
            f"adapter {path}: {ADAPTER_METADATA} lacks {', '.join(missing)}; "
            "re-run the job that trained it",
            param="--adapter-job",
        )
    return dict(metadata)


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


def check_new_dir(path: Path, *, param: str = "DIRECTORY") -> None:
    """A directory to write a whole new output into: absent, or empty. Never overwritten."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SpecError(
            f"{path} exists and is not an empty directory: give a new directory (an export "
            "never overwrites anything)",
            param=param,
        )
