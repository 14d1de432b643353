"""The hash and the stored JSON of each spec of a grid, made from one template per shape."""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any

from ftqueue.core.templates import cut_at_marks
from ftqueue.specs.base import Spec, canonical_json


class SpecTexts:
    """Each spec's hash (``Spec.spec_hash``) and stored JSON (``json.dumps`` of ``to_dict``),
    for the specs of one submit, at a fraction of the cost of encoding each one whole.

    A grid's specs are made from one another by ``Spec.replace``: a field that did not change
    holds the very same object in the next spec. The first spec of each shape (its type and
    the keys of its dict) is encoded whole; the texts are then cut where the following specs
    hold other objects, and each following spec's texts are those parts with its own values
    spliced in, each encoded on its own (JSON encodes a nested value alike wherever it
    stands). A field counts as unchanged only when it holds the identical object, so a spliced
    text is exactly the text its spec encoded whole would give.
    """

    def __init__(self) -> None:
        self._shapes: dict[tuple[type, tuple[str, ...]], _Shape] = {}

    def __call__(self, spec: Spec, as_dict: dict[str, Any]) -> tuple[str, str]:
        """``(spec.spec_hash(as_dict), json.dumps(as_dict))``; ``as_dict`` is ``spec.to_dict()``."""
        key = (type(spec), tuple(as_dict))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = _Shape(spec, as_dict)
        canonical, stored = shape.texts(spec, as_dict)
        return hashlib.sha256(canonical.encode()).hexdigest(), stored


class _Shape:
    """The texts of the first spec of one shape, cut where later specs differ from it."""

    def __init__(self, spec: Spec, as_dict: dict[str, Any]) -> None:
        self.spec = spec
        self.as_dict = as_dict
        self.names = tuple(spec.__dict__)
        self.values = tuple(spec.__dict__.values())
        self.keys = frozenset(as_dict)
        self.holes: frozenset[str] = frozenset()
        self._cut(self.holes)

    def texts(self, spec: Spec, as_dict: dict[str, Any]) -> tuple[str, str]:
        fields = spec.__dict__
        if tuple(fields) != self.names:  # not made like the others: encoded whole
            return spec.canonical_json(as_dict), json.dumps(as_dict)
        changed = itertools.compress(self.names, map(operator.is_not, fields.values(), self.values))
        holes = self.keys.intersection(changed)
        if not holes <= self.holes:
            self._cut(self.holes | holes)
        canonical = _fill(self.canonical_parts, self.canonical_order, spec, as_dict, _canonical)
        stored = _fill(self.stored_parts, self.stored_order, spec, as_dict, _stored)
        return canonical, stored

    def _cut(self, holes: frozenset[str]) -> None:
        """Encode the first spec with a unique mark in each hole, and cut its texts there."""
        token = uuid.uuid4().hex
        marks = {name: f"<{token}:{name}>" for name in holes}
        stored = {k: marks.get(k, v) for k, v in self.as_dict.items()}
        self.stored_parts, self.stored_order = cut_at_marks(
            json.dumps(stored), {json.dumps(mark): name for name, mark in marks.items()}
        )
        identity = self.spec.identity(self.as_dict)
        canonical = {"kind": self.spec.kind} | {k: marks.get(k, v) for k, v in identity.items()}
        self.canonical_parts, self.canonical_order = cut_at_marks(
            canonical_json(canonical),
            {json.dumps(mark): name for name, mark in marks.items() if name in identity},
        )
        self.holes = holes


def _canonical(spec: Spec, name: str, value: Any) -> str:
    """A hole's value as the canonical text has it: nested specs without their names."""
    nested = getattr(spec, name)
    if isinstance(value, dict) and isinstance(nested, Spec):
        value = nested.identity(value)
    return canonical_json(value)


def _stored(spec: Spec, name: str, value: Any) -> str:
    """A hole's value as the stored text has it."""
    return json.dumps(value)


def _fill(
    parts: list[str],
    order: list[str],
    spec: Spec,
    as_dict: dict[str, Any],
    encode: Callable[[Spec, str, Any], str],
) -> str:
    """The parts with each hole's value encoded between them. Integers and strings, most
    holes of a grid, are written as JSON writes them, without a call into the encoder."""
    pieces = [parts[0]]
    for name, part in zip(order, parts[1:], strict=True):
        value = as_dict[name]
        kind = type(value)
        if kind is int:
            text = int.__repr__(value)
        elif kind is str:
            text = encode_basestring_ascii(value)
        else:
            text = encode(spec, name, value)
        pieces.append(text)
        pieces.append(part)
    return "".join(pieces)
