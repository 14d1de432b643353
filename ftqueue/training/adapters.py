"""Saving and loading LoRA adapters: safetensors weights, peft config, ftqueue metadata last."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from ftqueue.artifacts import ADAPTER_METADATA, ADAPTER_WEIGHTS, check_adapter_dir
from ftqueue.errors import AdapterError, first_line
from ftqueue.files import write_json_atomic
from ftqueue.training.modeling import (
    Base,
    PooledClassifier,
    build_classifier,
    load_base,
    pick_device,
)

METADATA_FORMAT = 1
_VERSIONED = ("ftqueue", "torch", "transformers", "peft", "datasets", "scikit-learn", "safetensors")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def save_adapter(model: PeftModel, directory: Path, metadata: dict[str, Any]) -> None:
    """Weights and config first, metadata last: its presence marks the adapter complete."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise AdapterError(f"peft did not write {ADAPTER_WEIGHTS} into {directory}")
    payload = {"format": METADATA_FORMAT, "versions": library_versions(), **metadata}
    write_json_atomic(directory / ADAPTER_METADATA, payload)


@dataclass
class LoadedAdapter:
    """A ready-to-evaluate classifier with its adapter applied, and the adapter's metadata."""

    model: PeftModel
    base: Base
    metadata: dict[str, Any]

    @property
    def num_labels(self) -> int:
        return int(self.metadata["num_labels"])


def load_adapter(directory: Path, *, device: torch.device | None = None) -> LoadedAdapter:
    """Load a published adapter onto its (cached) base model, in eval mode.

    Refuses pickle weights and incomplete directories before anything is read.
    """
    metadata = check_adapter_dir(directory)
    device = device or pick_device()
    base, _ = load_base(str(metadata["model"]), device)
    classifier: PooledClassifier = build_classifier(
        base, int(metadata["num_labels"]), str(metadata["pooling"]), seed=0, device=device
    )
    try:
        model = PeftModel.from_pretrained(classifier, str(directory), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise AdapterError(
            f"adapter {directory} does not fit model {metadata['model']}: {first_line(exc)}",
            param="--adapter-job",
        ) from None
    model.to(device).eval()
    return LoadedAdapter(model=model, base=base, metadata=metadata)
