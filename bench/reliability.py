"""Figures for docs/reliability.md: what the submit side costs when things go wrong.

Prints one table; each row is a fault, what ftqueue did about it, and how long (or how much)
that took, measured here in the same run:
  - an eager `ftqueue submit` killed mid-job by SIGHUP, and by SIGKILL (lease 2 s): how long
    until its jobs were ended, and by whom;
  - the 10,001,000,000-job grid: time to refusal and peak memory, against a 1-job submit;
  - a hub id checked with the hub offline, refusing connections, or never answering;
  - a 1,000-job grid over one 20 MB data file: how often the file was hashed, and the time;
  - a 10 MB single-line data file: the length of the error message.

Needs Redis (FTQUEUE_TEST_REDIS, database FTQUEUE_TEST_REDIS_DB or 13); runs from the
repository root:  python bench/reliability.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import flush_redis, use
from ftqueue.store import db
from tests.procs import all_terminal, statuses, wait_for

REDIS = "{}/{}".format(
    os.environ.get("FTQUEUE_TEST_REDIS", "redis://127.0.0.1:6379"),
    os.environ.get("FTQUEUE_TEST_REDIS_DB", "13"),
)
FTQUEUE = [sys.executable, "-m", "ftqueue"]
ROWS: list[tuple[str, str, str]] = []


def row(fault: str, outcome: str, figure: str) -> None:
    ROWS.append((fault, outcome, figure))
    print(f"  {fault}: {outcome}; {figure}", flush=True)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def job_ids() -> list[int]:
    from sqlalchemy import select

    from ftqueue.store.schema import Job

    with db.session_scope() as session:
        return list(session.scalars(select(Job.id).order_by(Job.id)))


def eager_grid(work: Path, sig: int, lease: int) -> None:
    """Start a 3-job eager grid, signal it mid-job, time until every job has ended."""
    db.upgrade()
    before = set(job_ids())
    cmd = [*FTQUEUE, "submit", "lora", "--model", "synthetic:seconds=60,steps=60",
           "--dataset", "movie-snippets", "--seed", "0..2", "--force"]  # fmt: skip
    child = env(FTQUEUE_EAGER="1", FTQUEUE_LEASE_SECONDS=str(lease))
    proc = subprocess.Popen(cmd, env=child, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    wait_for(lambda: len(set(job_ids()) - before) == 3, timeout=60, what="the grid's rows")
    ids = sorted(set(job_ids()) - before)
    wait_for(lambda: "running" in statuses(ids).values(), timeout=60, what="a running job")
    time.sleep(1)
    started = time.perf_counter()
    os.killpg(proc.pid, sig)
    proc.wait()
    name = signal.Signals(sig).name
    if sig == signal.SIGKILL:
        # The next command that looks: `status --follow` waits for the lease, then ends them.
        subprocess.run([*FTQUEUE, "status", str(ids[0]), "--follow"], env=env(),
                       capture_output=True, check=False)  # fmt: skip
        subprocess.run([*FTQUEUE, "list"], env=env(), capture_output=True, check=True)
        who = f"`status --follow` and `list`, lease {lease} s"
    else:
        who = f"the submit process itself, on {name} (lease {lease} s not waited for)"
    seconds = time.perf_counter() - started
    ended = statuses(ids)
    assert all_terminal(ids), ended
    row(
        f"eager `ftqueue submit` of 3 jobs, {name} mid-job",
        f"{sum(s == 'failed' for s in ended.values())}/3 jobs failed (none left running), by {who}",
        f"{seconds:.2f} s from the signal to all 3 ended",
    )


def peak_rss_mb(args: list[str]) -> tuple[float, float, int, str]:
    """Run the CLI in a fresh interpreter; its wall time, peak RSS (MB), exit code, stderr."""
    probe = (
        "import resource, sys, time; from ftqueue.cli import cli; t = time.perf_counter()\n"
        "try:\n    cli(sys.argv[1:], prog_name='ftqueue')\nexcept SystemExit as e: code = e.code\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " code, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], env=env(FTQUEUE_EAGER="1"),
                          capture_output=True, text=True)  # fmt: skip
    seconds, rss, code = done.stderr.strip().splitlines()[-1].split()
    return float(seconds), float(rss), int(code), done.stderr


def huge_grid() -> None:
    db.upgrade()
    base = ["submit", "lora", "--model", "synthetic:seconds=0", "--dataset", "movie-snippets",
            "--json", "--force"]  # fmt: skip
    _, one_rss, _, _ = peak_rss_mb([*base, "--seed", "0"])
    seconds, rss, code, err = peak_rss_mb(
        [*base, "--seed", "0..10000", "--r", "1..1000", "--epochs", "1..1000"]
    )
    assert code == 2 and "over the limit of 10,000" in err, err
    row(
        "grid `--seed 0..10000 --r 1..1000 --epochs 1..1000` (10,001,000,000 jobs)",
        "refused with one line, exit 2, nothing written",
        f"{seconds * 1000:.0f} ms, peak RSS {rss:.0f} MB (a 1-job submit: {one_rss:.0f} MB)",
    )


def hub_ids() -> None:
    db.upgrade()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    cases = [
        ("HF_HUB_OFFLINE=1", {"HF_HUB_OFFLINE": "1"}),
        ("hub refusing connections", {"HF_ENDPOINT": "http://127.0.0.1:1"}),
        ("hub never answering", {"HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"}),
    ]
    for label, extra in cases:
        child = {k: v for k, v in env(**extra).items() if k != "HF_HUB_OFFLINE" or extra.get(k)}
        cmd = [*FTQUEUE, "submit", "lora", "--model", "org/some-model", "--dataset",
               "movie-snippets", "--force", "--json"]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(cmd, env=child, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        notes = json.loads(done.stdout)["notes"] if done.returncode == 0 else [done.stderr]
        assert done.returncode == 0 and len(notes) == 1, done.stderr
        row(f"hub id at submit, {label}", "one `note:` line, job queued unchecked",
            f"{seconds:.2f} s for the whole `ftqueue submit`")  # fmt: skip
    silent.close()
    flush_redis(REDIS)


def grid_over_one_file(work: Path) -> None:
    from ftqueue.inputs import fingerprint

    db.upgrade()
    path = work / "big.csv"
    line = "a sentence of a few words to make the file larger than it needs to be"
    with path.open("w") as out:
        out.write("text,label\n")
        for i in range(280_000):
            out.write(f"{line} {i},{i % 2}\n")
    size = path.stat().st_size / 1024**2
    cmd = [*FTQUEUE, "submit", "lora", "--model", "synthetic:seconds=0", "--dataset", str(path),
           "--seed", "0..999", "--json"]  # fmt: skip
    counting = (
        "import hashlib, sys; from ftqueue import fingerprint; real = hashlib.file_digest\n"
        "def count(f, d):\n    print('hashed', f.name, file=sys.stderr); return real(f, d)\n"
        "fingerprint.hashlib.file_digest = count\n"
        "from ftqueue.cli import cli; cli(sys.argv[1:], prog_name='ftqueue')"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", counting, *cmd[3:]], env=env(),
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = json.loads(done.stdout)["jobs"]
    hashed = done.stderr.count("hashed ")
    assert len(jobs) == 1000 and len({j["spec"]["data"]["fingerprint"] for j in jobs}) == 1
    del fingerprint
    row(
        f"1,000-job grid over one {size:.0f} MB CSV",
        f"{len(jobs):,} jobs pinned to its absolute path and one fingerprint",
        f"the file hashed {hashed} time(s); {seconds:.2f} s for the whole `ftqueue submit`",
    )
    flush_redis(REDIS)


def huge_line_file(work: Path) -> None:
    db.upgrade()
    path = work / "one-line.csv"
    path.write_text("y" * 10_000_000)
    cmd = [*FTQUEUE, "submit", "lora", "--model", "minilm", "--dataset", str(path)]
    done = subprocess.run(cmd, env=env(FTQUEUE_EAGER="1"), capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[:2000]
    row("a 10 MB single-line data file", "refused, exit 2, one line",
        f"{len(lines[0])} characters of message")  # fmt: skip


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ftqueue-reliability-"))
    use({"FTQUEUE_HOME": str(work), "FTQUEUE_BROKER_URL": REDIS, "FTQUEUE_EAGER": "0",
         "FTQUEUE_DATABASE_URL": f"sqlite:///{work / 'bench.db'}"})  # fmt: skip
    os.environ.pop("HF_HUB_OFFLINE", None)
    flush_redis(REDIS)
    print("measuring (SQLite, Redis):")
    eager_grid(work, signal.SIGHUP, lease=120)
    eager_grid(work, signal.SIGKILL, lease=2)
    huge_grid()
    hub_ids()
    grid_over_one_file(work)
    huge_line_file(work)
    print("\n| fault | what happens | measured |\n|---|---|---|")
    for fault, outcome, figure in ROWS:
        print(f"| {fault} | {outcome} | {figure} |")


if __name__ == "__main__":
    main()
