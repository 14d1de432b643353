"""Unlabelled input for predict jobs: the formats read, and every way a file is refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ftqueue.errors import DatasetError
from ftqueue.inputs.unlabelled import file_sha256, read_texts

TEXTS = ["a gripping film", "dull, far too long", "42"]


@pytest.fixture(params=["csv", "jsonl", "parquet"])
def input_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    frame = pd.DataFrame({"id": [1, 2, 3], "body": TEXTS})
    path = tmp_path / f"in.{request.param}"
    if request.param == "csv":
        frame.to_csv(path, index=False)
    elif request.param == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


def test_each_format_gives_the_column_in_file_order(input_file: Path) -> None:
    assert read_texts(str(input_file), "body") == TEXTS
    assert read_texts(str(input_file), "body", sha256=file_sha256(input_file)) == TEXTS


def test_csv_cells_stay_text_and_a_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("\ufefftext\n007\nNA\ncr\u00e8me br\u00fbl\u00e9e\n".encode())
    assert read_texts(str(path), "text") == ["007", "NA", "cr\u00e8me br\u00fbl\u00e9e"]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD = [
    ("missing", lambda t: t / "nope.csv", "text", "does not exist", "--input"),
    ("directory", lambda t: t, "text", "is a directory", "--input"),
    ("extension", lambda t: _write(t, "in.txt", b"text\nx\n"), "text", "unsupported", "--input"),
    ("empty", lambda t: _write(t, "in.csv", b""), "text", "is empty", "--input"),
    ("blank", lambda t: _write(t, "in.csv", b"  \n\n"), "text", "no rows", "--input"),
    (
        "latin1",
        lambda t: _write(t, "in.csv", "text\nok\ncr\u00e8me\n".encode("latin-1")),
        "text",
        "not UTF-8 text (bad byte at line 3)",
        "--input",
    ),
    (
        "column",
        lambda t: _write(t, "in.csv", b"sentence\nfine\n"),
        "text",
        "no column 'text' (columns: sentence): name the right one with --text-column",
        "--text-column",
    ),
    ("header only", lambda t: _write(t, "in.csv", b"text\n"), "text", "has no rows", "--input"),
    (
        "blank cell",
        lambda t: _write(t, "in.csv", b"text,n\nfine,1\n,2\n"),
        "text",
        "row 2: 'text' is empty",
        "--text-column",
    ),
    (
        "not a string",
        lambda t: _write(t, "in.jsonl", b'{"text": "fine"}\n{"text": 5}\n'),
        "text",
        "row 2: 'text' is empty or not text (5)",
        "--text-column",
    ),
    (
        "malformed",
        lambda t: _write(t, "in.parquet", b"not parquet at all"),
        "text",
        "cannot parse",
        "--input",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "column", "message", "param"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_input_is_refused_in_one_line(
    tmp_path: Path, name: str, make: object, column: str, message: str, param: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(DatasetError) as info:
        read_texts(str(path), column)
    assert message in info.value.message and "\n" not in info.value.message
    assert info.value.param == param and info.value.exit_code == 2


def test_a_file_changed_since_submit_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "in.csv", b"text\nfirst\n")
    digest = file_sha256(path)
    path.write_bytes(b"text\nsecond\n")
    with pytest.raises(DatasetError, match="has changed since the job was submitted"):
        read_texts(str(path), "text", sha256=digest)


def test_a_row_longer_than_a_worker_can_tokenize_is_refused(input_file: Path) -> None:
    from ftqueue.inputs.unlabelled import MAX_ROW_CHARS

    frame = pd.DataFrame({"id": [1, 2], "body": ["fine", "x" * (MAX_ROW_CHARS + 1)]})
    path = input_file.with_name("long" + input_file.suffix)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    with pytest.raises(DatasetError) as info:
        read_texts(str(path), "body")
    message = info.value.message
    assert "row 2" in message and f"{MAX_ROW_CHARS:,}" in message, message
    assert "\n" not in message and len(message) < 300 + len(str(path))


def test_a_long_column_name_or_cell_is_clipped_in_the_message(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"body": ["x", "' + "y" * 5000 + '"]}\n')
    with pytest.raises(DatasetError) as info:
        read_texts(str(path), "body")
    assert len(info.value.message) < 300 + len(str(path)), info.value.message
    with pytest.raises(DatasetError) as info:
        read_texts(str(path), "c" * 5000)
    assert len(info.value.message) < 300 + len(str(path)), info.value.message
