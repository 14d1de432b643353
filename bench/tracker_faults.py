"""What a misbehaving MLflow tracker costs a worker process: jobs in a row, one process.

Runs short synthetic jobs through the real execution path in this process (FTQUEUE_EAGER=1,
a SQLite results database), one after another as a worker process runs them, with
FTQUEUE_MLFLOW_TRACKING_URI unset (the baseline), pointing at a TCP server on 127.0.0.1
that accepts connections and never answers, and pointing at a SQLite file in a directory
that does not exist. Prints the total wall time of each run, what the tracker added, and the
warnings the tracker logged. MLflow's own per-call bounds apply (5 s, no retries) unless
MLFLOW_HTTP_REQUEST_TIMEOUT / MLFLOW_HTTP_REQUEST_MAX_RETRIES are set.

    python bench/tracker_faults.py [--jobs 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import use
from bench.tracking_overhead import one_job
from ftqueue.store import db


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def silent_server() -> str:
    """A server that accepts every connection and never sends a byte (a hung tracker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs in a row per tracker")
    args = parser.parse_args()
    import mlflow.tracking  # noqa: F401  (its import, seconds, is no job's cost)

    warnings = Warnings()
    logging.getLogger("ftqueue.execution.tracking").addHandler(warnings)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = {"FTQUEUE_HOME": str(root / "home"), "FTQUEUE_EAGER": "1"}
        os.environ.pop("FTQUEUE_DATABASE_URL", None)
        use(base)
        db.upgrade()
        trackers = {
            "no tracker (baseline)": "",
            "server that never answers": silent_server(),
            "sqlite URI, directory missing": f"sqlite:///{root / 'missing' / 'mlflow.db'}",
        }
        seed, totals, said = 0, {}, {}
        for name, uri in trackers.items():
            use({**base, "FTQUEUE_MLFLOW_TRACKING_URI": uri})
            before = len(warnings.lines)
            started = time.perf_counter()
            for _ in range(args.jobs):
                one_job(seed)
                seed += 1
            totals[name] = time.perf_counter() - started
            said[name] = warnings.lines[before:]
    baseline = totals["no tracker (baseline)"]
    print(f"{'tracker':<32} {'jobs':>5} {'total s':>8} {'added s':>8} {'warnings':>9}")
    for name, total in totals.items():
        added = total - baseline
        print(f"{name:<32} {args.jobs:>5} {total:>8.2f} {added:>8.2f} {len(said[name]):>9}")
    for name, lines in said.items():
        for line in lines:
            print(f"  {name}: {line}")


if __name__ == "__main__":
    main()
