"""Exporting an adapter as a standalone transformers model: LoRA merged into the weights.

The export is the stock class of the model (``BertForSequenceClassification`` for BERT), so
``transformers.pipeline("text-classification", model=DIR)`` loads it with no ftqueue and no
``trust_remote_code``. Only heads a stock class computes can be exported; before the files
are written, the exported model's logits are checked against the adapter's own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from ftqueue.artifacts.publishing import (
    check_adapter_dir,
    check_exportable,
    check_new_dir,
    publish_new_dir,
)
from ftqueue.core.files import share_tree
from ftqueue.errors import AdapterError, FtqueueError
from ftqueue.training.adapters import save_tokenizer
from ftqueue.training.cards import write_export_card
from ftqueue.training.modeling import classifier_of, hub_id, stock_class_name

#: The exported model must give the adapter's logits to within this (float32 rounding).
LOGITS_TOLERANCE = 1e-4
_PROBE = [
    "a gripping, beautifully acted film",
    "dull, far too long and never funny",
    "it is a movie",
]
_PAIR_PROBE = ["the acting is superb", "nobody laughed once", "a film about a movie"]


def _stock_model(classifier: Any, metadata: dict[str, Any], job_id: int) -> Any:
    """The stock classification model holding the merged classifier's weights."""
    config = copy.deepcopy(classifier.config)
    name = stock_class_name(config, str(metadata["pooling"]))
    if name is None:
        raise AdapterError(
            f"job {job_id}'s adapter has a --pooling {metadata['pooling']} head on a "
            f"{config.model_type} model, which no stock transformers class computes: train it "
            "with --pooling pooler on a BERT-style model to export it"
        )
    names = [str(n) for n in metadata["label_names"]]
    config.architectures = [name]
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    config.name_or_path = hub_id(str(metadata["model"])) or ""
    stock = AutoModelForSequenceClassification.from_config(config)
    prefix, attr = stock.base_model_prefix, classifier.body_attr
    state = {
        (prefix + key[len(attr) :] if key.startswith(attr + ".") else key): value
        for key, value in classifier.state_dict().items()
    }
    stock.load_state_dict(state, strict=True)
    return stock.eval()


def _check_same_logits(
    classifier: Any, stock: Any, tokenizer: Any, max_length: int, pairs: bool
) -> None:
    batch = tokenizer(
        _PROBE,
        _PAIR_PROBE if pairs else None,
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )
    types = batch.get("token_type_ids") if pairs else None
    with torch.inference_mode():
        ours = classifier(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=types,
        )
        theirs = stock(**batch)
    gap = float((ours.logits - theirs.logits).abs().max())
    if gap > LOGITS_TOLERANCE:
        raise FtqueueError(
            f"the exported model's logits differ from the adapter's by {gap:.2g}: this is a "
            "bug in ftqueue's export; please report it with the job's ftqueue_adapter.json"
        )


def export_adapter(adapter_dir: Path, out_dir: Path, *, job_id: int) -> Path:
    """Write the merged model, its tokenizer and a card into ``out_dir``, whole or not at all."""
    from ftqueue.training.adapters import load_adapter

    metadata = check_adapter_dir(adapter_dir)
    check_exportable(metadata, job_id)
    check_new_dir(out_dir)
    loaded = load_adapter(adapter_dir, device=torch.device("cpu"))
    classifier = classifier_of(loaded.model.merge_and_unload()).eval()
    stock = _stock_model(classifier, metadata, job_id)
    max_length = int(metadata["max_length"])
    pairs = bool(metadata.get("text_pair"))
    _check_same_logits(classifier, stock, loaded.base.tokenizer, max_length, pairs)

    def write(staging: Path) -> None:
        stock.save_pretrained(str(staging), safe_serialization=True)
        save_tokenizer(loaded.base, staging, max_length)
        write_export_card(staging, metadata, hub_id(str(metadata["model"])))
        share_tree(staging)

    # Written beside out_dir, then renamed to it only if no one else created it meanwhile.
    return publish_new_dir(out_dir, write, param="DIR")
