"""Prediction throughput: a predict job against transformers.pipeline with its defaults.

Both label the same rows of movie-snippets with the same adapter, on the same CPU, in one
run. The adapter is trained first (the default recipe on a slice of the data, 1 epoch, the
adapter's learning rate raised to 2e-3 for so few steps) by an eager `ftqueue submit lora`,
and exported with `ftqueue export`; the baseline is what a user of the export would write
first: ``pipeline("text-classification", model=DIR)`` called on the list of texts with its
defaults (one text per forward pass) and ``truncation=True``. The predict job runs as
`ftqueue submit predict` does (eager: in a process of its own, like a worker); its rows/s is
the one it records: rows over the time spent tokenizing, running the model and writing
predictions.parquet and .csv, model loading excluded, as it is for the pipeline (built before
the clock starts). Labels are checked to agree row for row.

    python bench/predict_throughput.py                # 4,000 rows
    python bench/predict_throughput.py --rows 0       # every movie-snippets row (10,568)
    python bench/predict_throughput.py --rows 0 --device cuda --json predict.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000, help="0: every movie-snippets row")
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument(
        "--pipeline-batch-size",
        type=int,
        default=64,
        help="also time the pipeline with this batch size, for context (0: skip)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the pipeline runs (the job takes what its process sees: a GPU if any)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def ftqueue(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run an ftqueue command with --json in its own process; its parsed output."""
    out = subprocess.run(
        [sys.executable, "-m", "ftqueue", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"ftqueue {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def texts(rows: int) -> list[str]:
    from ftqueue.inputs.labelled import resolve_dataset
    from ftqueue.specs import DataSpec

    data = resolve_dataset(DataSpec(dataset="movie-snippets"))
    every = data.train.texts + data.validation.texts + data.test.texts
    return every if rows <= 0 else every[:rows]


def time_pipeline(
    model_dir: Path, rows: list[str], batch_size: int | None, device: str = "cpu"
) -> tuple[float, list]:
    import torch
    from transformers import pipeline

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    classify = pipeline("text-classification", model=str(model_dir), device=device)
    options: dict[str, Any] = {"truncation": True}
    if batch_size:
        options["batch_size"] = batch_size
    classify(rows[:8], **options)  # warm-up, as the job's first batch is not timed apart
    started = time.perf_counter()
    outputs = classify(rows, **options)
    return time.perf_counter() - started, [o["label"] for o in outputs]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="ftqueue-bench-predict-"))
    env = {**os.environ, "FTQUEUE_HOME": str(root / "home"), "FTQUEUE_EAGER": "1"}
    env = {k: v for k, v in env.items() if k != "FTQUEUE_DATABASE_URL"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the job compares with the pipeline on the same CPU
    subprocess.run([sys.executable, "-m", "ftqueue", "db", "upgrade"], env=env, check=True)
    print("training the adapter (default recipe, 1 epoch) ...", flush=True)
    trained = ftqueue(
        env, "submit", "lora", "--model", "minilm", "--dataset", "movie-snippets",
        "--train-samples", str(args.train_samples), "--epochs", "1", "--lr", "2e-3",
    )  # fmt: skip
    adapter_job = trained["jobs"][0]["id"]
    ftqueue(env, "export", str(adapter_job), str(root / "export"))
    rows = texts(args.rows)
    source = root / "rows.csv"
    pd.DataFrame({"text": rows}).to_csv(source, index=False)

    print(f"labelling {len(rows):,} rows with a predict job ...", flush=True)
    started = time.perf_counter()
    submitted = ftqueue(
        env, "submit", "predict", "--adapter-job", str(adapter_job), "--input", str(source)
    )
    job_wall = time.perf_counter() - started
    job = ftqueue(env, "show", str(submitted["jobs"][0]["id"]))
    stats = job["stats"]
    ours = pd.read_parquet(job["output_files"][0])["label"].tolist()

    print("labelling them with transformers.pipeline (defaults) ...", flush=True)
    seconds, theirs = time_pipeline(root / "export", rows, None, args.device)
    table = [
        ("predict job (ftqueue)", stats["rows"] / stats["rows_per_second"], "recorded by the job"),
        ("pipeline, defaults", seconds, "baseline"),
    ]
    if args.pipeline_batch_size:
        batched, _ = time_pipeline(root / "export", rows, args.pipeline_batch_size, args.device)
        table.append((f"pipeline, batch_size={args.pipeline_batch_size}", batched, "context"))
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(rows)

    where = f"{len(os.sched_getaffinity(0))} CPU threads"
    if args.device == "cuda":
        import torch

        where = torch.cuda.get_device_name()
    print(f"\n{len(rows):,} rows, {where}, minilm")
    print("| route | seconds | rows/s | vs pipeline defaults | note |\n|---|---:|---:|---:|---|")
    for name, secs, note in table:
        print(f"| {name} | {secs:.2f} | {len(rows) / secs:,.0f} | {seconds / secs:.2f}x | {note} |")
    phases = {k: round(v, 2) for k, v in stats["phase_seconds"].items() if v}
    print(
        f"\npredict job: {job_wall:.1f} s from submit to exit (process start and model load "
        f"included); phase seconds {json.dumps(phases)}"
    )
    print(f"labels agreeing row for row with the pipeline's: {agree:.4%}")
    ratio = seconds / table[0][1]
    print(f"ratio: {ratio:.2f}x (target >= 3x): {'met' if ratio >= 3 else 'NOT met'}")
    if args.json is not None:
        report = {
            "rows": len(rows),
            "device": where,
            "job_device": stats.get("device"),
            "routes": {name: {"seconds": secs, "rows_per_second": len(rows) / secs}
                       for name, secs, _ in table},
            "ratio_vs_pipeline_defaults": ratio,
            "labels_agree": agree,
            "phase_seconds": phases,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
