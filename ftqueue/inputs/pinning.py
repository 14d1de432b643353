"""What a job reads, pinned when it is submitted: local data files and model directories become
resolved absolute paths with a content fingerprint (torch-free).

A pinned spec is what is hashed for de-duplication and what the worker re-reads, so the same
relative name from another directory, or a file edited in place, is a new job rather than
"identical to job N"; and the worker refuses to train on a file or a model directory whose
content no longer matches (``data.resolve_dataset``, ``specs.validate_against_model``). Hub ids
and the offline aliases are left as named.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

from ftqueue.core.files import stat_or_none
from ftqueue.core.text import clip
from ftqueue.errors import DatasetError, SpecError
from ftqueue.inputs import fingerprint, labelled, weights
from ftqueue.specs import DATASET_ALIASES, SPLITS, DataSpec, JobSpec

S = TypeVar("S", bound=JobSpec)


def pin_data(spec: DataSpec) -> DataSpec:
    """The data spec with its local files as absolute paths and their content fingerprint."""
    files = labelled.local_files(spec)
    if files is None:
        return spec
    for path in files.values():
        labelled.check_labelled_file(path)
    digests = {}
    for name, path in files.items():
        try:
            digests[name] = fingerprint.file_digest(path)
        except OSError as exc:
            raise DatasetError(
                f"cannot read {clip(path)}: {exc.strerror}", param="--dataset"
            ) from None
    return dataclasses.replace(
        spec, dataset=_absolute(files), fingerprint=fingerprint.combine(digests)
    )


def _absolute(files: dict[str, Path]) -> str:
    absolute = {name: str(path.resolve()) for name, path in files.items()}
    if "file" in absolute:
        return absolute["file"]
    # In the canonical split order, so that the order given does not make another job.
    return ",".join(f"{name}={absolute[name]}" for name in SPLITS if name in absolute)


def stored_dataset(value: str) -> str:
    """A dataset named on the command line as job rows store it (local files pinned), for
    filters such as ``list --dataset data.csv``."""
    try:
        files = labelled.local_files(DataSpec(dataset=value))
    except (DatasetError, SpecError):
        return value
    if files is None or not all(stat_or_none(path) for path in files.values()):
        return value
    return _absolute(files)


def stored_model(value: str) -> str:
    """A model named on the command line as job rows store it (a local directory resolved)."""
    return str(Path(value).expanduser().resolve()) if weights.is_local_model(value) else value


def pin_model(model: str) -> tuple[str, str | None]:
    """A local model directory as its resolved path and fingerprint; other models as named."""
    if not weights.is_local_model(model):
        return model, None
    resolved = weights.resolve_model(model)
    return resolved, weights.model_fingerprint(Path(resolved))


def pin(spec: S, *, model: tuple[str, str | None], data_spec: DataSpec | None) -> S:
    """``spec`` with its model and (labelled) data replaced by their pinned forms."""
    name, model_fingerprint = model
    changes: dict[str, object] = {"model": name}
    if data_spec is not None:
        changes["data"] = data_spec
    if model_fingerprint is not None and hasattr(spec, "model_fingerprint"):
        changes["model_fingerprint"] = model_fingerprint
    if all(getattr(spec, key) == value for key, value in changes.items()):
        return spec  # already pinned: a grid's specs would each be validated once more
    return spec.replace(**changes)


def hub_dataset(spec: DataSpec) -> str | None:
    """The hub dataset id a data spec names, or None for local files and the alias."""
    if spec.dataset in DATASET_ALIASES or labelled.local_files(spec) is not None:
        return None
    return spec.dataset
