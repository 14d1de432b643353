"""The spec dataclasses (Spec, DataSpec, JobSpec, ModelSpec), their hashes and shared fields."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from ftqueue.core.text import quote
from ftqueue.errors import SpecError
from ftqueue.inputs import weights
from ftqueue.inputs.weights import model_max_length, resolve_model
from ftqueue.specs.params import Param, check_text, flag, param, required, spec_params

DATASET_ALIASES = ("movie-snippets",)
SPLITS = ("train", "validation", "test")
POOLINGS = ("mean", "cls", "pooler")
BIASES = ("none", "all", "lora_only")
SELECT_EPOCHS = ("best", "last")
MAX_LENGTH_CAP = 8192
#: Spec keys that do not make a different configuration: repeats differ only in their seed,
#: and an evaluation's split is where it was measured, not what was run.
NOT_CONFIG = ("seed", "split")


def canonical_json(payload: Any) -> str:
    """Sorted-key compact JSON: equal values give equal text, and so equal hashes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


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
        for f, p in spec_params(type(self)):
            self._set(f.name, p.check(f.name, getattr(self, f.name)))
        self._after_check()

    def _after_check(self) -> None:
        """Rules across fields; the single-field checks have run."""

    def _set(self, name: str, value: Any) -> None:
        # Normalising (str -> stripped, list -> tuple, 3.0 -> 3) keeps equal specs hash-equal.
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe types; nested specs become dicts and tuples become lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            p = f.metadata.get("param")
            if value is None and isinstance(p, Param) and p.omit_none:
                continue
            if isinstance(value, Spec):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
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
            raise SpecError(
                f"unknown {cls.__name__} field(s): {quote(', '.join(unknown))}; "
                f"known fields are {', '.join(sorted(names))}",
                param=flag(unknown[0]),
            )
        if isinstance(d.get("data"), dict):
            d["data"] = DataSpec.from_dict(d["data"])
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """``to_dict`` without the NOT_IDENTITY fields, nested specs included."""
        out = self.to_dict()
        for name in self.NOT_IDENTITY:
            out.pop(name, None)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Spec):
                out[f.name] = value.identity()
        return out

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of ``identity`` with the kind included, the input of
        ``spec_hash``."""
        return canonical_json({"kind": self.kind, **self.identity()})

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON; equal specs (after normalising) hash equal."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


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
    label_column: str = param("label", "text", "Integer labels 0..N-1.")
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
        name = self.dataset_name
        if name is not None and (len(name) > 64 or not name.isprintable()):
            raise SpecError(
                f"--dataset-name must be at most 64 printable characters; got {quote(name)}",
                param="--dataset-name",
            )

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
