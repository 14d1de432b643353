"""An adapter directory's files, checked before anything loads them: ftqueue's metadata
against its schema, peft's config, and the safetensors header against the file's size.

Each problem is one AdapterError that names the file and what is wrong with it. Torch-free
(safetensors reads the header only), so the CLI checks an adapter at submit time too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftqueue.core.text import clip, quote
from ftqueue.errors import AdapterError

ADAPTER_METADATA = "ftqueue_adapter.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: Weight formats that unpickle (and so can run code) on load; never read.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: ftqueue_adapter.json and adapter_config.json are a few kB; a larger one is not ours.
MAX_JSON_BYTES = 4 * 1024 * 1024
#: The poolings a head can have (ftqueue.specs.base.POOLINGS; a test keeps them equal).
POOLINGS = ("mean", "cls", "pooler")
METADATA_FORMATS = (1, 2)
_REDO = "re-run the job that trained it"
#: The classification head's weight in peft's keys: its first dimension is the label count.
_HEAD_WEIGHT = re.compile(r"(?:^|\.)classifier(?:\.modules_to_save\.default)?\.weight$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


#: ftqueue_adapter.json: every key ftqueue writes, with the check of its value and what it
#: should be. A key that is not here is refused: no edit of the file is silently ignored.
METADATA_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda v: v in METADATA_FORMATS and _is_int(v), "1 or 2"),
    "kind": (_is_name, "a job kind"),
    "spec": (lambda v: isinstance(v, dict), "an object"),
    "spec_hash": (_is_name, "a string"),
    "model": (_is_name, "a model name"),
    "model_revision": (_opt(lambda v: isinstance(v, str)), "a string or null"),
    "num_labels": (lambda v: _is_int(v) and 2 <= v <= 100_000, "a whole number >= 2"),
    "label_names": (_str_list, "a list of strings"),
    "pooling": (lambda v: v in POOLINGS, " or ".join(POOLINGS)),
    "max_length": (lambda v: _is_int(v) and 1 <= v <= 1_000_000, "a whole number >= 1"),
    "body_attr": (_opt(lambda v: isinstance(v, str) and v.isidentifier()), "a name or null"),
    "model_type": (_opt(_is_name), "a string or null"),
    "stock_class": (_opt(lambda v: isinstance(v, str) and v.isidentifier()), "a name or null"),
    "dataset_fingerprint": (_opt(lambda v: isinstance(v, str)), "a string or null"),
    "metrics": (lambda v: isinstance(v, list), "a list"),
    "selected_epoch": (_opt(_is_int), "a whole number or null"),
    "started_at": (_opt(_is_number), "a number or null"),
    "stats": (lambda v: isinstance(v, dict), "an object"),
    "versions": (lambda v: isinstance(v, dict), "an object"),
    # What the card reads: pairs or single texts, the data used, the values trained with.
    "text_pair": (lambda v: isinstance(v, bool), "true or false"),
    "data": (lambda v: isinstance(v, dict), "an object"),
    "hyperparameters": (lambda v: isinstance(v, dict), "an object"),
}
METADATA_REQUIRED = ("model", "num_labels", "label_names", "pooling", "max_length")
#: The same values as the job's spec, which the metadata also holds: an edit of one is seen.
_AS_IN_SPEC = ("model", "pooling", "max_length")

#: adapter_config.json: the keys peft needs, and what their values must be.
CONFIG_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "peft_type": (lambda v: v == "LORA", '"LORA"'),
    "r": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "lora_alpha": (_is_number, "a number"),
    "target_modules": (lambda v: _is_name(v) or (_str_list(v) and bool(v)), "module names"),
}
CONFIG_OPTIONAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lora_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "modules_to_save": (_opt(_str_list), "a list of module names or null"),
    "task_type": (_opt(lambda v: isinstance(v, str)), "a string or null"),
    "base_model_name_or_path": (_opt(lambda v: isinstance(v, str)), "a string or null"),
    "bias": (lambda v: v in ("none", "all", "lora_only"), '"none", "all" or "lora_only"'),
    "fan_in_fan_out": (lambda v: isinstance(v, bool), "true or false"),
    "use_dora": (lambda v: isinstance(v, bool), "true or false"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "inference_mode": (lambda v: isinstance(v, bool), "true or false"),
}


def _bad(path: Path, name: str, problem: str) -> AdapterError:
    return AdapterError(f"adapter {path}: {name} {problem}; {_REDO}", param="--adapter-job")


def read_json_object(path: Path, name: str) -> dict[str, Any]:
    """The JSON object in ``path/name``, or AdapterError naming the file and the problem."""
    file = path / name
    try:
        size = file.stat().st_size
        if size > MAX_JSON_BYTES:
            raise _bad(path, name, f"is {size:,} bytes, not the few kB ftqueue writes")
        payload = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise _bad(path, name, f"is not valid JSON ({clip(exc, 120)})") from None
    if not isinstance(payload, dict):
        raise _bad(path, name, f"holds a JSON {type(payload).__name__}, not an object")
    return payload


def _check_fields(
    path: Path,
    name: str,
    payload: dict[str, Any],
    schema: dict[str, tuple[Callable[[Any], bool], str]],
    required: tuple[str, ...],
) -> None:
    missing = [key for key in required if key not in payload]
    if missing:
        raise _bad(path, name, f"lacks {', '.join(missing)}")
    for key, value in payload.items():
        if key not in schema:
            continue
        check, wanted = schema[key]
        try:
            ok = check(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise _bad(path, name, f"has {key} = {quote(value, 80)}, which should be {wanted}")


def check_metadata(path: Path) -> dict[str, Any]:
    """ftqueue_adapter.json, read and checked against METADATA_SCHEMA and itself."""
    meta = read_json_object(path, ADAPTER_METADATA)
    unknown = sorted(k for k in meta if k not in METADATA_SCHEMA)
    if unknown:
        keys = ", ".join(quote(k, 40) for k in unknown[:3])
        raise _bad(path, ADAPTER_METADATA, f"has keys ftqueue does not write ({keys})")
    _check_fields(path, ADAPTER_METADATA, meta, METADATA_SCHEMA, METADATA_REQUIRED)
    names = meta["label_names"]
    if len(names) != meta["num_labels"] or len(set(names)) != len(names):
        raise _bad(
            path,
            ADAPTER_METADATA,
            f"has {len(names)} label names ({len(set(names))} distinct) for num_labels = "
            f"{meta['num_labels']}",
        )
    spec = meta.get("spec") or {}
    for key in _AS_IN_SPEC:
        if key in spec and spec[key] is not None and spec[key] != meta[key]:
            raise _bad(
                path,
                ADAPTER_METADATA,
                f"has {key} = {quote(meta[key], 80)} but its job's spec says "
                f"{quote(spec[key], 80)}",
            )
    return meta


def check_config(path: Path) -> dict[str, Any]:
    """adapter_config.json, read and checked for the keys peft needs to load it."""
    config = read_json_object(path, ADAPTER_CONFIG)
    _check_fields(path, ADAPTER_CONFIG, config, {**CONFIG_SCHEMA, **CONFIG_OPTIONAL},
                  tuple(CONFIG_SCHEMA))  # fmt: skip
    return config


def check_weights(path: Path, num_labels: int) -> None:
    """The safetensors header: whole, covering the file exactly, with a head of the metadata's
    label count. Reads the header only."""
    from safetensors import SafetensorError, safe_open

    file = path / ADAPTER_WEIGHTS
    try:
        with safe_open(str(file), framework="numpy") as weights:
            shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        problem = clip(str(exc).strip() or type(exc).__name__, 160)
        raise _bad(path, ADAPTER_WEIGHTS, f"is damaged ({problem})") from None
    if not any(".lora_" in key for key in shapes):
        raise _bad(path, ADAPTER_WEIGHTS, "holds no LoRA weights")
    for key, shape in shapes.items():
        if _HEAD_WEIGHT.search(key) and (not shape or shape[0] != num_labels):
            raise _bad(
                path,
                ADAPTER_WEIGHTS,
                f"has a head for {shape[0] if shape else 0} labels, but {ADAPTER_METADATA} "
                f"says num_labels = {num_labels}",
            )


def check_adapter_dir(path: Path) -> dict[str, Any]:
    """Refuse an adapter directory that is missing, incomplete, damaged or holds pickle
    weights, in one line naming the file. Returns its metadata."""
    if not path.is_dir():
        raise AdapterError(
            f"adapter directory {path} does not exist: give the id of a training job that "
            "succeeded",
            param="--adapter-job",
        )
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(
            f"adapter {path} contains pickle weights ({', '.join(pickles)}), which can run code "
            "when loaded: only safetensors adapters are accepted; re-save it with "
            "save_pretrained(..., safe_serialization=True)",
            param="--adapter-job",
        )
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_METADATA):
        if not (path / name).is_file():
            raise AdapterError(
                f"adapter {path} is incomplete: {name} is missing (was it written by ftqueue "
                f"and published?); {_REDO}",
                param="--adapter-job",
            )
    metadata = check_metadata(path)
    check_config(path)
    check_weights(path, metadata["num_labels"])
    return dict(metadata)
