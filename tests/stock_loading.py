"""Load an ftqueue adapter or export with stock libraries only, and label rows with it.

Run as a script by the tests, in a fresh interpreter that never imports ftqueue: what a user
of the adapter, on a machine without ftqueue, would do. docs/guides/adapters.md shows them.

    python tests/stock_loading.py ROUTE MODEL_DIR ROWS_JSONL [BASE_MODEL]

ROUTE is ``peft`` (PeftModel on a stock base given as BASE_MODEL), ``auto-peft``
(AutoPeftModelForSequenceClassification, base found from the adapter's config),
``transformers`` (AutoModelForSequenceClassification on the adapter directory) or
``pipeline`` (transformers.pipeline on an exported directory). Prints one JSON object:
accuracy, predicted class per row, logits (not for the pipeline), label names, and whether
ftqueue was imported.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _rows(path: str) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def _label_names(adapter: str) -> list[str]:
    with open(f"{adapter}/ftqueue_adapter.json", encoding="utf-8") as handle:
        return [str(n) for n in json.load(handle)["label_names"]]


def _model(route: str, adapter: str, base: str | None) -> Any:
    from transformers import AutoModelForSequenceClassification

    labels = _label_names(adapter)
    names = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    if route == "peft":
        from peft import PeftModel

        stock = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), **names
        )
        return PeftModel.from_pretrained(stock, adapter)
    if route == "auto-peft":
        from peft import AutoPeftModelForSequenceClassification

        return AutoPeftModelForSequenceClassification.from_pretrained(adapter, **names)
    return AutoModelForSequenceClassification.from_pretrained(adapter, **names)


def _logits(model: Any, tokenizer: Any, texts: list[str]) -> list[list[float]]:
    import torch

    out: list[list[float]] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64], padding=True, truncation=True, return_tensors="pt"
            )
            out += model(**batch).logits.tolist()
    return out


def main(route: str, model_dir: str, rows_path: str, base: str | None = None) -> None:
    texts, labels = _rows(rows_path)
    result: dict[str, Any] = {}
    if route == "pipeline":
        from transformers import pipeline

        classify = pipeline("text-classification", model=model_dir)
        outputs = classify(texts, truncation=True)
        label2id = classify.model.config.label2id
        predicted = [int(label2id[o["label"]]) for o in outputs]
        result["label_names"] = [
            classify.model.config.id2label[i] for i in sorted(label2id.values())
        ]
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = _model(route, model_dir, base)
        logits = _logits(model, tokenizer, texts)
        predicted = [max(range(len(row)), key=row.__getitem__) for row in logits]
        result["logits"] = logits
        result["label_names"] = [model.config.id2label[i] for i in range(len(logits[0]))]
    correct = sum(p == y for p, y in zip(predicted, labels, strict=True))
    result.update(
        accuracy=correct / len(labels),
        predicted=predicted,
        ftqueue_imported=any(name.split(".")[0] == "ftqueue" for name in sys.modules),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
