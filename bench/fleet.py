"""A fleet of N simulated workers against the real PostgreSQL and Redis (no training).

Each simulated worker is a thread doing what a worker's job slot does to the two servers:
take a message from the `lora` list (BRPOP, then the unacked hash, as Celery's Redis
transport does with acks_late), claim the job (`lifecycle.claim`, the real conditional
UPDATE), heart-beat it (the real `Heartbeat.beat`, once a second, by a ticker per
process), report progress every --progress-every seconds, record three results
(`lifecycle.record_success`) and acknowledge. Threads are spread over a few processes, each
with ftqueue's own connection pool (5 + 10 overflow), so the database sees what a connection
pooler in front of it would pass on. Meanwhile the main process runs reaper passes
(`reaper.reap_once`: lost leases, then the lost-message scan of every queue) with at least
10,000 jobs queued, and times them.

Per N it prints claim latency (p50/p99 of the claim's transaction), heartbeat writes and
reads per second beside what the old rule (a write on every beat) would have written,
reaper pass and scan times, and the CPU used by this database's server processes (psutil
on the backends' pids) and by the Redis server (INFO cpu; the server is shared, so other
work on it counts too). Goals at N = 1,000: claim p99 <= 50 ms, reaper pass and scan <= 1 s.

    python bench/fleet.py                         # N = 100, 300, 1000; about 5 minutes
    python bench/fleet.py --workers 50 --seconds 10
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import redis
from sqlalchemy import create_engine, text

from bench.common import PG_SERVER, drop_pg, flush_redis, scratch_pg, use
from ftqueue.core.outcome import Measurement, Progress
from ftqueue.core.states import Phase
from ftqueue.queue import broker
from ftqueue.store import db, insert, lifecycle, recovery
from ftqueue.submit import enqueue
from ftqueue.worker import reaper

REDIS = (
    os.environ.get("FTQUEUE_TEST_REDIS", "redis://127.0.0.1:6379")
    + f"/{os.environ.get('FTQUEUE_TEST_REDIS_DB', '14')}"
)
QUEUED = 10_000
CLAIM_P99_MS = 50.0
REAPER_S = 1.0
LEASE_SECONDS = 120
MEASUREMENTS = [
    Measurement("validation", 1, 0.8, 0.4, 0.79, 1066),
    Measurement("test", 1, 0.81, 0.39, 0.8, 1066),
    Measurement("validation", 0, 0.5, 0.7, 0.49, 1066),
]


@dataclass
class Tally:
    """What one process's simulated workers did inside the measured window."""

    claims_ms: list[float] = field(default_factory=list)
    jobs: int = 0
    writes: int = 0
    reads: int = 0
    beat_errors: int = 0


def _job_id(raw: bytes) -> tuple[int, str, str]:
    message = json.loads(raw)
    args = json.loads(base64.b64decode(message["body"]))[0]
    return int(args[0]), message["headers"]["id"], message["properties"]["delivery_tag"]


def fleet_process(
    index: int, threads: int, env: dict[str, str], window: tuple[float, float], args: Any,
    out: Any,
) -> None:  # fmt: skip
    """One process of simulated workers; puts its Tally on ``out`` at the end."""
    use(env)
    from ftqueue.execution.heartbeat import Heartbeat

    start, end = window
    tally = Tally()
    # Beats count inside the window only: each heartbeat's counters when it opened, and
    # those of the jobs that ended inside it.
    seen: dict[int, tuple[int, int]] = {}
    finished: list[tuple[int, int]] = []
    lock = threading.Lock()
    active: dict[int, Heartbeat] = {}
    stop = threading.Event()

    def measured() -> bool:
        return start <= time.time() < end

    def ticker() -> None:
        # One beat per running job per second, as each job's heartbeat thread would do.
        with ThreadPoolExecutor(max_workers=8) as pool:
            while not stop.wait(1.0):
                with lock:
                    beats = list(active.values())
                for beat in beats:
                    pool.submit(safe_beat, beat)

    def safe_beat(beat: Heartbeat) -> None:
        try:
            beat.beat()
        except Exception:
            with lock:
                tally.beat_errors += 1

    def slot(name: str) -> None:
        client = redis.Redis.from_url(env["FTQUEUE_BROKER_URL"])
        steps = max(1, round(args.job_seconds / args.progress_every))
        while time.time() < end:
            popped = client.brpop(["lora"], timeout=1)
            if popped is None:
                continue
            raw = popped[1]
            job_id, task_id, tag = _job_id(raw)
            client.hset("unacked", tag, raw)
            began = time.perf_counter()
            claim = lifecycle.claim(
                job_id, worker=name, lease_seconds=LEASE_SECONDS, task_id=task_id
            )
            took = (time.perf_counter() - began) * 1000
            if claim is None:
                client.hdel("unacked", tag)
                continue
            beat = Heartbeat(claim, lease_seconds=LEASE_SECONDS)
            with lock:
                if measured():
                    tally.claims_ms.append(took)
                active[job_id] = beat
            for step in range(1, steps + 1):
                time.sleep(args.job_seconds / steps)
                beat.on_progress(Progress(Phase.TRAIN, 1, step, steps, 1.0 / step))
            with lock:  # the heartbeat stops before the end is recorded, as in execute()
                active.pop(job_id, None)
            lifecycle.record_success(claim, MEASUREMENTS, stats={"simulated": True})
            client.hdel("unacked", tag)
            with lock:
                if measured():
                    tally.jobs += 1
                    base = seen.get(job_id, (0, 0))
                    finished.append((beat.writes - base[0], beat.reads - base[1]))

    def counters() -> dict[int, tuple[int, int]]:
        with lock:
            return {jid: (b.writes, b.reads) for jid, b in active.items()}

    tick = threading.Thread(target=ticker, daemon=True)
    tick.start()
    workers = [
        threading.Thread(target=slot, args=(f"sim{index}-{i}",), daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, start - time.time()))
    seen.update(counters())
    time.sleep(max(0.0, end - time.time()))
    for jid, (writes, reads) in counters().items():
        before = seen.get(jid, (0, 0))
        tally.writes += writes - before[0]
        tally.reads += reads - before[1]
    for writes, reads in finished:
        tally.writes += writes
        tally.reads += reads
    stop.set()
    out.put(tally)
    out.close()
    out.join_thread()
    os._exit(0)  # the slots may be inside a sleep; nothing of theirs is needed any more


def fill(n: int) -> None:
    """n queued jobs with their messages, through the bulk submit path."""
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec

    data = DataSpec(dataset="movie-snippets")
    for start in range(0, n, 10_000):
        specs = [
            LoraSpec(model="synthetic:seconds=1", data=data, seed=i)
            for i in range(start, min(n, start + 10_000))
        ]
        new = [
            insert.NewJob(kind="lora", spec=s.to_dict(), spec_hash=s.spec_hash(),
                             model=s.model, dataset="movie-snippets", sweep_id="fleet")
            for s in specs
        ]  # fmt: skip
        enqueue.jobs(new)


def alone(claims: int = 100, passes: int = 3) -> tuple[list[float], list[float], list[float]]:
    """The baseline, before the fleet starts: claims one at a time, reaper passes and scans
    with the same queue, on the same servers, with nothing else of this run competing."""
    client = redis.Redis.from_url(REDIS)
    claim_ms = []
    for _ in range(claims):
        raw = client.rpop("lora")
        assert raw is not None
        job_id, task_id, _ = _job_id(raw)
        began = time.perf_counter()
        claim = lifecycle.claim(
            job_id, worker="alone", lease_seconds=LEASE_SECONDS, task_id=task_id
        )
        claim_ms.append((time.perf_counter() - began) * 1000)
        assert claim is not None
        lifecycle.record_success(claim, MEASUREMENTS, stats={"simulated": True})
    reaps, scans = [], []
    for _ in range(passes):
        reaps.append(timed_reap())
        scans.append(timed_scan())
    return claim_ms, reaps, scans


def timed_reap() -> float:
    began = time.perf_counter()
    summary = reaper.reap_once(lock_seconds=30)
    assert summary.ran and not summary.republished, summary
    return time.perf_counter() - began


def timed_scan() -> float:
    began = time.perf_counter()
    pending = broker.pending_task_ids()
    recovery.queued_without_message(pending, older_than=lifecycle.utcnow())
    return time.perf_counter() - began


def server_cpu(db_name: str) -> tuple[dict[int, float], float]:
    """CPU seconds so far of each of this database's backends, and of the Redis server."""
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": db_name}
        ).scalars()
        pg = {}
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
                pg[pid] = times.user + times.system
            except psutil.Error:
                pass
    admin.dispose()
    info = redis.Redis.from_url(REDIS).info("cpu")
    return pg, float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def pg_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds of the backends alive at the end since the start (or their birth)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@dataclass
class Row:
    workers: int
    claim_p50: float
    claim_p99: float
    claims: int
    jobs: int
    writes_s: float
    reads_s: float
    old_writes_s: float
    reaper_s: list[float]
    scan_s: list[float]
    queued_min: int
    pg_cpu: float
    redis_cpu: float
    errors: int
    alone_p50: float
    alone_p99: float
    alone_reap: float
    alone_scan: float


def run(n: int, args: Any) -> Row:
    url, name = scratch_pg("ftqueue_fleet")
    home = tempfile.mkdtemp(prefix="ftqueue-fleet-")  # the reaper looks for strays there
    env = {"FTQUEUE_DATABASE_URL": url, "FTQUEUE_BROKER_URL": REDIS, "FTQUEUE_EAGER": "0",
           "FTQUEUE_LEASE_SECONDS": str(LEASE_SECONDS), "FTQUEUE_HOME": home}  # fmt: skip
    try:
        use(env)
        flush_redis(REDIS)
        db.upgrade(url)
        consumed = int(n * (args.warmup + args.seconds) / args.job_seconds * 1.3) + n + 100
        fill(QUEUED + consumed)
        alone_claims, alone_reaps, alone_scans = alone()
        processes = max(1, min(args.processes, n))
        start = time.time() + args.startup + args.warmup
        end = start + args.seconds
        out: Any = mp.get_context("fork").Queue()
        db.dispose_engines()  # a forked child must not share the parent's connections
        procs = []
        for i in range(processes):
            threads = n // processes + (1 if i < n % processes else 0)
            proc = mp.get_context("fork").Process(
                target=fleet_process, args=(i, threads, env, (start, end), args, out)
            )
            proc.start()
            procs.append(proc)
        time.sleep(max(0.0, start - time.time()))
        cpu0 = server_cpu(name)
        client = redis.Redis.from_url(REDIS)
        reaps, scans, queued = [], [], []
        while time.time() < end - 1:
            queued.append(int(client.llen("lora")))
            reaps.append(timed_reap())
            scans.append(timed_scan())
            time.sleep(min(args.reaper_every, max(0.0, end - 1 - time.time())))
        time.sleep(max(0.0, end - time.time()))
        cpu1 = server_cpu(name)
        tallies = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        claims = sorted(ms for t in tallies for ms in t.claims_ms)
        writes = sum(t.writes for t in tallies)
        reads = sum(t.reads for t in tallies)
        q = statistics.quantiles(claims, n=100) if len(claims) >= 2 else [0.0] * 99
        return Row(
            workers=n,
            claim_p50=statistics.median(claims) if claims else float("nan"),
            claim_p99=q[98],
            claims=len(claims),
            jobs=sum(t.jobs for t in tallies),
            writes_s=writes / args.seconds,
            reads_s=reads / args.seconds,
            old_writes_s=(writes + reads) / args.seconds,
            reaper_s=reaps,
            scan_s=scans,
            queued_min=min(queued) if queued else 0,
            pg_cpu=pg_used(cpu0[0], cpu1[0]) / args.seconds,
            redis_cpu=(cpu1[1] - cpu0[1]) / args.seconds,
            errors=sum(t.beat_errors for t in tallies),
            alone_p50=statistics.median(alone_claims),
            alone_p99=statistics.quantiles(alone_claims, n=100)[98],
            alone_reap=max(alone_reaps),
            alone_scan=max(alone_scans),
        )
    finally:
        flush_redis(REDIS)
        drop_pg(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="100,300,1000", help="comma-separated N")
    parser.add_argument("--processes", type=int, default=4, help="processes sharing the N")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--startup", type=float, default=5.0, help="time to start the threads")
    parser.add_argument("--job-seconds", type=float, default=20.0, help="one simulated job")
    parser.add_argument("--progress-every", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--reaper-every", type=float, default=5.0)
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.workers.split(",")):
        print(f"N = {n} ...", file=sys.stderr)
        rows.append(run(n, args))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.seconds:.0f} s measured per N after {args.warmup:.0f} s of warm-up; jobs of "
          f"{args.job_seconds:.0f} s with progress every {args.progress_every:.0f} s; lease "
          f"{LEASE_SECONDS} s; >= {QUEUED:,} jobs queued; {args.processes} processes; "
          f"{os.cpu_count()} CPUs, load average {load}\n")  # fmt: skip
    print(f"{'N':>5}{'claims':>8}{'p50 ms':>8}{'p99 ms':>8}{'jobs/s':>8}{'hb w/s':>8}"
          f"{'hb r/s':>8}{'old w/s':>8}{'reap s':>8}{'scan s':>8}{'queued':>8}"
          f"{'pg cpu':>8}{'rd cpu':>8}")  # fmt: skip
    ok = True
    for r in rows:
        reap, scan = max(r.reaper_s, default=0.0), max(r.scan_s, default=0.0)
        print(f"{r.workers:>5}{r.claims:>8}{r.claim_p50:>8.1f}{r.claim_p99:>8.1f}"
              f"{r.jobs / args.seconds:>8.1f}{r.writes_s:>8.0f}{r.reads_s:>8.0f}"
              f"{r.old_writes_s:>8.0f}{reap:>8.2f}{scan:>8.2f}{r.queued_min:>8,}"
              f"{r.pg_cpu:>8.3f}{r.redis_cpu:>8.3f}")  # fmt: skip
        if r.errors:
            print(f"      {r.errors} heartbeat beats failed")
    print("\nthe same, alone (before the fleet started: 100 claims one at a time, 3 passes)")
    print(f"{'N':>5}{'p50 ms':>8}{'p99 ms':>8}{'reap s':>8}{'scan s':>8}")
    for r in rows:
        print(f"{r.workers:>5}{r.alone_p50:>8.1f}{r.alone_p99:>8.1f}{r.alone_reap:>8.2f}"
              f"{r.alone_scan:>8.2f}")  # fmt: skip
    last = rows[-1]
    reap, scan = max(last.reaper_s, default=0.0), max(last.scan_s, default=0.0)
    goals = [
        (f"claim p99, N={last.workers}", f"{last.claim_p99:.1f} ms (alone {last.alone_p99:.1f})",
         f"<= {CLAIM_P99_MS:.0f} ms", last.claim_p99 <= CLAIM_P99_MS),
        ("slowest reaper pass", f"{reap:.2f} s (alone {last.alone_reap:.2f})",
         f"<= {REAPER_S:.0f} s", reap <= REAPER_S),
        ("slowest lost-message scan", f"{scan:.2f} s (alone {last.alone_scan:.2f})",
         f"<= {REAPER_S:.0f} s", scan <= REAPER_S),
        ("heartbeat writes / beats", f"{last.writes_s:.0f} / {last.old_writes_s:.0f} per s",
         "writes < beats", last.writes_s < last.old_writes_s),
    ]  # fmt: skip
    print(f"\n{'goal':<26}{'measured':>28}{'target':>16}  result")
    for what, value, target, passed in goals:
        ok &= passed
        print(f"{what:<26}{value:>28}{target:>16}  {'pass' if passed else 'MISSED'}")
    print(
        "\nhb w/s, r/s: heartbeat writes and read-only looks per second; old w/s: the writes "
        "of a heartbeat that writes on every beat (the rule before);\nreap s: the slowest "
        "reaper pass (leases + lost-message scan); scan s: the slowest scan alone;\npg cpu, "
        "rd cpu: cores used by this database's PostgreSQL backends and by the whole Redis "
        "server;\nclaims under the fleet include waiting for this machine's CPU and for a "
        "connection of the process's pool"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
