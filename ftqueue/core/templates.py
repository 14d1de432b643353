"""Text templates cut from an encoded document: many documents that differ in a few values
are made by splicing those values into the parts between, not by encoding each one whole."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def cut_at_marks(encoded: str, marks: Mapping[str, K]) -> tuple[list[str], list[K]]:
    """``encoded`` cut at each occurrence of the texts in ``marks``.

    Returns the parts between the cuts (one more than the cuts) and, for each cut in order,
    the value ``marks`` gives for the text found there. A mark found nowhere makes no cut;
    the caller chooses marks that cannot occur otherwise (unique tokens).
    """
    parts: list[str] = []
    order: list[K] = []
    rest = encoded
    while True:
        found = [(at, mark) for mark in marks if (at := rest.find(mark)) >= 0]
        if not found:
            break
        at, mark = min(found)
        parts.append(rest[:at])
        order.append(marks[mark])
        rest = rest[at + len(mark) :]
    parts.append(rest)
    return parts, order
