"""What the queue itself costs: submitting, starting a job, and re-starting on a warm worker.

Prints three tables:
  1. time to submit 1,000 jobs with one `ftqueue submit` (a --seed 0..999 grid), per database;
  2. queued -> running latency (p50/p95) of jobs sent one at a time to an idle, warm worker;
  3. claim -> first training step of a real job in a fresh worker process (cold) and of a
     second job on the same model and data in the same worker (warm), and the ratio.

Needs Redis and (for the PostgreSQL rows) the PostgreSQL server; runs from the repository root:
    python bench/queue_overhead.py [--jobs 1000] [--latency-jobs 50] [--skip-training]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.common import drop_pg, flush_redis, scratch_pg, use
from ftqueue.store import db
from ftqueue.store.schema import Job
from tests.procs import WorkerProcess, all_terminal, submit_command, wait_for

REDIS = os.environ.get("FTQUEUE_TEST_REDIS", "redis://127.0.0.1:6379") + "/11"


def time_submit(n: int) -> float:
    flush_redis(REDIS)
    cmd = submit_command("synthetic:seconds=0", "--seed", f"0..{n - 1}")
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=True)
    elapsed = time.perf_counter() - start
    assert len(json.loads(out.stdout)["jobs"]) == n, out.stdout[-500:]
    flush_redis(REDIS)
    return elapsed


def latencies(n: int) -> list[float]:
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec
    from ftqueue.submit.submission import submit

    found = []
    for i in range(n + 3):
        spec = LoraSpec(
            model="synthetic:seconds=0,steps=1",
            data=DataSpec(dataset="movie-snippets"),
            seed=10_000 + i,
        )
        [job] = submit([spec]).created
        wait_for(lambda jid=job.id: all_terminal([jid]), timeout=30, what=f"job {job.id}")
        with db.session_scope() as session:
            row = session.get(Job, job.id)
            assert row is not None and row.started_at and row.queued_at
            if i >= 3:  # the first jobs warm the worker's imports and connections
                found.append((row.started_at - row.queued_at).total_seconds())
        time.sleep(0.2)  # let the worker go idle, waiting on the queue
    return found


def first_steps(work: Path) -> tuple[float, float]:
    """Claim -> first training step, for a fresh worker's first job and its second job."""
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec
    from ftqueue.submit.submission import submit

    worker = WorkerProcess("cold", env=dict(os.environ), log_dir=work).start().wait_ready()
    try:
        data = DataSpec(dataset="movie-snippets", train_samples=256, eval_samples=128)
        times = []
        for seed in (101, 102):
            spec = LoraSpec(model="minilm", data=data, epochs=1, seed=seed)
            [job] = submit([spec]).created
            wait_for(lambda jid=job.id: all_terminal([jid]), timeout=600, what=f"job {job.id}")
            with db.session_scope() as session:
                row = session.get(Job, job.id)
                assert row is not None and row.status == "succeeded", row and row.error_message
                times.append(float((row.stats or {})["seconds_to_first_step"]))
        return times[0], times[1]
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=50)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ftqueue-bench-"))
    base = {"FTQUEUE_HOME": str(work), "FTQUEUE_BROKER_URL": REDIS, "FTQUEUE_EAGER": "0"}
    sqlite_url = f"sqlite:///{work / 'bench.db'}"
    pg_url, pg_name = scratch_pg("ftqueue_bench")
    try:
        rows = []
        for label, url in (("SQLite", sqlite_url), ("PostgreSQL", pg_url)):
            use({**base, "FTQUEUE_DATABASE_URL": url})
            db.upgrade(url)
            rows.append((label, time_submit(args.jobs)))
        print(f"\n1. submit {args.jobs:,} jobs (one `ftqueue submit` grid, process start included)")
        print(f"{'database':<12}{'seconds':>10}{'jobs/s':>10}{'target':>10}")
        for label, secs in rows:
            ok = "ok" if secs <= 5 else "MISSED"
            print(f"{label:<12}{secs:>10.2f}{args.jobs / secs:>10,.0f}{'<= 5 s':>10} {ok}")

        use({**base, "FTQUEUE_DATABASE_URL": pg_url})
        worker = WorkerProcess("latency", env=dict(os.environ), log_dir=work).start().wait_ready()
        try:
            lat = latencies(args.latency_jobs)
        finally:
            worker.stop()
        p50 = statistics.median(lat) * 1000
        p95 = statistics.quantiles(lat, n=20)[18] * 1000
        print(f"\n2. queued -> running, idle warm worker, {len(lat)} jobs (PostgreSQL + Redis)")
        print(f"{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'target':>14}")
        verdict = "ok" if p50 <= 100 else "MISSED"
        print(f"{p50:>10.1f}{p95:>10.1f}{max(lat) * 1000:>10.1f}{'p50 <= 100 ms':>14} {verdict}")

        if not args.skip_training:
            cold, warm = first_steps(work)
            print(
                "\n3. claim -> first training step, minilm on movie-snippets (PostgreSQL + Redis)"
            )
            print(f"{'cold s':>10}{'warm s':>10}{'cold/warm':>11}{'target':>16}")
            verdict = "ok" if warm <= 1 else "MISSED"
            print(f"{cold:>10.2f}{warm:>10.2f}{cold / warm:>10.1f}x{'warm <= 1 s':>16} {verdict}")
    finally:
        flush_redis(REDIS)
        drop_pg(pg_name)


if __name__ == "__main__":
    main()
