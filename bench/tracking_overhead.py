"""What logging each job to MLflow costs a job: the same synthetic jobs with and without it.

Starts `mlflow server` (SQLite backend store) in a scratch directory, then runs short
synthetic two-epoch jobs through the real execution path in this process (FTQUEUE_EAGER=1,
a SQLite results database), alternating between no tracker (the baseline) and
FTQUEUE_MLFLOW_TRACKING_URI pointing at that server, and prints the median wall time per
job of each and the difference. The first tracked job, which imports mlflow, is left out.

    python bench/tracking_overhead.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import use
from ftqueue.store import db

MODEL = "synthetic:seconds=0,steps=4"


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=(root / "server.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")


def one_job(seed: int) -> float:
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec
    from ftqueue.submit.submission import submit
    from ftqueue.worker.tasks import run_eagerly

    spec = LoraSpec(model=MODEL, data=DataSpec(dataset="movie-snippets"), epochs=2, seed=seed)
    created = submit([spec]).created
    start = time.perf_counter()
    run_eagerly(created)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server, url = start_server(root)
        try:
            base = {"FTQUEUE_HOME": str(root / "home"), "FTQUEUE_EAGER": "1"}
            use(base)
            os.environ.pop("FTQUEUE_DATABASE_URL", None)
            use(base)
            db.upgrade()
            plain: list[float] = []
            tracked: list[float] = []
            for i in range(args.jobs + 1):
                use({**base, "FTQUEUE_MLFLOW_TRACKING_URI": ""})
                plain.append(one_job(2 * i))
                use({**base, "FTQUEUE_MLFLOW_TRACKING_URI": url})
                tracked.append(one_job(2 * i + 1))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    plain, tracked = plain[1:], tracked[1:]  # the first of each: imports, first connection
    p, t = statistics.median(plain), statistics.median(tracked)
    print(f"{'jobs':<34} {'median s/job':>12} {'p90 s/job':>10}")
    print(
        f"{'no tracker (baseline)':<34} {p:>12.3f} {statistics.quantiles(plain, n=10)[-1]:>10.3f}"
    )
    print(f"{'FTQUEUE_MLFLOW_TRACKING_URI set':<34} {t:>12.3f} "
          f"{statistics.quantiles(tracked, n=10)[-1]:>10.3f}")  # fmt: skip
    print(f"MLflow adds {1000 * (t - p):.0f} ms per job ({t / p:.2f}x the baseline's wall time), "
          f"{args.jobs} jobs each, synthetic 2-epoch jobs")  # fmt: skip


if __name__ == "__main__":
    main()
