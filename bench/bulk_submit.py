"""Submitting a big sweep: one `ftqueue submit` grid of 10,000 jobs, process start included.

Runs the real command (`ftqueue submit lora --seed 0..9999`, the table output a person sees,
and with --json) as a subprocess against a fresh SQLite file and a fresh PostgreSQL database,
with a Redis db (12, or FTQUEUE_TEST_REDIS_DB) flushed between runs, and checks that every
job got its row and its message.
The baseline, measured in the same run: the same command for 1,000 jobs, and the process
start alone (`ftqueue --version`), so the table shows what each job costs beyond starting up.

    python bench/bulk_submit.py                  # 10,000 jobs, both databases
    python bench/bulk_submit.py --jobs 2000 --no-postgres
"""

from __future__ import annotations

import argparse
import compileall
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import redis

from bench.common import drop_pg, flush_redis, scratch_pg, use
from ftqueue.queue import broker
from ftqueue.store import db
from tests.procs import count_jobs

# A database of its own on the shared server: FTQUEUE_TEST_REDIS_DB picks another.
REDIS = (
    os.environ.get("FTQUEUE_TEST_REDIS", "redis://127.0.0.1:6379")
    + f"/{os.environ.get('FTQUEUE_TEST_REDIS_DB', '12')}"
)
TARGET_S = 5.0
#: The CPU goal of the plain grid submit (the table a person sees) on the embedded default,
#: SQLite; PostgreSQL's figure is shown beside it.
TARGET_CPU_S = 1.5


#: `ftqueue` with the garbage collector's pause made a no-op: the baseline of what it saves.
_COLLECTOR_ON = """
import contextlib
from ftqueue.core import gcpause

@contextlib.contextmanager
def not_paused():
    yield

gcpause.paused = not_paused
from ftqueue.cli import main
main()
"""


def timed(args: list[str], *, first_seed: int, pause_gc: bool = True) -> tuple[float, float]:
    """Wall and CPU seconds of one `ftqueue` command run as a subprocess (``pause_gc=False``:
    with the garbage collector left on while it submits)."""
    if args[0] == "submit":
        n = int(args[-1])
        args = [*args[:-1], "--seed", f"{first_seed}..{first_seed + n - 1}"]
    start_cmd = ["-m", "ftqueue"] if pause_gc else ["-c", _COLLECTOR_ON]
    cmd = [sys.executable, *start_cmd, *args]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ)
    cpu = 0.0
    while proc.poll() is None:
        try:
            times = proc.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, cpu


def submit_args(n: int, *, as_json: bool, model: str = "synthetic:seconds=0") -> list[str]:
    args = ["submit", "lora", "--model", model, "--dataset", "movie-snippets"]
    return [*args, *(["--json"] if as_json else []), str(n)]


def run_backend(label: str, url: str, n: int) -> list[tuple[str, str, float, float, int]]:
    use({"FTQUEUE_DATABASE_URL": url})
    db.upgrade(url)
    client = redis.Redis.from_url(REDIS)
    rows = []
    seed = 0
    for what, args, jobs, pause_gc in (
        ("process start (--version)", ["--version"], 0, True),
        (f"submit {n // 10:,} (table)", submit_args(n // 10, as_json=False), n // 10, True),
        (f"submit {n:,} (table)", submit_args(n, as_json=False), n, True),
        # The baseline of the collector's pause (ftqueue/core/gcpause.py), in the same run.
        (f"submit {n:,} (table, gc on)", submit_args(n, as_json=False), n, False),
        (f"submit {n:,} (--json)", submit_args(n, as_json=True), n, True),
        # A real model on disk: its files are checked (config, safetensors headers, the
        # target modules against its layers), which the synthetic model skips.
        (f"submit {n:,} minilm (table)", submit_args(n, as_json=False, model="minilm"), n, True),
    ):
        flush_redis(REDIS)
        before = count_jobs()
        wall, cpu = timed(args, first_seed=seed, pause_gc=pause_gc)
        seed += jobs
        made, queued = count_jobs() - before, broker.queue_length("lora", client)
        assert made == jobs and queued == jobs, (what, made, queued)
        rows.append((label, what, wall, cpu, jobs))
    flush_redis(REDIS)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    # An installed package starts from its bytecode. A checkout whose environment sets
    # PYTHONDONTWRITEBYTECODE would compile every ftqueue module at each start instead, a
    # cost users do not pay: write the bytecode first.
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "ftqueue", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="ftqueue-bulk-"))
    use({"FTQUEUE_HOME": str(work), "FTQUEUE_BROKER_URL": REDIS, "FTQUEUE_EAGER": "0",
         "FTQUEUE_MAX_GRID": str(max(10_000, args.jobs))})  # fmt: skip
    rows = run_backend("SQLite", f"sqlite:///{work / 'bench.db'}", args.jobs)
    if not args.no_postgres:
        url, name = scratch_pg("ftqueue_bulk")
        try:
            rows += run_backend("PostgreSQL", url, args.jobs)
        finally:
            drop_pg(name)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\none `ftqueue submit` grid, process start included; {os.cpu_count()} CPUs, load "
          f"average {load} (other work on the machine slows the wall time)\n")  # fmt: skip
    print(f"{'database':<12}{'command':<28}{'wall s':>8}{'cpu s':>8}{'ms/job':>8}"
          f"{'goal':>18}  result")  # fmt: skip
    ok = True
    for label, what, wall, cpu, jobs in rows:
        start = next(w for lb, wh, w, _, _ in rows if lb == label and wh.startswith("process"))
        per_job = f"{(wall - start) / jobs * 1000:.2f}" if jobs else "-"
        goal, verdict = "", ""
        if jobs == args.jobs and "gc on" not in what:  # a baseline has no goal
            goal = f"<= {TARGET_S:.0f} s"
            met = wall <= TARGET_S
            if label == "SQLite" and what.endswith("(table)") and "minilm" not in what:
                goal += f", {TARGET_CPU_S} cpu"
                met &= cpu <= TARGET_CPU_S
            verdict = "pass" if met else "MISSED"
            ok &= met
        print(f"{label:<12}{what:<28}{wall:>8.2f}{cpu:>8.2f}{per_job:>8}{goal:>18}  {verdict}")
    print("\nms/job: (wall - process start) / jobs; cpu: the submitting process's CPU time;")
    print("ftqueue's bytecode written first, as an installed package has it; gc on: the")
    print("garbage collector left on while the command submits (the baseline of its pause)")
    cpu_of = {(label, what): cpu for label, what, _, cpu, _ in rows}
    for label in dict.fromkeys(label for label, *_ in rows):
        paused = cpu_of[(label, f"submit {args.jobs:,} (table)")]
        on = cpu_of[(label, f"submit {args.jobs:,} (table, gc on)")]
        print(f"{label}: the pause saves {on - paused:.2f} s of CPU ({on / paused:.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
