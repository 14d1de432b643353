"""Saving and loading LoRA adapters: safetensors weights, peft config, ftqueue metadata last.

Format 2 (this one) keeps the encoder under the model's ``base_model_prefix`` and writes the
tokenizer, a model card and a hub id as ``base_model_name_or_path``, so stock peft and
transformers load it; format 1 kept it under ``body`` and still loads here.
"""

from __future__ import annotations

import copy
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from ftqueue.artifacts.adapter_files import ADAPTER_CONFIG, read_json_object
from ftqueue.artifacts.publishing import ADAPTER_METADATA, ADAPTER_WEIGHTS, check_adapter_dir
from ftqueue.core.files import share_tree, write_json_atomic
from ftqueue.core.text import clip, quote
from ftqueue.errors import AdapterError, first_line
from ftqueue.training.cards import write_adapter_card
from ftqueue.training.modeling import (
    LEGACY_BODY_ATTR,
    Base,
    PooledClassifier,
    build_classifier,
    hub_id,
    load_base,
    pick_device,
    stock_class_name,
)

METADATA_FORMAT = 2
_VERSIONED = ("ftqueue", "torch", "transformers", "peft", "datasets", "scikit-learn", "safetensors")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def save_adapter(model: PeftModel, base: Base, directory: Path, metadata: dict[str, Any]) -> None:
    """Weights, config, tokenizer and card first, metadata last: its presence marks it complete.

    Every file gets the mode the umask allows, so a shared artifacts directory stays readable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # The vocabulary is never changed, so peft need not look the base model up to check.
    model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise AdapterError(f"peft did not write {ADAPTER_WEIGHTS} into {directory}")
    save_tokenizer(base, directory, int(metadata["max_length"]))
    payload = {"format": METADATA_FORMAT, "versions": library_versions(), **metadata}
    write_adapter_card(directory, payload, hub_id(base.name))
    write_json_atomic(directory / ADAPTER_METADATA, payload)
    share_tree(directory)


def save_tokenizer(base: Base, directory: Path, max_length: int) -> None:
    """The base model's tokenizer, set to cut texts where training did."""
    tokenizer = copy.deepcopy(base.tokenizer)  # the cached one is shared by later jobs
    tokenizer.model_max_length = max_length
    tokenizer.name_or_path = hub_id(base.name) or ""
    tokenizer.save_pretrained(str(directory))


@dataclass
class LoadedAdapter:
    """A ready-to-evaluate classifier with its adapter applied, and the adapter's metadata."""

    model: PeftModel
    base: Base
    metadata: dict[str, Any]

    @property
    def num_labels(self) -> int:
        return int(self.metadata["num_labels"])


def _check_base_model(directory: Path, metadata: dict[str, Any]) -> None:
    """The base model in ftqueue's metadata is the one peft's config names (where both do)."""
    config = read_json_object(directory, ADAPTER_CONFIG)
    named = config.get("base_model_name_or_path")
    model = str(metadata["model"])
    if named and hub_id(model) not in (None, named):
        raise AdapterError(
            f"adapter {directory}: {ADAPTER_METADATA} names model {quote(model, 80)} but "
            f"{ADAPTER_CONFIG} was trained on {quote(named, 80)}; re-run the job that trained it",
            param="--adapter-job",
        )


def _check_against_base(directory: Path, metadata: dict[str, Any], base: Base) -> None:
    """What format 2 metadata says of the base model holds for the one loaded."""
    config = base.body.config
    # Where PooledClassifier puts this body: peft's keys start there, and an adapter whose keys
    # start elsewhere would load with its LoRA weights silently left out.
    body_attr = getattr(base.body, "base_model_prefix", "") or "model"
    if body_attr in ("encoder", "classifier", "dropout", "config", "pool"):
        body_attr = LEGACY_BODY_ATTR
    found = {
        "model_type": config.model_type,
        "stock_class": stock_class_name(config, str(metadata["pooling"])),
        "body_attr": body_attr,
    }
    for key, value in found.items():
        if key in metadata and metadata[key] != value:
            raise AdapterError(
                f"adapter {directory}: {ADAPTER_METADATA} has {key} = {quote(metadata[key], 80)} "
                f"but model {quote(metadata['model'], 80)} gives {quote(value, 80)}; re-run the "
                "job that trained it",
                param="--adapter-job",
            )


def load_adapter(directory: Path, *, device: torch.device | None = None) -> LoadedAdapter:
    """Load a published adapter onto its (cached) base model, in eval mode.

    Refuses pickle weights and incomplete directories before anything is read.
    """
    metadata = check_adapter_dir(directory)
    _check_base_model(directory, metadata)
    device = device or pick_device()
    base, _ = load_base(str(metadata["model"]), device)
    legacy = int(metadata.get("format", 1)) < 2
    if not legacy:
        _check_against_base(directory, metadata, base)
    classifier: PooledClassifier = build_classifier(
        base,
        int(metadata["num_labels"]),
        str(metadata["pooling"]),
        seed=0,
        device=device,
        label_names=[str(n) for n in metadata["label_names"]],
        body_attr=LEGACY_BODY_ATTR if legacy else metadata.get("body_attr"),
    )
    try:
        model = PeftModel.from_pretrained(classifier, str(directory), is_trainable=False)
    except Exception as exc:
        # The files passed check_adapter_dir; what peft still refuses (weights of the wrong
        # shape, a config value it rejects) is one line, not its traceback.
        raise AdapterError(
            f"adapter {directory} does not fit model {clip(metadata['model'], 80)}: "
            f"{clip(first_line(exc), 300)}; re-run the job that trained it",
            param="--adapter-job",
        ) from None
    model.to(device).eval()
    return LoadedAdapter(model=model, base=base, metadata=metadata)
