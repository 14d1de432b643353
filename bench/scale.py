"""Scale-out: jobs per minute for 1, 2, 4 and 8 workers on one PostgreSQL and one Redis.

Part 1 runs sleep-bound synthetic jobs (``synthetic:seconds=S``), so that what is measured is
the queue (delivery, claim, heartbeats, recording, adapter publication) and not this machine's
two cores: a perfect queue gives N x 60/S jobs/min with N workers. Part 2 runs real tiny
training jobs (minilm on movie-snippets) with 1 and 2 workers; on a CPU-only machine those
share the same cores, so they show what the cores allow, not what the queue allows. It runs
twice: as `ftqueue worker` sets them up (the cores split, OMP_NUM_THREADS = cores / N) and,
for comparison, with every worker taking all cores for its torch threads.

Each run starts `ftqueue worker --processes N` (N Celery nodes, one job at a time each, as
with one node per GPU), waits until its imports have settled, runs one warm-up job per worker,
then submits N x k jobs at once. Throughput is counted from the first job's start (its claim)
to the last job's end, so worker start-up and submit are not in it; the "from submit" column
includes the submit and the first delivery.

Needs the PostgreSQL server and Redis (a scratch database is created and dropped; Redis db 10
is flushed). From the repository root:
    python bench/scale.py                          # both parts, 10-15 minutes here
    python bench/scale.py --skip-training --workers 1,2,4,8,16 --seconds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from sqlalchemy import select

from bench.common import drop_pg, flush_redis, scratch_pg, use
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job
from tests.procs import WorkerProcess, all_terminal, wait_for

REDIS_SERVER = os.environ.get("FTQUEUE_TEST_REDIS", "redis://127.0.0.1:6379")
TARGET = 0.9


@dataclass
class Run:
    workers: int
    jobs: int
    span_s: float  # first claim -> last finish
    from_submit_s: float  # submit call -> last finish
    job_s: float  # mean claim -> finish of one job
    gap_s: float  # mean idle time of a worker between its consecutive jobs
    cpu_cores: float  # CPU used by the workers during the run, in cores
    load: float  # the machine's 1-minute load average at the end: other work competes too
    per_worker: list[int]

    @property
    def per_min(self) -> float:
        return self.jobs / self.span_s * 60

    @property
    def per_min_from_submit(self) -> float:
        return self.jobs / self.from_submit_s * 60


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def settle(pid: int, *, quiet_cores: float = 0.15, limit_s: float = 300) -> None:
    """Wait until the workers stop using CPU: each pool process imports torch when it starts."""
    deadline = time.monotonic() + limit_s
    quiet = 0
    before = cpu_seconds(pid)
    while time.monotonic() < deadline and quiet < 3:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - before < quiet_cores else 0
        before = now


class Synthetic:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.label = f"synthetic {seconds:g} s"

    def spec(self, seed: int, *, warmup: bool = False) -> LoraSpec:
        seconds = min(self.seconds, 0.5) if warmup else self.seconds
        model = f"synthetic:seconds={seconds:g},steps=10"
        return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), epochs=1, seed=seed)


class Training:
    label = "minilm, 256 train / 128 eval rows"

    def spec(self, seed: int, *, warmup: bool = False) -> LoraSpec:
        data = DataSpec(dataset="movie-snippets", train_samples=256, eval_samples=128)
        return LoraSpec(model="minilm", data=data, epochs=1, seed=seed)


def submit_and_wait(specs: list[LoraSpec], timeout: float) -> list[int]:
    from ftqueue.submit.submission import submit

    ids = [job.id for job in submit(specs).created]
    assert len(ids) == len(specs), "some jobs were taken for duplicates of earlier ones"
    wait_for(lambda: all_terminal(ids), timeout=timeout, what=f"{len(ids)} jobs", poll=0.25)
    return ids


def measure(workers: int, kind: Synthetic | Training, per_worker: int, *, work: Path,
            seed_base: int, timeout: float, env: dict[str, str] | None = None) -> Run:  # fmt: skip
    proc = WorkerProcess(f"scale{workers}", env={**os.environ, **(env or {})}, log_dir=work,
                         processes=workers)  # fmt: skip
    proc.start()
    try:
        proc.wait_ready(timeout=300)
        assert proc.proc is not None
        settle(proc.proc.pid)
        # One job per worker first: connections, the first import of the job's code, and for
        # real jobs the model and tokenized data, all of which later jobs find ready.
        submit_and_wait([kind.spec(seed_base + i, warmup=True) for i in range(workers)], timeout)
        specs = [kind.spec(seed_base + 1000 + i) for i in range(workers * per_worker)]
        cpu_before = cpu_seconds(proc.proc.pid)
        submitted = dt.datetime.now(dt.UTC)
        ids = submit_and_wait(specs, timeout)
        cpu_used = cpu_seconds(proc.proc.pid) - cpu_before
        load = os.getloadavg()[0]
    finally:
        proc.stop()
    with db.session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.status, Job.worker, Job.started_at, Job.finished_at, Job.attempts)
            .where(Job.id.in_(ids))
        ).all()  # fmt: skip
    bad = [(r.id, r.status, r.attempts) for r in rows if (r.status, r.attempts) != ("succeeded", 1)]
    assert not bad, f"jobs that did not succeed at the first attempt: {bad[:5]} (logs in {work})"
    first = min(r.started_at for r in rows)
    last = max(r.finished_at for r in rows)
    by_worker = defaultdict(list)
    for r in rows:
        by_worker[r.worker].append((r.started_at, r.finished_at))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        gaps += [(b[0] - a[1]).total_seconds() for a, b in itertools.pairwise(spans)]
    span = (last - first).total_seconds()
    return Run(
        workers=workers,
        jobs=len(rows),
        span_s=span,
        from_submit_s=(last - submitted).total_seconds(),
        job_s=statistics.mean((r.finished_at - r.started_at).total_seconds() for r in rows),
        gap_s=statistics.mean(gaps) if gaps else 0.0,
        cpu_cores=cpu_used / max(span, 1e-9),
        load=load,
        per_worker=sorted((len(v) for v in by_worker.values()), reverse=True),
    )


def table(title: str, runs: list[Run], ideal_per_min: float | None) -> None:
    print(f"\n{title}")
    head = f"{'workers':>7}{'jobs':>6}{'span s':>8}{'jobs/min':>10}{'from submit':>13}"
    head += f"{'x linear':>10}{'x ideal':>9}{'job s':>8}{'gap ms':>8}{'CPU cores':>11}"
    head += f"{'CPU s/job':>11}{'load':>6}"
    print(head + "  jobs per worker")
    base = runs[0].per_min / runs[0].workers if runs else 1.0
    for run in runs:
        linear = run.per_min / (base * run.workers)
        ideal = f"{run.per_min / (ideal_per_min * run.workers):>9.2f}" if ideal_per_min else " " * 9
        print(f"{run.workers:>7}{run.jobs:>6}{run.span_s:>8.1f}{run.per_min:>10.1f}"
              f"{run.per_min_from_submit:>13.1f}{linear:>10.2f}{ideal}{run.job_s:>8.2f}"
              f"{run.gap_s * 1000:>8.0f}{run.cpu_cores:>11.2f}"
              f"{run.cpu_cores * run.span_s / run.jobs:>11.2f}{run.load:>6.1f}  "
              f"{run.per_worker}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=2.5, help="length of a synthetic job")
    parser.add_argument("--jobs-per-worker", type=int, default=8)
    parser.add_argument("--train-workers", default="1,2")
    parser.add_argument("--train-jobs-per-worker", type=int, default=3)
    parser.add_argument(
        "--train-threads", default="split,all",
        help="split: as `ftqueue worker --processes N` sets them (OMP_NUM_THREADS = cores / N); "
        "all: every worker takes all cores (oversubscribed), for comparison",
    )  # fmt: skip
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()
    # A SIGTERM (`timeout`, CI) ends the run through the `finally` blocks, which stop the worker
    # processes and drop the scratch database, instead of leaving them behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="ftqueue-scale-"))
    redis_url = f"{REDIS_SERVER}/{args.redis_db}"
    pg_url, pg_name = scratch_pg("ftqueue_scale")
    use({"FTQUEUE_HOME": str(work), "FTQUEUE_DATABASE_URL": pg_url,
         "FTQUEUE_BROKER_URL": redis_url, "FTQUEUE_EAGER": "0"})  # fmt: skip
    print(f"PostgreSQL {pg_url}, Redis {redis_url}, {os.cpu_count()} CPUs, logs in {work}")
    try:
        db.upgrade(pg_url)
        flush_redis(redis_url)
        seed = 0
        if not args.skip_synthetic:
            kind = Synthetic(args.seconds)
            runs = []
            for n in (int(x) for x in args.workers.split(",")):
                seed += 10_000
                runs.append(measure(n, kind, args.jobs_per_worker, work=work, seed_base=seed,
                                    timeout=600))  # fmt: skip
                print(f"  {n} worker(s): {runs[-1].per_min:.1f} jobs/min", flush=True)
            table(f"1. {kind.label} jobs, {args.jobs_per_worker} per worker (ideal: N x "
                  f"{60 / args.seconds:.0f} jobs/min)", runs, 60 / args.seconds)  # fmt: skip
            worst = min(r.per_min / (runs[0].per_min / runs[0].workers * r.workers) for r in runs)
            print(f"worst x linear: {worst:.2f} (target >= {TARGET}): "
                  f"{'ok' if worst >= TARGET else 'MISSED'}")  # fmt: skip

        if not args.skip_training:
            training = Training()
            cpus = os.cpu_count() or 1
            for threads in args.train_threads.split(","):
                runs = []
                for n in (int(x) for x in args.train_workers.split(",")):
                    seed += 10_000
                    # `ftqueue worker` splits the cores itself unless OMP_NUM_THREADS is set.
                    env = {"OMP_NUM_THREADS": str(cpus)} if threads == "all" else {}
                    runs.append(measure(n, training, args.train_jobs_per_worker, work=work,
                                        seed_base=seed, timeout=1800, env=env))  # fmt: skip
                    print(f"  {n} worker(s), {threads} threads: {runs[-1].per_min:.2f} jobs/min",
                          flush=True)  # fmt: skip
                table(f"2. real training jobs ({training.label}, 1 epoch), "
                      f"{args.train_jobs_per_worker} per worker, {cpus} CPU cores, torch threads: "
                      f"{threads}", runs, None)  # fmt: skip
    finally:
        flush_redis(redis_url)
        drop_pg(pg_name)


if __name__ == "__main__":
    main()
