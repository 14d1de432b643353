"""Tables from .csv, .jsonl, .json and .parquet files: checked before reading, decoded strictly."""

from __future__ import annotations

import io
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftqueue.core.files import stat_or_none
from ftqueue.core.text import clip, quote
from ftqueue.errors import DatasetError, first_line
from ftqueue.settings import Settings, get_settings

#: The defaults of FTQUEUE_MAX_INPUT_BYTES (files above it are refused before they are read;
#: a text-classification set is far less) and FTQUEUE_MAX_ROW_CHARS (see settings.py).
MAX_FILE_BYTES = Settings.max_input_bytes
MAX_ROW_CHARS = Settings.max_row_chars


@dataclass(frozen=True)
class FileRole:
    """What a table file is to a job, as its messages name it (and what fixes each refusal)."""

    #: How messages name the file ("dataset file"), and the path itself when it is a directory.
    noun: str
    directory_noun: str
    param: str
    extensions: tuple[str, ...]
    #: What to do instead, after "does not exist: ", "is a directory: ", "is empty: " and
    #: "over the N GiB limit: ".
    missing: str
    directory: str
    empty: str
    too_big: str
    #: Whether messages say "not UTF-8" of the noun and the path, or of the path alone.
    noun_when_undecodable: bool = True
    #: Long paths and parser errors are cut short in messages.
    clipped: bool = False

    def where(self, path: Path) -> str:
        return clip(path) if self.clipped else str(path)

    def error(self, message: str, param: str | None = None) -> DatasetError:
        return DatasetError(message, param=param or self.param)


def check_file(path: Path, role: FileRole) -> None:
    """Refuse a file before reading it: missing, a directory, unknown kind, empty, too big."""
    where = role.where(path)
    st = stat_or_none(path)
    if st is None:
        raise role.error(f"{role.noun} {where} does not exist: {role.missing}")
    if stat.S_ISDIR(st.st_mode):
        raise role.error(f"{role.directory_noun} {where} is a directory: {role.directory}")
    if path.suffix.lower() not in role.extensions:
        raise role.error(
            f"{role.noun} {where} has unsupported extension {quote(path.suffix)}: "
            f"use one of {', '.join(role.extensions)}"
        )
    size = st.st_size
    if size == 0:
        raise role.error(f"{role.noun} {where} is empty: {role.empty}")
    limit = get_settings().max_input_bytes
    if size > limit:
        raise role.error(
            f"{role.noun} {where} is {_size(size)}, over the {_size(limit)} limit "
            f"(FTQUEUE_MAX_INPUT_BYTES): {role.too_big}"
        )


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n:,} bytes"


def check_row_length(text: str, row: int, where: str) -> None:
    """Refuse a row's text past FTQUEUE_MAX_ROW_CHARS; ``where`` names the file in the message."""
    limit = get_settings().max_row_chars
    if len(text) > limit:
        raise DatasetError(
            f"{where} row {row}: {len(text):,} characters of text, over the {limit:,} a row "
            "may hold (FTQUEUE_MAX_ROW_CHARS): shorten or split the text",
            param="--text-column",
        )


def read_bytes(path: Path, role: FileRole) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise role.error(f"cannot read {role.where(path)}: {exc.strerror}") from None


def decode(data: bytes, path: Path, role: FileRole) -> str:
    """The file's text; a byte that is not UTF-8 is refused with its line number."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        named = f"{role.noun} {role.where(path)}" if role.noun_when_undecodable else clip(path)
        raise role.error(
            f"{named} is not UTF-8 text (bad byte at line {line}): re-save it as UTF-8"
        ) from None


def read_table(
    path: Path,
    data: bytes,
    role: FileRole,
    *,
    column: str | None = None,
    check_columns: Callable[[list[str]], None] | None = None,
) -> Any:
    """The file's ``data`` (its bytes, as checked and fingerprinted) as a pandas DataFrame.

    With ``column``, only that column, as a Series of text (CSV cells are never read as
    numbers), after ``check_columns`` has seen the names of the file's columns.
    """
    import pandas as pd

    suffix = path.suffix.lower()

    def only(columns: list[str]) -> None:
        if check_columns is not None:
            check_columns(columns)

    try:
        if suffix == ".parquet":
            if column is None:
                return pd.read_parquet(io.BytesIO(data))
            import pyarrow.parquet as pq

            only(list(pq.read_schema(io.BytesIO(data)).names))
            return pd.read_parquet(io.BytesIO(data), columns=[column])[column]
        text = decode(data, path, role)
        if not text.strip():
            raise role.error(f"{role.noun} {role.where(path)} has no rows (only blank space)")
        if suffix == ".csv":
            if column is None:
                return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
            only([str(c) for c in pd.read_csv(io.StringIO(text), nrows=0).columns])
            frame = pd.read_csv(
                io.StringIO(text), usecols=[column], dtype=str, keep_default_na=False
            )
            return frame[column]
        if column is None:
            return pd.read_json(io.StringIO(text), lines=suffix == ".jsonl")
        frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
        only([str(c) for c in frame.columns])
        return frame[column]
    except DatasetError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        why = clip(first_line(exc)) if role.clipped else first_line(exc)
        raise role.error(f"cannot parse {role.where(path)} as {suffix[1:]}: {why}") from None
