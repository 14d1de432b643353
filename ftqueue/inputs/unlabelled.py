"""Unlabelled text to label: one column of a .csv, .jsonl or .parquet file, checked (torch-free).

The same checks run at submit time (so bad input is refused before anything is queued) and in
the job (so a file changed since then is noticed): the file exists, is not empty, is UTF-8
where it is text, has the column, and every row of it holds non-blank text. Rows are numbered
from 1 in messages, counting data rows (the header is not a row).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ftqueue.core.text import clip, quote
from ftqueue.errors import DatasetError
from ftqueue.inputs import tables

INPUT_EXTENSIONS = (".csv", ".jsonl", ".parquet")
INPUT_FILE = tables.FileRole(
    noun="input file",
    directory_noun="input",
    param="--input",
    extensions=INPUT_EXTENSIONS,
    missing="give a .csv, .jsonl or .parquet file",
    directory="give a .csv, .jsonl or .parquet file in it",
    empty="it needs a header (or keys) and rows",
    too_big="split it into several jobs",
)
_CHUNK = 1 << 20
MAX_ROW_CHARS = tables.MAX_ROW_CHARS


def _fail(message: str, param: str = "--input") -> DatasetError:
    return DatasetError(message, param=param)


def check_unlabelled_file(path: Path) -> None:
    """Refuse a path before reading it: missing, a directory, unknown kind, empty, too big."""
    tables.check_file(path, INPUT_FILE)


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes: ties a job to the input it was submitted with."""
    check_unlabelled_file(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _column(path: Path, columns: list[str], column: str, option: str = "--text-column") -> None:
    if column not in columns:
        raise _fail(
            f"input file {path} has no column {quote(column, 60)} (columns: "
            f"{clip(', '.join(columns) or 'none', 120)}): name the right one with {option}",
            param=option,
        )


def read_texts(
    value: str, column: str, *, sha256: str | None = None, pair_column: str | None = None
) -> list[str]:
    """The checked texts of ``column``, in file order (``pair_column`` is checked to exist).

    With ``sha256``, the file must still have the content it had when the job was submitted.
    """
    return read_inputs(value, column, sha256=sha256, pair_column=pair_column)[0]


def read_inputs(
    value: str, column: str, *, sha256: str | None = None, pair_column: str | None = None
) -> tuple[list[str], list[str] | None]:
    """The checked texts of ``column`` and, for sentence pairs, of ``pair_column``."""
    path = Path(value).expanduser()
    check_unlabelled_file(path)
    data = tables.read_bytes(path, INPUT_FILE)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise _fail(
            f"input file {path} has changed since the job was submitted: submit the job again "
            "to label the file as it is now"
        )

    def check(columns: list[str]) -> None:
        _column(path, columns, column)
        if pair_column is not None:
            _column(path, columns, pair_column, "--text-pair-column")

    cells = list(tables.read_table(path, data, INPUT_FILE, column=column, check_columns=check))
    if not cells:
        raise _fail(f"input file {path} has no rows: it needs at least one text to label")
    texts = _texts(path, column, cells, "--text-column")
    if pair_column is None:
        return texts, None
    # Read a second time for the second column: pair inputs only, and files a job labels.
    pairs = list(tables.read_table(path, data, INPUT_FILE, column=pair_column))
    return texts, _texts(path, pair_column, pairs, "--text-pair-column")


def _texts(path: Path, column: str, cells: list[object], option: str) -> list[str]:
    for row, cell in enumerate(cells, start=1):
        if not isinstance(cell, str) or not cell.strip():
            raise _fail(
                f"input file {path} row {row}: {quote(column, 60)} is empty or not text "
                f"({quote(cell, 60)}); fill or drop the row",
                param=option,
            )
        tables.check_row_length(cell, row, f"input file {path}")
    return [str(c) for c in cells]
