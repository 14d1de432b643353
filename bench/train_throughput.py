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

The GPU recipe (``--recipe gpu``) runs anywhere: its accuracy does not depend on the device,
so it can be checked on a CPU. ``--ops`` counts the operator calls (aten ops, as dispatched to a
kernel: on a GPU each is a kernel launch or more) per training sample, for the original style
and for ftqueue's CPU and GPU recipes. Each count is the difference of two runs that differ only
in their number of training steps, so loading, evaluation and the first step's set-up cancel.

    python bench/train_throughput.py                       # CPU-sized: 2,000 rows, 1 epoch
    python bench/train_throughput.py --device cuda --random-init-bert-base --train-samples 0
    python bench/train_throughput.py --only ftqueue --recipe gpu --train-samples 0 --seeds 0,1,2
    python bench/train_throughput.py --ops                 # operator calls per sample
    python bench/train_throughput.py --device cuda --train-samples 0 --only ftqueue \
        --compile reduce-overhead --jobs 10 --set epochs=1   # compile once, a 10-job sweep

``--fixed-shapes on|off`` and ``--compile MODE`` set FTQUEUE_FIXED_SHAPES and
FTQUEUE_COMPILE_MODE for ftqueue's runs (a compile mode implies fixed shapes); ``--jobs N`` runs
N jobs (seeds seed..seed+N-1) in this one process, as a warm worker runs a sweep: the first
pays the compile, the others reuse it. Each run records its compile seconds and peak memory.
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
    parser.add_argument(
        "--recipe",
        choices=("device", "cpu", "gpu"),
        default="device",
        help="ftqueue's defaults for this device, or those of a CPU or a GPU wherever it runs",
    )
    parser.add_argument(
        "--set",
        default="",
        help="override recipe values of ftqueue's runs, e.g. batch_size=128,lr=2e-3 (a sweep)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed and the original's seed")
    parser.add_argument(
        "--seeds", default=None, help="comma list: ftqueue runs once per seed (default: --seed)"
    )
    parser.add_argument(
        "--ops", action="store_true", help="count operator calls per training sample instead"
    )
    parser.add_argument("--ops-steps", default="2,4", help="the two step counts --ops compares")
    parser.add_argument(
        "--fixed-shapes",
        choices=("auto", "on", "off"),
        default="auto",
        help="ftqueue trains on fixed shapes: auto (on a GPU), on, off",
    )
    parser.add_argument(
        "--compile",
        default="off",
        help="torch.compile mode of ftqueue's training step (FTQUEUE_COMPILE_MODE), e.g. "
        "reduce-overhead, max-autotune-no-cudagraphs; aot_eager checks it on a CPU",
    )
    parser.add_argument(
        "--jobs", type=int, default=0, help="ftqueue runs this many jobs in one warm process"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


class OpCounter:
    """Counts aten operator calls while active (a TorchDispatchMode, entered lazily)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                counter.count += 1
                return func(*args, **(kwargs or {}))

        self.count = 0
        self.mode = _Mode()

    def __enter__(self) -> OpCounter:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


#: bert-base-uncased's config.json, kept here: the hub is not reachable from the benchmark hosts.
BERT_BASE_CONFIG = Path(__file__).with_name("bert-base-uncased-config.json")


def random_bert_base(root: Path) -> str:
    """A BERT-base-sized model with random weights and MiniLM's (bert-base-uncased) vocabulary."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ftqueue.inputs.weights import minilm_path

    torch.manual_seed(0)
    path = root / "bert-base-random"
    BertModel(BertConfig.from_json_file(BERT_BASE_CONFIG)).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return str(path)


def baseline(
    model_path: str,
    data: Any,
    args: argparse.Namespace,
    out: Path,
    *,
    max_steps: int = -1,
    counter: OpCounter | None = None,
) -> dict[str, float]:
    """The original script's recipe: HF Trainer, fp32, batch 16, LoRA r=32/alpha=4 on q/k/v."""
    import contextlib

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

    def encode(split: Any) -> list[dict[str, Any]]:
        # What datasets.map(tokenizer, remove_columns=["text"]) gives, row by row, without
        # needing the datasets package on the GPU host.
        encoded = tokenizer(split.texts, truncation=True, max_length=128)
        return [
            {**{k: v[i] for k, v in encoded.items()}, "label": label}
            for i, label in enumerate(split.labels)
        ]

    train, test = encode(data.train), encode(data.test)
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        num_train_epochs=args.epochs,
        max_steps=max_steps,
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
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with counter or contextlib.nullcontext():
        trainer.train()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    logits = trainer.predict(test).predictions
    predicted = np.asarray(logits).argmax(-1)
    samples = max_steps * 16 if max_steps > 0 else len(train) * args.epochs
    return {
        "samples_per_second": samples / seconds,
        "train_seconds": seconds,
        "test_accuracy": float(accuracy_score(data.test.labels, predicted)),
        "peak_cuda_mb": peak,
    }


def recipe_name(args: argparse.Namespace, device: str) -> str:
    if args.recipe != "device":
        return args.recipe
    return "gpu" if device == "cuda" else "cpu"


def ours(
    model: str,
    data_spec: Any,
    args: argparse.Namespace,
    out: Path,
    *,
    recipe: str,
    seed: int,
    counter: OpCounter | None = None,
    epochs: int | None = None,
) -> dict[str, float]:
    import contextlib

    from ftqueue.kinds.lora import LoraSpec, device_recipe
    from ftqueue.training import lora, run_lora

    values = device_recipe(recipe)
    for item in filter(None, args.set.split(",")):
        key, _, value = item.partition("=")
        values[key.strip()] = float(value) if key.strip() in ("lr", "head_lr") else int(value)
    if epochs is not None:
        values["epochs"] = epochs
    spec = LoraSpec(model=model, data=data_spec, seed=seed, **values)  # type: ignore[arg-type]
    if args.random_init_bert_base:
        # A random body has no useful pooled states; the throughput is what is compared.
        spec = LoraSpec.from_dict({**spec.to_dict(), "pooling": "mean"})
    fit = lora.fit
    if counter is not None:
        # Count inside the training loop only: its epoch-end evaluation is paused below.
        def counted_fit(*a: Any, **kw: Any) -> int:
            *rest, after_epoch = a

            def paused(epoch: int, rung: float | None) -> bool:
                counter.mode.__exit__(None, None, None)
                try:
                    return bool(after_epoch(epoch, rung))
                finally:
                    counter.mode.__enter__()

            with counter or contextlib.nullcontext():
                return fit(*rest, paused, **kw)

        lora.fit = counted_fit  # type: ignore[assignment]
    try:
        outcome = run_lora(spec, adapter_dir=out / f"adapter-{recipe}-{seed}-{time.time_ns()}",
                           cache_dir=out / "cache")  # fmt: skip
    finally:
        lora.fit = fit  # type: ignore[assignment]
    test = next(m for m in outcome.measurements if m.split == "test")
    return {
        "samples_per_second": outcome.stats["samples_per_second"],
        "train_seconds": outcome.stats["train_seconds"],
        "test_accuracy": test.accuracy,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "lr": spec.lr,
        "head_lr": spec.head_lr,
        "dtype": outcome.stats.get("dtype"),
        "fused_optimizer": outcome.stats.get("fused_optimizer"),
        "peak_cuda_mb": outcome.stats.get("peak_cuda_mb"),
        "fixed_shapes": outcome.stats.get("fixed_shapes"),
        "compile_mode": outcome.stats.get("compile_mode"),
        "step_shapes": outcome.stats.get("step_shapes"),
        "compile_seconds": outcome.stats.get("compile_seconds", 0.0),
    }


def count_ops(model: str, data: Any, data_spec: Any, args: argparse.Namespace, root: Path) -> dict:
    """Operator calls per training sample: original style, ftqueue CPU and GPU recipes."""
    import dataclasses

    from ftqueue.kinds.lora import device_recipe
    from ftqueue.specs import resolve_model

    low, high = (int(x) for x in args.ops_steps.split(","))
    rows: dict[str, dict[str, float]] = {}

    def per_sample(label: str, batch: int, run: Any) -> None:
        counts = {}
        for steps in (low, high):
            counter = OpCounter()
            run(steps, counter)
            counts[steps] = counter.count
        per_step = (counts[high] - counts[low]) / (high - low)
        rows[label] = {
            "batch_size": batch,
            "ops_per_step": per_step,
            "ops_per_sample": per_step / batch,
        }
        print(
            f"  {label}: {per_step:,.0f} ops per step, {per_step / batch:,.1f} per sample",
            flush=True,
        )

    path = resolve_model(model)
    per_sample(
        "original (HF Trainer, fp32, batch 16)",
        16,
        lambda steps, counter: baseline(path, data, args, root, max_steps=steps, counter=counter),
    )
    for recipe in ("cpu", "gpu"):
        batch = int(device_recipe(recipe)["batch_size"])

        def run(steps: int, counter: OpCounter, batch: int = batch, recipe: str = recipe) -> None:
            sliced = dataclasses.replace(data_spec, train_samples=steps * batch)
            ours(
                model, sliced, args, root, recipe=recipe, seed=args.seed, counter=counter, epochs=1
            )

        per_sample(f"ftqueue {recipe.upper()} recipe (batch {batch})", batch, run)
    return rows


def print_ops(rows: dict[str, dict[str, float]]) -> None:
    base = next(iter(rows.values()))["ops_per_sample"]
    print(f"\n| {'run':<40} | {'batch':>5} | {'ops/step':>9} | {'ops/sample':>10} | {'fewer':>7} |")
    print(f"|{'-' * 42}|{'-' * 7}|{'-' * 11}|{'-' * 12}|{'-' * 9}|")
    for label, r in rows.items():
        print(
            f"| {label:<40} | {r['batch_size']:>5} | {r['ops_per_step']:>9,.0f} "
            f"| {r['ops_per_sample']:>10,.1f} | {base / r['ops_per_sample']:>6.1f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported, for both runs
    if args.fixed_shapes != "auto" or args.compile != "off":
        if args.compile != "off" and args.fixed_shapes == "off":
            print("--compile needs fixed shapes: drop --fixed-shapes off", file=sys.stderr)
            return 2
        os.environ["FTQUEUE_FIXED_SHAPES"] = "0" if args.fixed_shapes == "off" else "1"
    os.environ["FTQUEUE_COMPILE_MODE"] = args.compile
    from ftqueue.errors import FtqueueError
    from ftqueue.settings import get_settings, reset_settings

    reset_settings()
    try:
        get_settings()
    except FtqueueError as exc:
        print(f"--compile: {exc}", file=sys.stderr)
        return 2
    import statistics

    import torch

    from ftqueue.inputs.labelled import resolve_dataset
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
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{torch.get_num_threads()} CPU threads"
    )
    model_label = "random-init BERT-base" if args.random_init_bert_base else "minilm"
    recipe = recipe_name(args, device)
    report: dict[str, Any] = {
        "device": device, "device_name": name, "model": model_label, "recipe": recipe,
        "train_rows": len(data.train), "test_rows": len(data.test), "epochs_original": args.epochs,
        "torch": torch.__version__,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ftqueue-bench-") as tmp:
        root = Path(tmp)
        model = random_bert_base(root) if args.random_init_bert_base else "minilm"
        print(
            f"model {model_label}, {len(data.train)} train rows, {len(data.test)} test rows, "
            f"{device} ({name}), ftqueue recipe {recipe}",
            flush=True,
        )
        if args.ops:
            rows = count_ops(model, data, data_spec, args, root)
            print_ops(rows)
            report["ops"] = rows
            _write(args.json, report)
            return 0
        results: dict[str, dict[str, Any]] = {}
        if args.only in ("both", "original"):
            results["original (HF Trainer, fp32, batch 16)"] = baseline(
                resolve_model(model), data, args, root
            )
        if args.only in ("both", "ftqueue"):
            if args.jobs:
                seeds = [args.seed + i for i in range(args.jobs)]
            how = "" if args.compile == "off" else f", compiled {args.compile}"
            for seed in seeds:
                label = f"ftqueue {recipe.upper()} {args.set or 'defaults'}{how}, seed {seed}"
                results[label] = ours(model, data_spec, args, root, recipe=recipe, seed=seed)
                print(f"  {label}: {results[label]['samples_per_second']:.1f} samples/s, "
                      f"compile {results[label]['compile_seconds']:.1f} s", flush=True)  # fmt: skip
    print(f"\n| {'run':<40} | {'train samples/s':>15} | {'train wall s':>12} | {'test acc':>8} |")
    print(f"|{'-' * 42}|{'-' * 17}|{'-' * 14}|{'-' * 10}|")
    for label, r in results.items():
        print(
            f"| {label:<40} | {r['samples_per_second']:>15.1f} | {r['train_seconds']:>12.1f} "
            f"| {r['test_accuracy']:>8.4f} |"
        )
    report["runs"] = results
    mine = [r for label, r in results.items() if label.startswith("ftqueue")]
    if mine:
        report.update(compile_summary(mine, args.compile))
    if mine:
        first = mine[0]
        print(
            f"\nftqueue {recipe} recipe: batch {first['batch_size']}, lr {first['lr']:g}, head lr "
            f"{first['head_lr']:g}, {first['epochs']} epochs, dtype {first['dtype']}, "
            f"fused AdamW {first['fused_optimizer']}"
        )
        accuracies = [r["test_accuracy"] for r in mine]
        mean = statistics.fmean(accuracies)
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        report["ftqueue_test_accuracy_mean"] = mean
        report["ftqueue_test_accuracy_sd"] = spread
        print(f"ftqueue test accuracy: {mean:.4f} +- {spread:.4f} over {len(accuracies)} seed(s)")
    original = results.get("original (HF Trainer, fp32, batch 16)")
    if original and mine:
        speed = statistics.fmean(r["samples_per_second"] for r in mine)
        ratio = speed / original["samples_per_second"]
        report["throughput_ratio"] = ratio
        report["accuracy_difference"] = (
            report["ftqueue_test_accuracy_mean"] - original["test_accuracy"]
        )
        print(f"throughput ratio (ftqueue / original): {ratio:.2f}x")
        print(f"accuracy difference (ftqueue - original): {report['accuracy_difference']:+.4f}")
    _write(args.json, report)
    return 0


def compile_summary(runs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Compile seconds of the first job, and per job over all of them (a warm worker's sweep);
    throughput of the first job and of the later (warm) ones; the largest peak memory."""
    import statistics

    compile_total = sum(float(r.get("compile_seconds") or 0.0) for r in runs)
    warm = runs[1:] or runs
    peaks = [r["peak_cuda_mb"] for r in runs if r.get("peak_cuda_mb") is not None]
    return {
        "compile_mode": mode,
        "jobs": len(runs),
        "compile_seconds_first_job": float(runs[0].get("compile_seconds") or 0.0),
        "compile_seconds_per_job": compile_total / len(runs),
        "samples_per_second_first_job": runs[0]["samples_per_second"],
        "samples_per_second_warm": statistics.fmean(r["samples_per_second"] for r in warm),
        "peak_cuda_mb": max(peaks) if peaks else None,
    }


def _write(path: Path | None, report: dict[str, Any]) -> None:
    import json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
