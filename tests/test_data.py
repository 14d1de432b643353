"""Datasets: the offline alias, local files, deterministic splits, and refusals of bad input."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from ftqueue.errors import DatasetError
from ftqueue.inputs import tables
from ftqueue.inputs.labelled import check_dataset, movie_snippets_path, resolve_dataset
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec


def _csv(path: Path, rows: Sequence[tuple[str, object]], header: str = "text,label") -> Path:
    lines = [header] + [f'"{text}",{label}' for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(n: int, classes: int = 2) -> list[tuple[str, int]]:
    return [(f"sentence number {i}", i % classes) for i in range(n)]


def test_movie_snippets_split_is_80_10_10_disjoint_and_deterministic() -> None:
    lines = movie_snippets_path().read_text(encoding="utf-8").splitlines()[1:]
    scores = [float(line.split("\t")[1]) for line in lines]
    nonzero = [s for s in scores if s != 0]
    loaded = resolve_dataset(DataSpec(dataset="movie-snippets"))
    sizes = [len(loaded.train), len(loaded.validation), len(loaded.test)]
    assert sum(sizes) == len(nonzero) == len(scores) - scores.count(0.0)
    assert sizes[1] == sizes[2] == len(nonzero) // 10
    assert loaded.label_names == ["negative", "positive"] and loaded.num_labels == 2
    assert sum(loaded.train.labels) + sum(loaded.validation.labels) + sum(
        loaded.test.labels
    ) == sum(s > 0 for s in nonzero)
    parts = [set(loaded.train.texts), set(loaded.validation.texts), set(loaded.test.texts)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    again = resolve_dataset(DataSpec(dataset="movie-snippets"))
    assert again.test.texts == loaded.test.texts and again.fingerprint == loaded.fingerprint
    other = resolve_dataset(DataSpec(dataset="movie-snippets", split_seed=1))
    assert other.test.texts != loaded.test.texts and other.fingerprint != loaded.fingerprint


def test_subsets_are_deterministic_nested_and_change_the_fingerprint() -> None:
    full = resolve_dataset(DataSpec(dataset="movie-snippets"))
    small = resolve_dataset(DataSpec(dataset="movie-snippets", train_samples=50, eval_samples=20))
    larger = resolve_dataset(DataSpec(dataset="movie-snippets", train_samples=80, eval_samples=20))
    assert (len(small.train), len(small.validation), len(small.test)) == (50, 20, 20)
    assert set(small.train.texts) < set(larger.train.texts) <= set(full.train.texts)
    assert set(small.test.texts) <= set(full.test.texts)
    assert len({full.fingerprint, small.fingerprint, larger.fingerprint}) == 3


def test_csv_is_split_with_the_seed(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", _rows(100))
    loaded = resolve_dataset(DataSpec(dataset=str(path)))
    assert (len(loaded.train), len(loaded.validation), len(loaded.test)) == (80, 10, 10)
    assert loaded.label_names == ["0", "1"]
    assert sorted(loaded.train.texts + loaded.validation.texts + loaded.test.texts) == sorted(
        t for t, _ in _rows(100)
    )
    row = loaded.train.texts.index("sentence number 7")
    assert loaded.train.labels[row] == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_other_formats_and_column_names(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"sentence": [t for t, _ in _rows(30)], "y": [y for _, y in _rows(30)]})
    path = tmp_path / f"d{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=suffix == ".jsonl")
    spec = DataSpec(dataset=str(path), text_column="sentence", label_column="y")
    summary = check_dataset(spec)
    assert summary["rows"] == {"train": 24, "validation": 3, "test": 3}


def test_named_splits_carve_the_missing_one_from_train(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", _rows(50))
    test = _csv(tmp_path / "test.csv", [("held out", 0), ("also held out", 1)])
    loaded = resolve_dataset(DataSpec(dataset=f"train={train},test={test}"))
    assert loaded.test.texts == ["held out", "also held out"]
    assert (len(loaded.train), len(loaded.validation)) == (45, 5)


def _assert_refused(spec: DataSpec, *fragments: str, param: str | None = None) -> None:
    with pytest.raises(DatasetError) as info:
        check_dataset(spec)
    message = info.value.message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    if param is not None:
        assert info.value.param == param


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _assert_refused(DataSpec(dataset=str(tmp_path / "nope.csv")), "nope.csv", "does not exist")
    _assert_refused(DataSpec(dataset=str(tmp_path)), "is a directory")


def test_empty_and_blank_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    _assert_refused(DataSpec(dataset=str(tmp_path / "empty.csv")), "empty.csv", "is empty")
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    _assert_refused(DataSpec(dataset=str(tmp_path / "blank.jsonl")), "no rows")
    (tmp_path / "header.csv").write_text("text,label\n")
    _assert_refused(DataSpec(dataset=str(tmp_path / "header.csv")), "no rows")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nok,1\ncaf\u00e9 cr\u00e8me,0\n".encode("latin-1"))
    _assert_refused(DataSpec(dataset=str(path)), "latin1.csv", "not UTF-8", "line 3")


def test_unsupported_extension_and_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.txt"
    path.write_text("text\tlabel\n")
    _assert_refused(DataSpec(dataset=str(path)), "unsupported extension '.txt'", ".parquet")
    big = _csv(tmp_path / "big.csv", _rows(20))
    monkeypatch.setenv("FTQUEUE_MAX_INPUT_BYTES", "100")
    reset_settings()
    _assert_refused(DataSpec(dataset=str(big)), "big.csv", "over the 100 bytes limit")


def test_missing_columns_list_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", _rows(10), header="sentence,label")
    _assert_refused(
        DataSpec(dataset=str(path)), "no column 'text'", "sentence, label", param="--text-column"
    )
    _assert_refused(
        DataSpec(dataset=str(path), text_column="sentence", label_column="polarity"),
        "no column 'polarity'",
        param="--label-column",
    )


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("positive", "label 'positive' is a class name, but the train split's labels are mostly"),
        ("0.5", "label 0.5 is not"),
        ("-1", "label -1 is negative"),
        ("", "label nan is not"),
    ],
)
def test_bad_labels_name_the_row(tmp_path: Path, label: str, fragment: str) -> None:
    rows: Sequence[tuple[str, object]] = [*_rows(5), ("bad row", label)]
    _assert_refused(
        DataSpec(dataset=str(_csv(tmp_path / "d.csv", rows))),
        "row 6",
        fragment,
        param="--label-column",
    )


def test_labels_outside_train_classes_and_single_class(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", _rows(20))
    test = _csv(tmp_path / "test.csv", [("fine", 1), ("unseen class", 2)])
    _assert_refused(
        DataSpec(dataset=f"train={train},test={test}"), "[test] row 2", "label 2 is not in 0..1"
    )
    single = _csv(tmp_path / "single.csv", [(f"s{i}", 1) for i in range(10)])
    _assert_refused(DataSpec(dataset=str(single)), "1 class(es)", "at least 2")
    ids = _csv(tmp_path / "ids.csv", [("a", 0), ("b", 5000)])
    _assert_refused(DataSpec(dataset=str(ids)), "score or an id")


def test_empty_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [{"text": "a", "label": 0}, {"text": " ", "label": 1}])
    )
    _assert_refused(DataSpec(dataset=str(path)), "row 2", "text is empty")


def test_unknown_dataset_name() -> None:
    _assert_refused(DataSpec(dataset="no such dataset!"), "unknown dataset", "movie-snippets")


def test_hub_id_unreachable_becomes_a_dataset_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    # The hub is unreachable here either way; offline mode only skips the slow retries.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    _assert_refused(
        DataSpec(dataset="rotten_tomatoes"),
        "rotten_tomatoes",
        "hub",
        "movie-snippets",
        param="--dataset",
    )


def test_checks_write_nothing(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", _rows(30))
    before = sorted(tmp_path.rglob("*"))
    check_dataset(DataSpec(dataset=str(path)))
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("labels", "fragments"),
    [
        ([1, 2, 3], ["labels run 1..3", "subtract 1", "0..2"]),
        ([1, 2], ["labels run 1..2", "subtract 1"]),
        ([0, 7], ["class(es) 1, 2, 3, 4, 5, 6 have no training rows", "0, 7", "renumber"]),
        ([0, 1, 3], ["class(es) 2 have no training rows"]),
    ],
)
def test_labels_must_be_0_to_n_minus_1_with_every_class_in_train(
    tmp_path: Path, labels: list[int], fragments: list[str]
) -> None:
    rows = [(f"sentence {i}", labels[i % len(labels)]) for i in range(60)]
    _assert_refused(
        DataSpec(dataset=str(_csv(tmp_path / "d.csv", rows))), *fragments, param="--label-column"
    )


def test_a_subset_that_drops_a_class_from_training_is_refused(tmp_path: Path) -> None:
    # 3 rows of class 2 among 300: a 4-row training subset cannot hold every class.
    rows = [(f"sentence {i}", i % 2) for i in range(297)] + [(f"rare {i}", 2) for i in range(3)]
    path = _csv(tmp_path / "d.csv", rows)
    check_dataset(DataSpec(dataset=str(path)))  # the whole file is fine
    _assert_refused(
        DataSpec(dataset=str(path), train_samples=4),
        "no rows of class(es) 2",
        param="--train-samples",
    )


def test_messages_quote_at_most_200_characters_of_a_huge_single_line_file(tmp_path: Path) -> None:
    """A 10 MB one-line file: whatever is wrong with it, the message stays short."""
    blob = "x" * 10_000_000
    header_only = tmp_path / "header.csv"
    header_only.write_text(blob + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "' + blob)
    label = tmp_path / "label.jsonl"
    label.write_text(json.dumps({"text": "fine", "label": blob}) + "\n")
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": 5, "label": 0, blob[:300]: 1}) + "\n")
    for path in (header_only, broken, label, text):
        with pytest.raises(DatasetError) as info:
            check_dataset(DataSpec(dataset=str(path)))
        assert len(info.value.message) < 700 and "\n" not in info.value.message, path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_huge_label_or_row_is_one_line(tmp_path: Path, suffix: str) -> None:
    long_text = "x" * (tables.MAX_ROW_CHARS + 1)
    for rows, needle in (
        ([{"text": "a", "label": "7" * 5000}, {"text": "b", "label": "0"}], "is not"),
        ([{"text": "a", "label": "1"}, {"text": long_text, "label": "0"}], "row 2"),
    ):
        path = tmp_path / f"d{suffix}"
        frame = pd.DataFrame(rows)
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_json(path, orient="records", lines=True)
        with pytest.raises(DatasetError) as info:
            check_dataset(DataSpec(dataset=str(path)))
        message = info.value.message
        assert needle in message and "\n" not in message, message
        assert len(message) < 300 + len(str(path)), message
