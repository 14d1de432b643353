"""Artifacts on an object store (``s3://bucket/prefix``): published whole, read only when whole.

An object store has no rename, so a directory is published in three steps: its files are
uploaded under a temporary prefix (``.upload-<name>-<token>/``) beside the final one, a
manifest (each file's path, size and sha256) is written last there, and the objects are then
copied server-side to the final prefix, the manifest last again. A reader trusts a prefix only
when its manifest is there and every file it lists matches it: an upload cut short anywhere
leaves no manifest, or one whose files do not match, never a half output.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ftqueue.errors import FtqueueError, first_line

MANIFEST = "ftqueue-manifest.json"
UPLOAD_PREFIX = ".upload-"
#: A temporary upload prefix of a job's directory (``job-<id>``).
_UPLOAD_JOB = re.compile(r"^\.upload-job-(\d+)-")
_PUBLISHED = re.compile(r"^job-\d+$")


def is_url(root: str) -> bool:
    """Whether an artifacts root is an object store URL rather than a local directory."""
    return "://" in root


@dataclass(frozen=True)
class ObjectRoot:
    """An artifacts root on an object store, and how to reach it."""

    url: str
    endpoint_url: str | None = None

    def filesystem(self) -> Any:
        """A new fsspec filesystem for the root (never a cached one: it may cross a fork)."""
        import fsspec

        protocol = self.url.split("://", 1)[0]
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        if self.endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        return fsspec.filesystem(protocol, **options)

    def key(self, relative: str) -> str:
        """The filesystem path (bucket/prefix/relative) of a location relative to the root."""
        base = self.url.split("://", 1)[1].strip("/")
        return f"{base}/{relative.strip('/')}" if relative else base

    def location(self, relative: str) -> str:
        """The URL of a location relative to the root, as shown to people."""
        return f"{self.url.rstrip('/')}/{relative.strip('/')}"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(directory: Path) -> list[tuple[str, Path]]:
    """The regular files under ``directory``, by POSIX path relative to it, in order."""
    found = []
    for dirpath, _, filenames in os.walk(directory):
        for name in filenames:
            path = Path(dirpath, name)
            found.append((path.relative_to(directory).as_posix(), path))
    return sorted(found)


def manifest_of(directory: Path) -> dict[str, Any]:
    """The manifest of a local directory: each file's path, size and sha256."""
    return {
        "format": 1,
        "files": [
            {"path": rel, "size": path.stat().st_size, "sha256": _sha256(path)}
            for rel, path in _files(directory)
            if rel != MANIFEST
        ],
    }


@dataclass(frozen=True)
class Upload:
    """A directory uploaded under a temporary prefix, its manifest written, not yet published."""

    root: ObjectRoot
    relative: str
    temp: str
    files: tuple[str, ...]


@functools.cache
def store_errors() -> tuple[type[BaseException], ...]:
    """What a store call raises when the store is away or refuses: OSError (s3fs's
    translations), and botocore's own errors that s3fs passes through as they are (no
    credentials, an endpoint that does not answer)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 support installed: fsspec's own filesystems raise OSError
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


def _store_error(root: ObjectRoot, relative: str, exc: BaseException, doing: str) -> FtqueueError:
    return FtqueueError(
        f"could not {doing} {root.location(relative)}: {first_line(exc)}; check "
        "FTQUEUE_ARTIFACTS_DIR, FTQUEUE_S3_ENDPOINT_URL and the AWS credentials"
    )


def upload(
    root: ObjectRoot,
    directory: Path,
    relative: str,
    *,
    after_file: Callable[[int], None] | None = None,
) -> Upload:
    """Upload the local ``directory`` under a temporary prefix beside ``relative``, its
    manifest last; ``publish`` then puts it in place. ``after_file`` is called with the count
    of files uploaded so far."""
    final = PurePosixPath(relative)
    manifest = manifest_of(directory)
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    temp = root.key(str(final.parent / f"{UPLOAD_PREFIX}{final.name}-{uuid.uuid4().hex[:12]}"))
    fs = root.filesystem()
    try:
        for count, entry in enumerate(manifest["files"], start=1):
            fs.put_file(str(directory / entry["path"]), f"{temp}/{entry['path']}")
            if after_file is not None:
                after_file(count)
        fs.pipe_file(f"{temp}/{MANIFEST}", body)
    except store_errors() as exc:
        raise _store_error(root, relative, exc, "upload to") from None
    return Upload(root, relative, temp, tuple(e["path"] for e in manifest["files"]))


def publish(up: Upload) -> str:
    """Copy an upload to its final prefix (server-side), replacing what was there, the
    manifest last; then drop the temporary prefix. Returns the location relative to the root."""
    fs = up.root.filesystem()
    target = up.root.key(up.relative)
    try:
        # What was published before stops being trusted first (its manifest goes), then goes.
        if fs.exists(f"{target}/{MANIFEST}"):
            fs.rm_file(f"{target}/{MANIFEST}")
        if fs.exists(target):
            fs.rm(target, recursive=True)
        for name in (*up.files, MANIFEST):
            fs.copy(f"{up.temp}/{name}", f"{target}/{name}")
        fs.rm(up.temp, recursive=True)
    except store_errors() as exc:
        raise _store_error(up.root, up.relative, exc, "publish") from None
    return up.relative


def discard_upload(up: Upload) -> None:
    """Delete an upload that was not published (the attempt lost the job, or failed); what
    this cannot delete, the reaper does later."""
    with contextlib.suppress(FtqueueError):
        remove_uploads(up.root, [up.temp])


def read_manifest(root: ObjectRoot, relative: str, fs: Any = None) -> dict[str, Any] | None:
    """The manifest at ``relative``, when it is whole and every file it lists is there with
    its size; None otherwise (nothing published there, or an upload cut short)."""
    fs = fs or root.filesystem()
    prefix = root.key(relative)
    try:
        manifest = json.loads(fs.cat_file(f"{prefix}/{MANIFEST}"))
        sizes = {
            PurePosixPath(path).relative_to(prefix).as_posix(): info.get("size")
            for path, info in fs.find(prefix, detail=True).items()
        }
    except (FileNotFoundError, ValueError):
        return None
    except store_errors() as exc:
        raise _store_error(root, relative, exc, "read") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(e, dict) and sizes.get(str(e.get("path"))) == e.get("size") for e in files
    ):
        return None
    return manifest


def download_dir(root: ObjectRoot, relative: str, directory: Path) -> dict[str, Any]:
    """Download the output at ``relative`` into the empty local ``directory``, each file
    checked against the manifest, the manifest last; FtqueueError when there is no whole
    output there."""
    fs = root.filesystem()
    where = root.location(relative)
    try:
        manifest = read_manifest(root, relative, fs)
        if manifest is None:
            raise FtqueueError(
                f"{where} holds no complete output (no manifest, or files that do not match "
                "it: an upload that did not finish); run the job again"
            )
        prefix = root.key(relative)
        for entry in manifest["files"]:
            local = directory / entry["path"]
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{prefix}/{entry['path']}", str(local))
            if _sha256(local) != entry["sha256"]:
                raise FtqueueError(
                    f"{where}/{entry['path']} does not match its manifest (changed since it was "
                    "published?); run the job again"
                )
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    except store_errors() as exc:
        raise _store_error(root, relative, exc, "read") from None
    return manifest


def _walk_uploads(fs: Any, prefix: str) -> Iterator[str]:
    """The temporary upload prefixes under ``prefix`` (not descending into them)."""
    try:
        entries = fs.ls(prefix, detail=True)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.get("type") != "directory":
            continue
        name = PurePosixPath(entry["name"]).name
        if name.startswith(UPLOAD_PREFIX):
            yield entry["name"]
        elif not _PUBLISHED.match(name):  # a job's published directory holds no uploads
            yield from _walk_uploads(fs, entry["name"])


def uploads_by_job(root: ObjectRoot) -> dict[int, list[str]]:
    """The temporary upload prefixes under ``root``, by the job they were for."""
    fs = root.filesystem()
    found: dict[int, list[str]] = {}
    try:
        for key in _walk_uploads(fs, root.key("")):
            match = _UPLOAD_JOB.match(PurePosixPath(key).name)
            if match:
                found.setdefault(int(match.group(1)), []).append(key)
    except store_errors() as exc:
        raise _store_error(root, "", exc, "list the uploads in") from None
    return found


def remove_uploads(root: ObjectRoot, keys: list[str]) -> None:
    """Delete temporary upload prefixes (by their keys, from ``uploads_by_job``)."""
    fs = root.filesystem()
    try:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(key, recursive=True)
    except store_errors() as exc:
        raise _store_error(root, "", exc, "remove the stale uploads in") from None
