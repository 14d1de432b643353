"""Unlabelled text to label: one column of a .csv, .jsonl or .parquet file, checked (torch-free).

The same checks run at submit time (so bad input is refused before anything is queued) and in
the job (so a file changed since then is noticed): the file exists, is not empty, is UTF-8
where it is text, has the column, and every row of it holds non-blank text. Rows are numbered
from 1 in messages, counting data rows (the header is not a row).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from ftqueue.errors import DatasetError, first_line

INPUT_EXTENSIONS = (".csv", ".jsonl", ".parquet")
#: Files above this are refused before they are read.
MAX_INPUT_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


def _fail(message: str, param: str = "--input") -> DatasetError:
    return DatasetError(message, param=param)


def check_unlabelled_file(path: Path) -> None:
    """Refuse a path before reading it: missing, a directory, unknown kind, empty, too big."""
    if not path.exists():
        raise _fail(f"input file {path} does not exist: give a .csv, .jsonl or .parquet file")
    if path.is_dir():
        raise _fail(f"input {path} is a directory: give a .csv, .jsonl or .parquet file in it")
    if path.suffix.lower() not in INPUT_EXTENSIONS:
        raise _fail(
            f"input file {path} has unsupported extension {path.suffix!r}: "
            f"use one of {', '.join(INPUT_EXTENSIONS)}"
        )
    size = path.stat().st_size
    if size == 0:
        raise _fail(f"input file {path} is empty: it needs a header (or keys) and rows")
    if size > MAX_INPUT_BYTES:
        raise _fail(
            f"input file {path} is {size / 1024**3:.1f} GiB, over the "
            f"{MAX_INPUT_BYTES // 1024**3} GiB limit: split it into several jobs"
        )


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes: ties a job to the input it was submitted with."""
    check_unlabelled_file(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _fail(
            f"input file {path} is not UTF-8 text (bad byte at line {line}): re-save it as UTF-8"
        ) from None


def _column(path: Path, columns: list[str], column: str) -> None:
    if column not in columns:
        raise _fail(
            f"input file {path} has no column {column!r} (columns: "
            f"{', '.join(columns) or 'none'}): name the right one with --text-column",
            param="--text-column",
        )


def _table(path: Path, data: bytes, column: str) -> Any:
    """The text column as a pandas Series (CSV cells are read as text, never as numbers)."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(io.BytesIO(data)).names)
            _column(path, columns, column)
            return pd.read_parquet(io.BytesIO(data), columns=[column])[column]
        text = _decode(path, data)
        if not text.strip():
            raise _fail(f"input file {path} has no rows (only blank space)")
        if suffix == ".csv":
            header = pd.read_csv(io.StringIO(text), nrows=0)
            _column(path, [str(c) for c in header.columns], column)
            frame = pd.read_csv(
                io.StringIO(text), usecols=[column], dtype=str, keep_default_na=False
            )
            return frame[column]
        frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        _column(path, [str(c) for c in frame.columns], column)
        return frame[column]
    except DatasetError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        raise _fail(f"cannot parse {path} as {suffix[1:]}: {first_line(exc)}") from None


def read_texts(value: str, column: str, *, sha256: str | None = None) -> list[str]:
    """The checked texts of ``column``, in file order.

    With ``sha256``, the file must still have the content it had when the job was submitted.
    """
    path = Path(value).expanduser()
    check_unlabelled_file(path)
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise _fail(
            f"input file {path} has changed since the job was submitted: submit the job again "
            "to label the file as it is now"
        )
    cells = list(_table(path, data, column))
    if not cells:
        raise _fail(f"input file {path} has no rows: it needs at least one text to label")
    for row, cell in enumerate(cells, start=1):
        if not isinstance(cell, str) or not cell.strip():
            raise _fail(
                f"input file {path} row {row}: {column!r} is empty or not text ({cell!r}); "
                "fill or drop the row",
                param="--text-column",
            )
    return [str(c) for c in cells]
