"""The default `ftqueue report` over 100,000 (or a million) results rows, SQLite and PostgreSQL.

Fills a fresh SQLite file and a fresh PostgreSQL database (created on the server and dropped
afterwards) with a realistic history: several models and datasets, LoRA sweeps over r, alpha,
learning rate, target modules and epochs with several seeds each (validation after every
epoch, test at the end), base-model evaluations, adapter evaluations on other datasets and
failed jobs without results, written in bulk, then counted into the report summary (one
INSERT ... SELECT, as the migration that creates it does; timed). Then times the default
report (query, aggregation, and the terminal table rendered to text), median of a few runs,
from the summary and from the full query over every result (``full_query``, the report
before the summary; --no-full skips it), and checks both give the same rows. The targets,
for the summary, for a million rows: 1 s on PostgreSQL, 2 s on SQLite.

    python bench/report_scale.py                      # both backends, 100,000 rows
    python bench/report_scale.py --rows 1000000 --runs 3
    python bench/report_scale.py --rows 20000 --runs 3 --no-postgres --no-full
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from ftqueue.core.confidence import kept_epoch
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.report import ReportOptions, build_report
from ftqueue.report.render import rich_table
from ftqueue.specs import DataSpec
from ftqueue.store import db, summary
from ftqueue.store.schema import Job, JobTag, Result

TARGETS_S = {"sqlite": 2.0, "postgresql": 1.0}
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
MODELS = ["bert-base-uncased", "minilm", "roberta-base", "distilbert-base-uncased",
          "google/electra-small-discriminator", "microsoft/deberta-v3-small",
          "albert-base-v2", "prajjwal1/bert-medium"]  # fmt: skip
DATASETS = ["rotten_tomatoes", "movie-snippets", "sst2", "imdb", "yelp_polarity", "tweets.csv"]
GRID = [
    {"r": r, "alpha": alpha, "lr": lr, "target_modules": modules, "epochs": epochs}
    for r in (4, 8, 16, 32)
    for alpha in (16.0, 32.0)
    for lr in (1e-4, 3e-4, 1e-3, 3e-3)
    for modules in (("query", "key", "value"), ("query", "key", "value", "dense"))
    for epochs in (1, 2, 3)
]


class Filler:
    """Generates jobs and results in id order until the results reach the wanted count."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.rng = random.Random(0)
        self.now = dt.datetime.now(dt.UTC)
        self.jobs: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.tags: list[dict[str, Any]] = []

    def _job(self, spec: LoraSpec | EvaluateSpec, sweep: str | None, status: str) -> int:
        job_id = len(self.jobs) + 1
        seconds = self.rng.uniform(20, 900) if spec.kind == "lora" else self.rng.uniform(5, 60)
        trainable = self.rng.randint(300_000, 3_000_000) if spec.kind == "lora" else 1_538
        self.jobs.append(
            {
                "id": job_id, "kind": spec.kind, "status": status, "spec": spec.to_dict(),
                "spec_hash": spec.spec_hash(), "model": spec.model, "dataset": spec.data.dataset,
                "sweep_id": sweep, "attempts": 1, "max_attempts": 3, "selected_epoch": None,
                "train_seconds": seconds if status == "succeeded" else None,
                "samples_per_second": 8530 / seconds, "peak_memory_mb": 2048.0,
                "trainable_params": trainable, "total_params": 110_000_000,
                "stats": {"train_seconds": seconds, "phase_seconds": {"train": seconds}},
                "created_at": self.now - dt.timedelta(minutes=self.rng.randint(0, 60 * 24 * 60)),
            }
        )  # fmt: skip
        if self.rng.random() < 0.1:
            self.tags.append({"job_id": job_id, "tag": "nightly"})
        return job_id

    def _result(self, job_id: int, split: str, epoch: int, accuracy: float) -> None:
        accuracy = min(0.99, max(0.3, accuracy + self.rng.gauss(0, 0.01)))
        self.results.append(
            {"job_id": job_id, "attempt": 1, "split": split, "epoch": epoch,
             "accuracy": accuracy, "loss": 1.2 - accuracy + self.rng.gauss(0, 0.02),
             "macro_f1": accuracy - 0.005, "n_examples": 1066, "recorded_at": self.now}
        )  # fmt: skip

    def _pairs(self) -> Iterator[tuple[int, str, str]]:
        for i, model in enumerate(MODELS):
            for j, dataset in enumerate(DATASETS):
                yield i * len(DATASETS) + j, model, dataset

    def fill(self) -> None:
        for _, model, dataset in self._pairs():
            for seed in range(3):
                for split in ("validation", "test"):
                    spec = EvaluateSpec(model=model, data=DataSpec(dataset=dataset), split=split,
                                        seed=seed)  # fmt: skip
                    job = self._job(spec, None, "succeeded")
                    self._result(job, split, 1, 0.6 + 0.02 * (hash(model) % 5))
        seed = 0
        while len(self.results) < self.rows:
            for pair, model, dataset in self._pairs():
                for params in GRID:
                    if len(self.results) >= self.rows:
                        return
                    self._lora(pair, model, dataset, params, seed)
            seed += 1

    def _lora(self, pair: int, model: str, dataset: str, params: dict[str, Any], seed: int) -> None:
        spec = LoraSpec(model=model, data=DataSpec(dataset=dataset), seed=seed, **params)
        failed = self.rng.random() < 0.02
        job = self._job(spec, f"sweep-{pair:02d}", "failed" if failed else "succeeded")
        if failed:
            return
        quality = 0.7 + 0.03 * params["r"] ** 0.25 - 20 * abs(params["lr"] - 1e-3)
        for epoch in range(1, spec.epochs + 1):
            self._result(job, "validation", epoch, quality - 0.03 / epoch)
        # Tested at the epoch a real run keeps, which the job row records.
        curve = [(r["epoch"], r["accuracy"], r["n_examples"]) for r in self.results[-spec.epochs :]]
        kept = kept_epoch(curve) or spec.epochs
        self.jobs[-1]["selected_epoch"] = kept
        self._result(job, "test", kept, quality - 0.03 / kept - 0.01)
        if self.rng.random() < 0.01:  # now and then an adapter is tried on another dataset
            other = self.rng.choice([d for d in DATASETS if d != dataset])
            evaluate = EvaluateSpec(model=model, data=DataSpec(dataset=other), adapter_job=job)
            self._result(self._job(evaluate, None, "succeeded"), "test", 0, quality - 0.1)

    def write(self, url: str) -> None:
        engine = db.get_engine(url)
        with engine.begin() as conn:
            for table, rows in ((Job, self.jobs), (Result, self.results), (JobTag, self.tags)):
                for start in range(0, len(rows), 5000):
                    conn.execute(insert(table), rows[start : start + 5000])
            if engine.dialect.name == "postgresql":
                # Rows came with explicit ids; later inserts must not collide with them.
                conn.execute(text("SELECT setval('jobs_id_seq', (SELECT max(id) FROM jobs))"))
                conn.execute(text("ANALYZE"))  # what autovacuum would have done by now
        started = time.perf_counter()
        with db.session_scope(url=url, write=True) as session:
            groups = summary.rebuild(session)
        print(f"{engine.dialect.name}: summary of {groups:,} rows built in "
              f"{time.perf_counter() - started:.1f}s", file=sys.stderr)  # fmt: skip
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE report_summary"))


Timing = tuple[str, str, list[float], list[float], int]


def time_report(url: str, backend: str, runs: int, *, full: bool) -> list[Timing]:
    """Per way of reading (the summary, and with ``full`` the full query), wall seconds and
    this process's CPU seconds of each run, and the report's row count."""
    from rich.console import Console

    out: list[Timing] = []
    shown: dict[bool, list[dict[str, Any]]] = {}
    for full_query in (True, False) if full else (False,):
        walls, cpus = [], []
        for _ in range(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            with db.session_scope(url=url) as session:
                report = build_report(session, ReportOptions(full_query=full_query))
            Console(file=io.StringIO(), width=160).print(rich_table(report))
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        shown[full_query] = report.flat_rows()
        out.append((backend, "full query" if full_query else "summary", walls, cpus,
                    len(report.rows)))  # fmt: skip
    if full:
        _check_same(shown[True], shown[False])
    return out


def _check_same(full: list[dict[str, Any]], fast: list[dict[str, Any]]) -> None:
    """Both ways give the same report (floats to 1e-9); a benchmark of a wrong answer is void."""
    assert len(full) == len(fast), (len(full), len(fast))
    for want, got in zip(full, fast, strict=True):
        for name, value in want.items():
            if isinstance(value, float):
                assert abs(got[name] - value) <= 1e-9 * max(1.0, abs(value)), (name, got, want)
            else:
                assert got[name] == value, (name, got[name], value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="results rows to create")
    parser.add_argument("--runs", type=int, default=5, help="timed reports per backend")
    parser.add_argument("--pg-server", default=PG_SERVER, help="PostgreSQL server URL, no db")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--no-full", action="store_true", help="time only the summary, not the full query"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    filler = Filler(args.rows)
    filler.fill()
    print(f"generated {len(filler.jobs):,} jobs and {len(filler.results):,} results rows "
          f"in {time.perf_counter() - started:.1f}s", file=sys.stderr)  # fmt: skip
    table: list[Timing] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db.upgrade(url)
        filler.write(url)
        table += time_report(url, "sqlite", args.runs, full=not args.no_full)
        db.dispose_engines()
    if not args.no_postgres:
        admin = create_engine(f"{args.pg_server}/postgres", isolation_level="AUTOCOMMIT")
        name = f"ftqueue_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = f"{args.pg_server}/{name}"
            db.upgrade(url)
            filler.write(url)
            table += time_report(url, "postgresql", args.runs, full=not args.no_full)
        finally:
            db.dispose_engines()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ndefault `ftqueue report` over {len(filler.results):,} results rows "
          f"({len(filler.jobs):,} jobs), {args.runs} runs each; {os.cpu_count()} CPUs, "
          f"load average {load} (other work on the machine slows the wall time)\n")  # fmt: skip
    print(f"{'backend':<12}{'read from':<12}{'rows':>6}{'median s':>10}{'min s':>8}"
          f"{'max s':>8}{'client cpu s':>14}{'target s':>10}  result")  # fmt: skip
    ok = True
    for backend, way, walls, cpus, rows in table:
        median = statistics.median(walls)
        target = TARGETS_S[backend]
        passed = median <= target
        verdict = "pass" if passed else "FAIL"
        if way == "summary":
            ok &= passed
        else:
            verdict = f"({verdict}: before the summary)"
        cpu = statistics.median(cpus)
        print(f"{backend:<12}{way:<12}{rows:>6}{median:>10.3f}{min(walls):>8.3f}"
              f"{max(walls):>8.3f}{cpu:>14.3f}{target:>10.1f}  {verdict}")  # fmt: skip
    print("\nclient cpu: CPU time of this process (for SQLite that includes the query itself)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
