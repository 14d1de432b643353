"""Model cards (README.md) for adapters and exported models: what it is and how to load it.

A card names models and data the way others can find them (hub ids, aliases, file names),
never by a path of the machine that wrote it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData

from ftqueue.core.text import printable
from ftqueue.specs import SPLITS

if TYPE_CHECKING:
    from ftqueue.inputs.labelled import LoadedData
    from ftqueue.specs import DataSpec, Spec

#: Spec fields that say what a job read, not how it trained.
_NOT_HYPER = ("data", "model", "model_fingerprint", "eval_batch_size")
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-!|~])")


def public_name(value: str) -> str:
    """A hub id or alias as it is; a local path as its last component."""
    if value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value:
        return PurePath(value).name or value
    return value


def md(value: object) -> str:
    """User text as inert Markdown on one line: no HTML, no emphasis, links or cell breaks."""
    text = " ".join(printable(value).splitlines())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))


def data_summary(data: LoadedData, spec: DataSpec) -> dict[str, Any]:
    """What a card says of the data: each split's source (by its public name), how it was
    made, and the rows used of the rows it had; the columns read."""
    splits = {}
    for name in SPLITS:
        splits[name] = {
            "source": public_name(data.origins.get(name, data.source)),
            "carved": name in data.carved,
            "rows": len(data.split(name)),
            "available": data.available.get(name, len(data.split(name))),
        }
    return {
        "splits": splits,
        "split_seed": spec.split_seed,
        "text_column": spec.text_column,
        "text_pair_column": spec.text_pair_column,
        "label_column": spec.label_column,
    }


def hyperparameters(spec: Spec) -> dict[str, Any]:
    """The spec's settings as trained (after the device filled in what it left open)."""
    values = spec.to_dict()
    return {k: v for k, v in values.items() if k not in _NOT_HYPER and v is not None}


def _metrics(metadata: dict[str, Any]) -> str:
    metrics = metadata.get("metrics", [])
    kept = metadata.get("selected_epoch")
    chosen = [m for m in metrics if kept is None or m["epoch"] == kept]
    rows = [
        f"| {m['split']} | {m['epoch']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
        f"{m['loss']:.4f} | {m['n_examples']:,} |"
        for m in chosen
    ]
    if not rows:
        return ""
    head = "| split | epoch | accuracy | macro F1 | loss | rows |\n|---|---:|---:|---:|---:|---:|"
    title = "Results when it was trained"
    if kept is not None:
        title = f"Results at the kept epoch ({kept})"
    body = f"\n## {title}\n\n" + head + "\n" + "\n".join(rows) + "\n"
    per_epoch = [m for m in metrics if m["split"] == "validation"]
    if kept is not None and len(per_epoch) > 1:
        listed = ", ".join(f"epoch {m['epoch']}: {m['accuracy']:.4f}" for m in per_epoch)
        body += f"\nValidation accuracy by epoch: {listed}.\n"
    return body


def _data(metadata: dict[str, Any]) -> str:
    """The data section: one row per split, or the dataset's name for adapters without it."""
    data = metadata.get("data")
    if not isinstance(data, dict):
        return ""
    lines = ["| split | source | rows used |", "|---|---|---:|"]
    # In train, validation, test order: the metadata file's keys come back sorted.
    for name in SPLITS:
        split = data["splits"].get(name)
        if split is None:
            continue
        source = md(split["source"])
        if split["carved"]:
            source = f"a seeded 10% of {source} (split seed {data['split_seed']})"
        rows = f"{split['rows']:,}"
        if split["available"] != split["rows"]:
            rows += f" of {split['available']:,}"
        lines.append(f"| {name} | {source} | {rows} |")
    columns = f"text column {md(data['text_column'])}"
    if data.get("text_pair_column"):
        columns += f", second text column {md(data['text_pair_column'])}"
    columns += f", label column {md(data['label_column'])}"
    return "\n## Data\n\n" + "\n".join(lines) + f"\n\nColumns read: {columns}.\n"


def _hyperparameters(metadata: dict[str, Any]) -> str:
    values = metadata.get("hyperparameters")
    if not isinstance(values, dict) or not values:
        return ""
    lines = ["| setting | value |", "|---|---|"]
    for name, value in values.items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, float):
            value = f"{value:g}"
        lines.append(f"| {md(name)} | {md(value)} |")
    return "\n## Hyper-parameters as trained\n\n" + "\n".join(lines) + "\n"


def _summary(metadata: dict[str, Any], base: str) -> str:
    spec = metadata.get("spec", {})
    data = spec.get("data", {}) if isinstance(spec, dict) else {}
    labels = ", ".join(f"{i} = {md(name)}" for i, name in enumerate(metadata["label_names"]))
    where = ""
    if not isinstance(metadata.get("data"), dict):  # adapters from before the Data section
        where = f"Data: {md(public_name(str(data.get('dataset', '?'))))}. "
    inputs = (
        "Inputs: sentence pairs (a text and its text_pair, tokenized together). "
        if metadata.get("text_pair")
        else ""
    )
    return (
        f"Base model: `{base}`. {where}Labels: {labels}. {inputs}"
        f"Head: `--pooling {metadata['pooling']}`; texts are cut at "
        f"{metadata['max_length']} tokens.\n"
    )


def _details(metadata: dict[str, Any]) -> str:
    return _data(metadata) + _hyperparameters(metadata) + _metrics(metadata)


def write_adapter_card(directory: Path, metadata: dict[str, Any], base: str | None) -> None:
    """README.md of a LoRA adapter directory."""
    name = base or public_name(str(metadata["model"]))
    stock = metadata.get("stock_class")
    if stock:
        labels = [str(n) for n in metadata["label_names"]]
        id2label = dict(enumerate(labels))
        label2id = {n: i for i, n in enumerate(labels)}
        load = (
            "It loads with stock peft and transformers, no ftqueue needed:\n\n```python\n"
            "from peft import AutoPeftModelForSequenceClassification\n"
            "from transformers import AutoTokenizer\n\n"
            "model = AutoPeftModelForSequenceClassification.from_pretrained(\n"
            f'    "THIS_DIR", id2label={id2label!r}, label2id={label2id!r}\n)\n'
            'tokenizer = AutoTokenizer.from_pretrained("THIS_DIR")\n```\n'
        )
    else:
        load = (
            f"Its head (`--pooling {metadata['pooling']}`) is not one that a stock "
            "transformers class computes: use it with `ftqueue predict`, "
            "`ftqueue submit predict` or `ftqueue submit evaluate --adapter-job`.\n"
        )
    body = (
        f"# LoRA adapter for text classification on {name}\n\n"
        f"Trained by ftqueue. {_summary(metadata, name)}\n"
        f"{load}{_details(metadata)}"
    )
    _save_card(directory, base, "peft", ["lora", "text-classification", "ftqueue"], body)


def write_export_card(directory: Path, metadata: dict[str, Any], base: str | None) -> None:
    """README.md of a standalone model exported from an adapter (LoRA merged in)."""
    name = base or public_name(str(metadata["model"]))
    example = (
        'classify({"text": "A man is playing a guitar.", "text_pair": "Someone makes music."}, '
        "truncation=True)"
        if metadata.get("text_pair")
        else 'classify(["a gripping, beautifully acted film"], truncation=True)'
    )
    body = (
        f"# {name} fine-tuned for text classification (LoRA merged)\n\n"
        f"Exported by ftqueue from a LoRA adapter. {_summary(metadata, name)}\n"
        "```python\nfrom transformers import pipeline\n\n"
        'classify = pipeline("text-classification", model="THIS_DIR")\n'
        f"{example}\n```\n"
        f"{_details(metadata)}"
    )
    tags = ["text-classification", "lora-merged", "ftqueue"]
    _save_card(directory, base, "transformers", tags, body)


def _save_card(directory: Path, base: str | None, library: str, tags: list[str], body: str) -> None:
    """README.md: the hub's metadata block, then ``body``."""
    data = ModelCardData(
        base_model=base, library_name=library, pipeline_tag="text-classification", tags=tags
    )
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(directory / "README.md")
