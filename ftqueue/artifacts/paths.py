"""Where a job's files go: always inside the artifacts directory, never through a symlink."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ftqueue.errors import SpecError


def check_output_dir(value: str, artifacts_dir: Path, *, flag: str = "--output-dir") -> str:
    """A directory under ``artifacts_dir``, as a relative POSIX path; SpecError otherwise.

    Absolute paths are accepted when they lie inside the artifacts directory. Components that
    exist must not be symlinks: a link could point a job's output anywhere on the machine.
    """
    if not value or any(c in value for c in "\x00\n\r"):
        raise SpecError(f"{flag} must be a non-empty path without control characters", param=flag)
    root = artifacts_dir.expanduser().absolute()
    path = Path(value).expanduser()
    if path.is_absolute():
        try:
            relative = PurePosixPath(path.absolute().relative_to(root).as_posix())
        except ValueError:
            raise SpecError(
                f"{flag} {value!r} is outside the artifacts directory {root}: give a path "
                "inside it, or a relative one (it is taken relative to it)",
                param=flag,
            ) from None
    else:
        relative = PurePosixPath(path.as_posix())
    if ".." in relative.parts or not relative.parts or relative.parts == (".",):
        raise SpecError(
            f"{flag} {value!r} leaves or names the artifacts directory itself: give a "
            "sub-directory such as experiments/rt",
            param=flag,
        )
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise SpecError(
                f"{flag} {value!r} goes through the symlink {current}: give a real directory "
                "inside the artifacts directory",
                param=flag,
            )
    return relative.as_posix()


def job_dir(artifacts_dir: Path, job_id: int, output_dir: str | None, default: str) -> Path:
    """The published directory of a job, re-checked against symlinks made since submit.

    ``default`` is the job kind's own directory (``adapters``, ``predictions``), used when the
    job was submitted without ``--output-dir``.
    """
    relative = check_output_dir(output_dir or default, artifacts_dir)
    return artifacts_dir / relative / f"job-{job_id}"
