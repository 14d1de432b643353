"""Class labels: numbers or names read from a column, made class ids 0..N-1 and checked
(torch-free).

A split's labels are class numbers or class names, whichever most of the train split's are;
names get the ids of their sorted order, or of the order ``--label-names`` gives, and
``--label-names`` names numbers. Every class has train rows; validation and test use only
the train split's classes.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from ftqueue.core.text import clip, quote
from ftqueue.errors import DatasetError
from ftqueue.specs import MAX_CLASS_NAMES, DataSpec

#: More classes than this means the label column holds ids or scores, not classes.
MAX_CLASSES = MAX_CLASS_NAMES
#: A class name longer than this is a text in the wrong column, not a class.
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class Split:
    """One split's texts, integer labels and (for sentence pairs) second texts, in order."""

    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: Any) -> Split:
        pairs = None if self.pairs is None else [self.pairs[i] for i in indices]
        return Split([self.texts[i] for i in indices], [self.labels[i] for i in indices], pairs)


@dataclass(frozen=True)
class RawSplit:
    """A split as read: labels are class numbers (int) or class names (str), not yet mapped."""

    texts: list[str]
    labels: list[int | str]
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def label_of(value: Any, row: int, where: str) -> int | str:
    """A class number (int, from an integer, an integral float or digits) or a class name."""
    # At most 30 digits: int() of text past 4,300 digits raises, and no class number is near.
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,30}\s*", value):
        value = int(value)  # a column with one bad cell is read as text, the rest still count
    # numbers' ABCs take numpy's scalars too, without importing numpy (a submit need not).
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, numbers.Integral)
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        value = int(float(value))
    if isinstance(value, str) and value.strip():
        name = value.strip()
        if len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise DatasetError(
                f"{where} row {row}: label {quote(value, 60)} is not a class name (over "
                f"{MAX_NAME_CHARS} characters, or unprintable): is --label-column the label?",
                param="--label-column",
            )
        return name
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DatasetError(
            f"{where} row {row}: label {quote(value, 60)} is not an integer or a class name; "
            "labels are class numbers 0..K-1 or class names (fill or drop the row)",
            param="--label-column",
        )
    if value < 0:
        raise DatasetError(
            f"{where} row {row}: label {value} is negative; labels must be 0..K-1",
            param="--label-column",
        )
    return int(value)


def _mixed(raw: RawSplit, kind: type, where: str) -> DatasetError:
    """The first label of the other kind than the split's majority, refused."""
    row, value = next((i, v) for i, v in enumerate(raw.labels, start=1) if isinstance(v, kind))
    what, other = ("a class name", "numbers") if kind is str else ("a class number", "names")
    return DatasetError(
        f"{where} row {row}: label {quote(value, 60)} is {what}, but the train split's labels "
        f"are mostly class {other}: use names throughout or numbers throughout",
        param="--label-column",
    )


def number_labels(
    found: dict[str, RawSplit],
    source: str,
    names: list[str] | None,
    spec: DataSpec,
    origins: dict[str, str],
) -> tuple[dict[str, Split], list[str] | None]:
    """Labels as class ids: names become the index of their class (sorted, or in the order
    of --label-names); numbers stay, and --label-names names them."""
    train = found["train"].labels
    by_name = sum(isinstance(v, str) for v in train) > len(train) / 2
    given = spec.class_names()
    for name, raw in found.items():
        if any(isinstance(v, int if by_name else str) for v in raw.labels):
            where = (
                f"{clip(origins.get(name, source))} [{name}]" if len(found) > 1 else clip(source)
            )
            raise _mixed(raw, int if by_name else str, where)
    if not by_name:
        splits = {
            name: Split(raw.texts, [int(v) for v in raw.labels], raw.pairs)
            for name, raw in found.items()
        }
        if given is not None:
            count = len(names) if names else max(int(v) for v in train) + 1
            if len(given) != count:
                raise DatasetError(
                    f"--label-names gives {len(given)} names, but {clip(source)} has {count} "
                    f"classes (0..{count - 1}): give one name per class, in id order",
                    param="--label-names",
                )
            names = given
        return splits, names
    seen = list(dict.fromkeys(str(v) for v in train))
    if len(seen) < 2:
        raise DatasetError(
            f"{clip(source)}: the train split has 1 class ({quote(seen[0], 60)}); "
            "classification needs at least 2",
            param="--label-column",
        )
    if len(seen) > MAX_CLASSES:
        raise DatasetError(
            f"{clip(source)}: the train split has {len(seen):,} distinct labels, over "
            f"{MAX_CLASSES}: is --label-column free text rather than a class?",
            param="--label-column",
        )
    if given is not None:
        stray = [n for n in seen if n not in given] or [n for n in given if n not in seen]
        if stray:
            raise DatasetError(
                f"--label-names and the train split's classes differ at {quote(stray[0], 60)}: "
                f"list exactly the classes of {clip(source)} ({clip(', '.join(sorted(seen)))})",
                param="--label-names",
            )
    order = given or sorted(seen)
    ids = {n: i for i, n in enumerate(order)}
    splits = {}
    for name, raw in found.items():
        for row, value in enumerate(raw.labels, start=1):
            if value not in ids:
                raise DatasetError(
                    f"{clip(origins.get(name, source))} [{name}] row {row}: label "
                    f"{quote(value, 60)} is not a class "
                    f"of the train split ({clip(', '.join(order))}): drop those rows, or add "
                    "training rows of that class",
                    param="--label-column",
                )
        splits[name] = Split(raw.texts, [ids[str(v)] for v in raw.labels], raw.pairs)
    return splits, order


def class_list(labels: set[int]) -> str:
    """A few class numbers for a message: ``0, 7``, or ``1, 2, 3, 4, 5, 6, ..., 99 (99 in all)``."""
    items = sorted(labels)
    if len(items) <= 8:
        return ", ".join(map(str, items))
    return f"{', '.join(map(str, items[:6]))}, ..., {items[-1]} ({len(items)} in all)"


def check_labels(splits: dict[str, Split], source: str, names: list[str] | None) -> int:
    """The number of classes N: labels are exactly 0..N-1, each one present in train, and the
    other splits use only those.

    Runs on the splits as read, so row numbers are the source's data rows (1-based). Numbering
    from 1, or with gaps, would otherwise add classes with no rows (a phantom class 0, or
    classes 1..6 of labels {0, 7}) that the head still predicts.
    """
    source = clip(source)
    train_labels = set(splits["train"].labels)
    if len(train_labels) < 2:
        raise DatasetError(
            f"{source}: the train split has {len(train_labels)} class(es) "
            f"({class_list(train_labels)}); classification needs at least 2",
            param="--label-column",
        )
    num_labels = len(names) if names else max(train_labels) + 1
    if num_labels > MAX_CLASSES:
        raise DatasetError(
            f"{source}: label {max(train_labels)} implies over {MAX_CLASSES} classes; is "
            "--label-column a score or an id rather than a class?",
            param="--label-column",
        )
    absent = set(range(num_labels)) - train_labels
    if absent and not names and train_labels == set(range(1, num_labels)):
        raise DatasetError(
            f"{source}: labels run 1..{num_labels - 1}, but classes are numbered from 0: "
            f"subtract 1 from every label (0..{num_labels - 2})",
            param="--label-column",
        )
    if absent:
        raise DatasetError(
            f"{source}: labels must be 0..N-1 with every class in the train split, but class(es) "
            f"{class_list(absent)} have no training rows (the train labels are "
            f"{class_list(train_labels)}): renumber the classes 0..{len(train_labels) - 1}",
            param="--label-column",
        )
    for name, split in splits.items():
        for row, label in enumerate(split.labels, start=1):
            if label >= num_labels:
                raise DatasetError(
                    f"{source} [{name}] row {row}: label {label} is not in 0..{num_labels - 1} "
                    "(the classes of the train split)",
                    param="--label-column",
                )
    return num_labels
