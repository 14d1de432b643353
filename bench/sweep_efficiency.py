"""Sweep efficiency: the same search space run as a full grid and with ASHA early stopping.

Both sweeps run in one process tree, one after the other, on the demo model and data
(minilm, movie-snippets, a training subset), eagerly (`FTQUEUE_EAGER=1`: one trial at a time,
as one worker would), with the same seeds. The grid trains every configuration for every
epoch; ASHA stops a trial at a rung (by default half an epoch, one epoch and two epochs)
unless its validation accuracy ranks in the top 1/eta of the trials that reached that rung
(judged once eta trials have arrived there). Each sweep's best configuration is picked by
validation accuracy and reported with its test accuracy at its selected (best) epoch. The
target: ASHA's best within 0.5 accuracy points of the grid's, for at most 40% of the grid's
train time (the sum of the trials' train_seconds, loading and evaluation excluded).

    python bench/sweep_efficiency.py                  # 18 configurations, 3 epochs, 1,500 rows
    python bench/sweep_efficiency.py --small          # 4 configurations, 300 rows: a smoke run
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

import yaml

FULL_SPACE: dict[str, Any] = {
    "lr": [5e-4, 1e-3, 3e-3],
    "r": [4, 8, 16],
    "target_modules": [["query", "value"], ["query", "key", "value", "dense"]],
}
SMALL_SPACE: dict[str, Any] = {"lr": [1e-4, 3e-3], "r": [4, 16]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="4 configurations, 300 rows")
    parser.add_argument("--train-samples", type=int, default=None, help="default 1500 (300)")
    parser.add_argument("--eval-samples", type=int, default=None, help="default 500 (200)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument(
        "--rungs",
        default="0.5,1,2",
        help="ASHA's rungs in epochs, comma separated (fractions allowed; default 0.5,1,2)",
    )
    return parser.parse_args(argv)


def sweep_file(args: argparse.Namespace, name: str, *, asha: bool) -> dict[str, Any]:
    train = args.train_samples or (300 if args.small else 1500)
    evaluate = args.eval_samples or (200 if args.small else 500)
    return {
        "name": name,
        "model": "minilm",
        "data": {"dataset": "movie-snippets", "train_samples": train, "eval_samples": evaluate},
        "fixed": {"epochs": args.epochs, "seed": 0},
        "space": SMALL_SPACE if args.small else FULL_SPACE,
        "method": "grid",
        "budget": {"max_parallel": 1},
        "early_stopping": (
            {"eta": args.eta, "rungs": [float(r) for r in args.rungs.split(",")]} if asha else None
        ),
    }


def run(env: dict[str, str], *cmd: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "ftqueue", *cmd], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"ftqueue {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="ftqueue-bench-sweep-"))
    env = {**os.environ, "FTQUEUE_HOME": str(home), "FTQUEUE_EAGER": "1"}
    env = {k: v for k, v in env.items() if k != "FTQUEUE_DATABASE_URL"}
    subprocess.run([sys.executable, "-m", "ftqueue", "db", "upgrade"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    rows = {}
    for name, asha in (("grid", False), ("asha", True)):
        path = home / f"{name}.yaml"
        path.write_text(yaml.safe_dump(sweep_file(args, name, asha=asha)))
        started = time.perf_counter()
        run(env, "sweep", str(path), "--json")
        wall = time.perf_counter() - started
        report = run(env, "report", "--sweep", name, "--format", "json")
        best = next(t for t in report["trials"] if t["job_id"] == report["best_job"])
        rows[name] = {
            "trials": len(report["trials"]),
            "pruned": report["counts"].get("pruned", 0),
            "best": " ".join(
                f"{k}={','.join(v) if isinstance(v, list) else v}"
                for k, v in best["values"].items()
            ),
            "validation": best.get("kept_validation") or best["best_validation"],
            "test": best["test_accuracy"],
            "train_seconds": report["train_seconds"],
            # Trials' worth of training examples: a share of the work that the machine's load
            # does not change (a trial pruned at half of its epochs counts 0.5).
            "work": sum(t.get("trained_share") or 1.0 for t in report["trials"]),
            "run_to_end": report["train_seconds_run_to_end"],
            "wall_seconds": wall,
        }
    grid, asha = rows["grid"], rows["asha"]
    print(f"{'sweep':6} {'trials':>6} {'pruned':>6} {'val acc':>8} {'test acc':>8} "
          f"{'train s':>8} {'wall s':>7}  best configuration")  # fmt: skip
    for name, row in rows.items():
        print(f"{name:6} {row['trials']:>6} {row['pruned']:>6} {row['validation']:>8.4f} "
              f"{row['test']:>8.4f} {row['train_seconds']:>8.1f} {row['wall_seconds']:>7.1f}  "
              f"{row['best']}")  # fmt: skip
    share = asha["train_seconds"] / grid["train_seconds"]
    gap = 100 * (grid["test"] - asha["test"])
    print(
        f"\nASHA train time: {100 * share:.0f}% of the grid's (target: at most 40%); "
        f"best test accuracy {gap:+.2f} points below the grid's (target: within 0.5)"
    )
    print(
        f"Load-independent: ASHA trained {asha['work']:.1f} of {grid['work']:.1f} trials' worth "
        f"of examples ({100 * asha['work'] / grid['work']:.0f}%); its train time was "
        f"{100 * asha['train_seconds'] / asha['run_to_end']:.0f}% of its own trials' run to the end"
    )
    print(f"(database and adapters in {home})")


if __name__ == "__main__":
    main()
