"""Using a LoRA run's adapter: its metadata, a quick try on a few texts, an exported model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftqueue.core.text import clip
from ftqueue.errors import SpecError
from ftqueue.kinds import rows
from ftqueue.store import db, reads


def adapters(*, job_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each job's adapter metadata (model, max length, labels), or AdapterError saying why not."""
    from ftqueue.artifacts import publishing

    db.ensure_ready()
    return {jid: publishing.check_adapter_dir(rows.adapter_dir_of(jid)) for jid in job_ids}


def adapter_model(*, job_ids: Sequence[int]) -> str:
    """The one model the adapters of these jobs were trained on, or SpecError."""
    from ftqueue.kinds.evaluate import EvaluateSpec
    from ftqueue.specs import field_param

    if not job_ids:
        raise SpecError(
            "give --model, or --adapter-job to evaluate a LoRA job's adapter", param="--model"
        )
    bounds = field_param(EvaluateSpec, "adapter_job")
    assert bounds is not None
    for job_id in job_ids:
        bounds.check("adapter_job", job_id)  # the spec's own range, before any query
    db.ensure_ready()
    found = reads.models_of(job_ids)
    for job_id in job_ids:
        if job_id not in found:
            rows.adapter_dir_of(job_id)  # says "no such job", and what to look at instead
    models = set(found.values())
    if len(models) != 1:
        listed = ", ".join(f"{job_id} on {clip(found[job_id], 60)}" for job_id in job_ids)
        raise SpecError(
            f"the adapters given were trained on different models ({listed}): give --model, "
            "or evaluate them separately",
            param="--adapter-job",
        )
    return models.pop()


def file_sha256(*, path: Path) -> str:
    """sha256 of a file of texts to label, checked readable: ties a job to its input."""
    from ftqueue.inputs import unlabelled

    return unlabelled.file_sha256(path)


def predict(*, job_id: int, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Label texts in this process with job ``job_id``'s adapter: text, label, probabilities."""
    from ftqueue.artifacts import publishing
    from ftqueue.kinds import predict as predict_kind

    db.ensure_ready()
    adapter = rows.adapter_dir_of(job_id, flag="job")
    if publishing.check_adapter_dir(adapter).get("text_pair"):
        raise SpecError(
            f"job {job_id}'s adapter was trained on sentence pairs: label pairs from a file with "
            f"ftqueue submit predict --adapter-job {job_id} --input FILE --text-pair-column NAME",
            param="TEXT",
        )
    labelled = predict_kind.label_texts(adapter, list(texts))
    names = labelled.label_names
    return [
        {
            "text": text,
            "label": label,
            "probabilities": dict(zip(names, map(float, p), strict=True)),
        }
        for text, label, p in zip(texts, labelled.labels, labelled.probabilities, strict=True)
    ]


@dataclass(frozen=True)
class Fetched:
    """Where `fetch` wrote a job's outputs, from where, and the files it wrote."""

    job_id: int
    source: str
    directory: Path
    files: list[str]


def fetch(*, job_id: int, directory: Path | None = None) -> Fetched:
    """Download job ``job_id``'s outputs into the new ``directory`` (default ``job-<id>``),
    each file checked against the manifest of an object store; never overwrites anything."""
    import shutil

    from ftqueue.artifacts import objects, publishing

    directory = directory if directory is not None else Path(f"job-{job_id}")
    publishing.check_new_dir(directory, param="DEST")
    publishing.check_can_create(directory, param="DEST")
    db.ensure_ready()
    path = rows.output_of(job_id)
    root = rows.object_root()

    def write(staging: Path) -> None:
        if root is not None and not Path(path).is_absolute():
            objects.download_dir(root, path, staging)
        else:
            shutil.copytree(rows.local_output(path), staging, dirs_exist_ok=True)

    out = publishing.publish_new_dir(directory, write, param="DEST")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return Fetched(job_id, rows.output_location(path), out, files)


@dataclass(frozen=True)
class Export:
    """Where `export` wrote a job's model, its label names, and its hub URL if pushed."""

    job_id: int
    directory: Path
    label_names: list[str]
    hub_url: str | None = None


def export(
    *, job_id: int, directory: Path, repo: str | None = None, private: bool = False
) -> Export:
    """Write job ``job_id``'s model, LoRA merged in, into the new ``directory``; then push it
    to the hub repository ``repo`` if given. Everything is checked before any work."""
    from ftqueue.artifacts import publishing
    from ftqueue.inputs import hub
    from ftqueue.kinds import lora

    if repo is not None:
        hub.check_repo(repo)
    publishing.check_new_dir(directory, param="DIR")
    publishing.check_can_create(directory, param="DIR")
    db.ensure_ready()
    adapter = rows.adapter_dir_of(job_id, flag="job")
    metadata = publishing.check_adapter_dir(adapter)
    publishing.check_exportable(metadata, job_id)
    out = lora.export_model(adapter, directory, job_id=job_id)
    url = None
    if repo is not None:
        url = hub.push(out, repo, private=private, message=f"ftqueue export of job {job_id}")
    return Export(job_id, out, [str(n) for n in metadata["label_names"]], url)
