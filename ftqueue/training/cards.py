"""Model cards (README.md) for adapters and exported models: what it is and how to load it.

A card names models and data the way others can find them (hub ids, aliases, file names),
never by a path of the machine that wrote it.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

from huggingface_hub import ModelCard, ModelCardData


def public_name(value: str) -> str:
    """A hub id or alias as it is; a local path as its last component."""
    if value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value:
        return PurePath(value).name or value
    return value


def _metrics(metadata: dict[str, Any]) -> str:
    rows = [
        f"| {m['split']} | {m['epoch']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
        f"{m['loss']:.4f} | {m['n_examples']} |"
        for m in metadata.get("metrics", [])
    ]
    if not rows:
        return ""
    head = "| split | epoch | accuracy | macro F1 | loss | rows |\n|---|---:|---:|---:|---:|---:|"
    return "\n## Results when it was trained\n\n" + head + "\n" + "\n".join(rows) + "\n"


def _summary(metadata: dict[str, Any], base: str) -> str:
    spec = metadata.get("spec", {})
    data = spec.get("data", {}) if isinstance(spec, dict) else {}
    labels = ", ".join(f"{i} = {name}" for i, name in enumerate(metadata["label_names"]))
    return (
        f"Base model: `{base}`. Data: `{public_name(str(data.get('dataset', '?')))}`. "
        f"Labels: {labels}. Head: `--pooling {metadata['pooling']}`; texts are cut at "
        f"{metadata['max_length']} tokens.\n"
    )


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
        f"{load}{_metrics(metadata)}"
    )
    _save_card(directory, base, "peft", ["lora", "text-classification", "ftqueue"], body)


def write_export_card(directory: Path, metadata: dict[str, Any], base: str | None) -> None:
    """README.md of a standalone model exported from an adapter (LoRA merged in)."""
    name = base or public_name(str(metadata["model"]))
    body = (
        f"# {name} fine-tuned for text classification (LoRA merged)\n\n"
        f"Exported by ftqueue from a LoRA adapter. {_summary(metadata, name)}\n"
        "```python\nfrom transformers import pipeline\n\n"
        'classify = pipeline("text-classification", model="THIS_DIR")\n'
        'classify(["a gripping, beautifully acted film"], truncation=True)\n```\n'
        f"{_metrics(metadata)}"
    )
    tags = ["text-classification", "lora-merged", "ftqueue"]
    _save_card(directory, base, "transformers", tags, body)


def _save_card(directory: Path, base: str | None, library: str, tags: list[str], body: str) -> None:
    """README.md: the hub's metadata block, then ``body``."""
    data = ModelCardData(
        base_model=base, library_name=library, pipeline_tag="text-classification", tags=tags
    )
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(directory / "README.md")
