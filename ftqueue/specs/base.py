"""The spec dataclasses (Spec, DataSpec, JobSpec, ModelSpec), their hashes and shared fields."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import operator
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from ftqueue.core.text import quote
from ftqueue.errors import SpecError
from ftqueue.inputs import weights
from ftqueue.inputs.weights import model_max_length, resolve_model
from ftqueue.specs.aliases import own_field
from ftqueue.specs.params import Param, check_text, flag, param, required, spec_params

DATASET_ALIASES = ("movie-snippets",)
SPLITS = ("train", "validation", "test")
POOLINGS = ("mean", "cls", "pooler")
BIASES = ("none", "all", "lora_only")
SELECT_EPOCHS = ("best", "last")
MAX_LENGTH_CAP = 8192
#: More classes than this means the label column holds ids or scores, not classes.
MAX_CLASS_NAMES = 1000
#: Spec keys that do not make a different configuration: repeats differ only in their seed,
#: and an evaluation's split is where it was measured, not what was run.
NOT_CONFIG = ("seed", "split")


def canonical_json(payload: Any) -> str:
    """Sorted-key compact JSON: equal values give equal text, and so equal hashes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def varying_keys(dicts: Sequence[Mapping[str, Any]], *, skip: Container[str] = ()) -> list[str]:
    """The keys of the first dict whose value differs in any of the others (a missing key
    reads as None), in the first dict's order; ``skip`` leaves keys out.

    The scan over the dicts runs in C (``map``), and stops at the first difference: a
    10,000-job grid's specs are compared key by key twice per submit.
    """
    if not dicts:
        return []
    out = []
    for key, value in dicts[0].items():
        if key in skip:
            continue
        values = map(operator.methodcaller("get", key), dicts)
        if any(map(operator.ne, values, itertools.repeat(value))):
            out.append(key)
    return out


def digest(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload``."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def config_hash(spec: dict[str, Any]) -> str:
    """sha256 of a spec without seed and split (and names for people, see
    ``Spec.NOT_IDENTITY``): jobs that share it are repeats of one setup."""
    config = {k: v for k, v in spec.items() if k not in NOT_CONFIG}
    if isinstance(config.get("data"), dict):
        config["data"] = {k: v for k, v in config["data"].items() if k not in DataSpec.NOT_IDENTITY}
    return digest(config)


class Spec:
    """Shared behaviour of the spec dataclasses: checks, dict/JSON round trips, hashing.

    Subclasses are frozen keyword-only dataclasses; ``kind`` names the job kind they describe
    (empty for nested specs such as ``DataSpec``). ``_after_check`` adds rules that tie
    several fields together.
    """

    kind: ClassVar[str] = ""
    #: Fields that name things for people and do not change what a job does: stored, but
    #: left out of the spec hash (de-duplication) and the configuration hash.
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Straight into the instance's dict, as ``_set`` would (a frozen dataclass refuses
        # setattr): every spec of a grid comes through here.
        values = self.__dict__
        for f, p in spec_params(type(self)):
            value = values[f.name]
            checked = p.check(f.name, value)
            if checked is not value:
                values[f.name] = checked
        self._after_check()

    def _after_check(self) -> None:
        """Rules across fields; the single-field checks have run."""

    def replace(self, **changes: Any) -> Self:
        """What ``dataclasses.replace`` makes, checking only the changed fields and the rules
        across fields: the others were checked when this spec was made. (A 10,000-job grid
        pins each spec this way; checking all its fields again cost half a second.)"""
        params = _params_by_name(type(self))
        if not _field_names(type(self)).issuperset(changes):
            unknown = set(changes) - _field_names(type(self))
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for name, value in changes.items():
            p = params.get(name)
            new._set(name, value if p is None else p.check(name, value))
        new._after_replace()
        return new

    def _after_replace(self) -> None:
        self._after_check()

    def _set(self, name: str, value: Any) -> None:
        # Normalising (str -> stripped, list -> tuple, 3.0 -> 3) keeps equal specs hash-equal.
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe types; nested specs become dicts and tuples become lists."""
        out: dict[str, Any] = {}
        for name, omit_none, omit_default, default in _dict_fields(type(self)):
            value = getattr(self, name)
            if (omit_none and value is None) or (omit_default and value == default):
                continue
            if isinstance(value, Spec):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from ``to_dict`` output; unknown keys are refused, not silently dropped."""
        if not isinstance(d, dict):
            raise SpecError(f"a {cls.__name__} must be a JSON object; got {type(d).__name__}")
        d = dict(d)
        if cls.kind and d.pop("kind", cls.kind) != cls.kind:
            raise SpecError(f"this is not a {cls.kind} spec (kind={quote(d.get('kind'))})")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            ours = [(u, own_field(u, names)) for u in unknown]
            hints = "".join(f"; ftqueue calls {quote(u, 60)} {own}" for u, own in ours if own)
            raise SpecError(
                f"unknown {cls.__name__} field(s): {quote(', '.join(unknown))}{hints}; "
                f"known fields are {', '.join(sorted(names))}",
                param=flag(unknown[0]),
            )
        if isinstance(d.get("data"), dict):
            d["data"] = DataSpec.from_dict(d["data"])
        return cls(**d)

    def identity(self, as_dict: dict[str, Any] | None = None) -> dict[str, Any]:
        """``to_dict`` without the NOT_IDENTITY fields, nested specs included.

        ``as_dict``, this spec's ``to_dict`` when the caller has it already, saves making it
        again.
        """
        out = dict(self.to_dict() if as_dict is None else as_dict)
        for name in self.NOT_IDENTITY:
            out.pop(name, None)
        # Nested specs are dicts in ``to_dict``: only those fields need a look.
        for name, nested in out.items():
            if isinstance(nested, dict) and isinstance(value := getattr(self, name), Spec):
                out[name] = value.identity(nested)
        return out

    def canonical_json(self, as_dict: dict[str, Any] | None = None) -> str:
        """Sorted-key compact JSON of ``identity`` with the kind included, the input of
        ``spec_hash``."""
        return canonical_json({"kind": self.kind, **self.identity(as_dict)})

    def spec_hash(self, as_dict: dict[str, Any] | None = None) -> str:
        """sha256 of the canonical JSON; equal specs (after normalising) hash equal."""
        return hashlib.sha256(self.canonical_json(as_dict).encode()).hexdigest()


_PARAMS_BY_NAME: dict[type, dict[str, Param]] = {}
_DICT_FIELDS: dict[type, tuple[tuple[str, bool, bool, Any], ...]] = {}


def _params_by_name(cls: type) -> dict[str, Param]:
    found = _PARAMS_BY_NAME.get(cls)
    if found is None:
        found = _PARAMS_BY_NAME[cls] = {f.name: p for f, p in spec_params(cls)}
    return found


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    found = _FIELD_NAMES.get(cls)
    if found is None:
        found = _FIELD_NAMES[cls] = frozenset(name for name, *_ in _dict_fields(cls))
    return found


def _dict_fields(cls: type) -> tuple[tuple[str, bool, bool, Any], ...]:
    """(name, omit when None, omit when default, default) of each field, for ``to_dict``."""
    found = _DICT_FIELDS.get(cls)
    if found is not None:
        return found
    out = []
    for f in dataclasses.fields(cls):
        p = f.metadata.get("param")
        p = p if isinstance(p, Param) else None
        omit_none = p is not None and p.omit_none
        omit_default = p is not None and p.omit_default
        out.append((f.name, omit_none, omit_default, f.default))
    found = _DICT_FIELDS[cls] = tuple(out)
    return found


@dataclass(frozen=True, kw_only=True)
class DataSpec(Spec):
    """Where the labelled text comes from and which deterministic subset of it to use.

    The column names apply to files and hub sets; the movie-snippets alias has fixed columns.
    """

    dataset: str = required(
        "text",
        "movie-snippets (offline), a hub id (rotten_tomatoes), a .csv/.jsonl/.parquet file, "
        "or train=a.csv,validation=b.csv,test=c.csv.",
    )
    text_column: str = param("text", "text", "Column holding the text.")
    label_column: str = param(
        "label", "text", "Column holding the labels: class numbers 0..N-1, or class names "
        "(2 or more distinct strings; class ids follow their sorted order).",
    )  # fmt: skip
    #: The second text of sentence pairs (NLI, paraphrase), tokenized with the first as a pair.
    #: Stored only when given, so that specs from before the field keep their hash.
    text_pair_column: str | None = param(
        None, "text", "Column holding the second text of sentence pairs (NLI, paraphrase).",
        optional=True, omit_none=True,
    )  # fmt: skip
    #: Names of the classes, in class-id order: for integer labels, what 0..N-1 mean; for
    #: name labels, the id order instead of the sorted one. Stored only when given.
    label_names: str | None = param(
        None, "text", "Comma list of class names in id order, e.g. neg,pos (integer labels: "
        "what 0..N-1 mean; name labels: their ids instead of the sorted order).",
        optional=True, omit_none=True,
    )  # fmt: skip
    split_seed: int = param(
        0, "int", "Seed of the deterministic split of files without named splits.", hi=2**32 - 1
    )
    #: Deterministic subsets (first rows after the seeded shuffle), for quick runs and tests.
    train_samples: int | None = param(
        None, "int", "Use only this many training rows.", lo=2, hi=10**9, optional=True
    )
    eval_samples: int | None = param(
        None, "int", "Use only this many validation and test rows.", lo=2, hi=10**9, optional=True
    )
    #: A name for people, shown by `list`, `report` and plots instead of the file paths.
    dataset_name: str | None = param(
        None, "text", "A short name for the dataset in lists, reports and plots [default: the "
        "common stem of its files, or the file name].", optional=True, omit_none=True,
    )  # fmt: skip
    #: What the local file(s) held when the job was submitted (see data.pin): a worker refuses
    #: to train on a file whose content no longer matches. None for hub ids and aliases.
    fingerprint: str | None = param(
        None, "text", "Content fingerprint of the local files.", optional=True, cli=False,
        omit_none=True,
    )  # fmt: skip

    NOT_IDENTITY = ("dataset_name",)

    def _after_check(self) -> None:
        if "=" in self.dataset:
            self.named_splits()  # validates the syntax now, at submit time
        if self.label_names is not None:
            self._set("label_names", ",".join(self.class_names() or ()))
        name = self.dataset_name
        if name is not None and (len(name) > 64 or not name.isprintable()):
            raise SpecError(
                f"--dataset-name must be at most 64 printable characters; got {quote(name)}",
                param="--dataset-name",
            )

    def class_names(self) -> list[str] | None:
        """``label_names`` as a list (checked: 2 or more distinct, printable names), or None."""
        if self.label_names is None:
            return None
        names = [n.strip() for n in self.label_names.split(",")]
        bad = [n for n in names if not n or len(n) > 64 or not n.isprintable()]
        problem = None
        if len(names) < 2:
            problem = "needs at least 2 names"
        elif bad:
            problem = (
                f"has a blank or unprintable name, or one past 64 characters ({quote(bad[0])})"
            )
        elif len(set(names)) != len(names):
            problem = "names a class twice"
        elif len(names) > MAX_CLASS_NAMES:
            problem = f"has over {MAX_CLASS_NAMES} names"
        if problem:
            raise SpecError(
                f"--label-names {problem}: give distinct class names in id order, "
                f"comma-separated, e.g. negative,positive; got {quote(self.label_names)}",
                param="--label-names",
            )
        return names

    def named_splits(self) -> dict[str, str] | None:
        """``train=a.csv,test=b.csv`` as a dict, or None for a single source."""
        if "=" not in self.dataset:
            return None
        splits: dict[str, str] = {}
        for part in self.dataset.split(","):
            name, sep, path = (s.strip() for s in part.partition("="))
            if not sep or name not in SPLITS or not path or name in splits:
                raise SpecError(
                    f"--dataset with named splits must look like "
                    f"train=a.csv,validation=b.csv,test=c.csv (each split once, train required); "
                    f"got {quote(self.dataset)}",
                    param="--dataset",
                )
            splits[name] = path
        if "train" not in splits:
            raise SpecError(
                f"--dataset with named splits needs a train= file; got {quote(self.dataset)}",
                param="--dataset",
            )
        return splits


class JobSpec(Spec):
    """The spec of a job that runs a model: ``model`` is checked; ``source`` names its input."""

    model: str
    max_length: int
    #: None: decided per device where the job runs.
    eval_batch_size: int | None
    #: What a local model directory held when the job was submitted (model_fingerprint_field).
    model_fingerprint: str | None

    def __post_init__(self) -> None:
        self._set("model", check_text("model", self.model))
        self._check_input()
        super().__post_init__()

    def _after_replace(self) -> None:
        self._set("model", check_text("model", self.model))
        self._check_input()
        self._after_check()

    def _check_input(self) -> None:
        """Type checks of what the job reads, before the fields' own checks."""

    def source(self) -> str:
        """What the job reads, as the ``jobs.dataset`` column and `list --dataset` name it."""
        raise NotImplementedError

    def labelled_data(self) -> DataSpec | None:
        """The labelled dataset that `submit` checks (once per distinct one), if the job has one.

        A kind that reads something else checks it in its own ``check``.
        """
        return None


class ModelSpec(JobSpec):
    """A spec of a job that runs a model on labelled data: ``model`` and ``data`` are checked."""

    data: DataSpec

    def _check_input(self) -> None:
        if isinstance(self.data, dict):
            self._set("data", DataSpec.from_dict(self.data))
        elif not isinstance(self.data, DataSpec):
            raise SpecError(
                f"data must be a DataSpec; got {type(self.data).__name__}", param="--dataset"
            )

    def source(self) -> str:
        return self.data.dataset

    def labelled_data(self) -> DataSpec | None:
        return self.data


def validate_against_model(spec: JobSpec) -> str:
    """Resolve the spec's model and check ``max_length`` against it; returns the resolved model.

    A model directory fingerprinted at submit must still hold the same files.
    """
    resolved = resolve_model(spec.model)
    expected = getattr(spec, "model_fingerprint", None)
    if expected is not None:
        weights.verify(Path(resolved), expected)
    limit = model_max_length(resolved)
    if limit is not None and spec.max_length > limit:
        raise SpecError(
            f"--max-length must be 8..{limit} for model {spec.model} "
            f"(its max_position_embeddings); got {spec.max_length}",
            param="--max-length",
        )
    return resolved


# Fields several kinds share, each declared once.
def max_length_field() -> Any:
    return param(
        128, "int", "Tokens kept per text.", lo=8, hi=MAX_LENGTH_CAP, grid=True, hyper=True
    )


def model_fingerprint_field() -> Any:
    return param(
        None, "text", "Content fingerprint of a local model directory.", optional=True,
        cli=False, omit_none=True,
    )  # fmt: skip


def eval_batch_size_field() -> Any:
    return param(
        None,
        "int",
        "Evaluation batch size.",
        lo=1,
        hi=8192,
        optional=True,
        default_text="64 on CPU, 512 on GPU",
    )


def seed_field(help: str = "Random seed; 0..4 runs five seeds.") -> Any:
    return param(0, "int", help, hi=2**32 - 1, grid=True, hyper=True)
