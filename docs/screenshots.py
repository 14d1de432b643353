"""Make the documentation's pictures in one command, with headless Chromium.

    python docs/screenshots.py                        # everything, into docs/images/
    python docs/screenshots.py --report-home DIR      # the report from the results in DIR

It starts what each picture shows, on local ports, in a temporary FTQUEUE_HOME: a worker on
the Redis database FTQUEUE_TEST_REDIS_DB (default 13, flushed), Flower watching it while a
synthetic job succeeds and one fails, an MLflow server the worker logs both runs to, and
optuna-dashboard on an Optuna sweep of synthetic trials. The report picture and the HTML
report come from real training: the results in --report-home, or else a small grid on the
offline demo model and data trained here first (several minutes on 2 CPU cores).

Needs the development install (flower, mlflow, optuna-dashboard) and a `chromium` on PATH
(Debian: `apt-get install chromium`). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ftqueue.testing.workers import end_group

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


@contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process in its own group, ended with its children on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        end_group(proc)


def ftqueue(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ftqueue", *args], env=env, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise SystemExit(f"ftqueue {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def shoot(
    url: str, name: str, *, width: int = 1400, height: int = 900, wait_ms: int = 8000
) -> None:
    """A PNG of the page at `url`, after `wait_ms` of its scripts running."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH: install it (Debian: apt-get install chromium)")
    target = IMAGES / name
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}",
         f"--screenshot={target}", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"wrote {target.relative_to(ROOT)}")


def report(home: Path | None, work: Path, env: dict[str, str]) -> None:
    """The report's plot and HTML page, from real training results."""
    env = dict(env, FTQUEUE_EAGER="1")
    if home is None:
        home = work / "real"
        env["FTQUEUE_HOME"] = str(home)
        ftqueue(env, "db", "upgrade")
        data = ["--model", "minilm", "--dataset", "movie-snippets"]
        subset = ["--train-samples", "800", "--eval-samples", "300"]
        ftqueue(env, "submit", "evaluate", *data, *subset, "--wait")
        ftqueue(env, "submit", "lora", *data, *subset, "--r", "4,16", "--lr", "3e-4,1e-3", "--wait")
    env["FTQUEUE_HOME"] = str(home)
    ftqueue(env, "report", "--plot", str(IMAGES / "report-plot.png"))
    print("wrote docs/images/report-plot.png")
    page = work / "report.html"
    ftqueue(env, "report", "--html", str(page))
    shoot(page.as_uri(), "html-report.png", height=680, wait_ms=2000)


def services(work: Path, env: dict[str, str]) -> None:
    """Flower and MLflow watching a worker run a job that succeeds and one that fails."""
    flower_port, mlflow_port = free_port(), free_port()
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
    env = dict(env, FTQUEUE_MLFLOW_TRACKING_URI=mlflow_uri, FTQUEUE_MLFLOW_EXPERIMENT="demo")
    ftqueue(env, "db", "upgrade")
    mlflow = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
              "--port", str(mlflow_port), "--workers", "1",
              "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
              "--artifacts-destination", str(work / "mlflow-artifacts")]  # fmt: skip
    flower = [sys.executable, "-m", "celery", "-A", "ftqueue.queue.app:app", "flower",
              "--address=127.0.0.1", f"--port={flower_port}"]  # fmt: skip
    worker = [sys.executable, "-m", "ftqueue", "worker", "--processes", "1"]
    with (
        started(mlflow, env, work / "mlflow.log"),
        started(flower, env, work / "flower.log"),
        started(worker, env, work / "worker.log"),
    ):
        wait_for(lambda: answers(f"{mlflow_uri}/health"), "the MLflow server")
        wait_for(lambda: answers(f"http://127.0.0.1:{flower_port}/"), "Flower")
        synthetic = "synthetic:seconds=2,steps=20"
        data = ["--dataset", "movie-snippets", "--wait"]
        ftqueue(env, "submit", "lora", "--model", synthetic, "--r", "8,16", *data)
        ftqueue(env, "submit", "lora", "--model", synthetic + ",fault=raise", *data, check=False)
        time.sleep(3)  # the last task events reach Flower
        shoot(f"http://127.0.0.1:{flower_port}/tasks", "flower-tasks.png", height=560)
        run_id = mlflow_run(mlflow_uri)
        shoot(f"{mlflow_uri}/#/experiments/{run_id[0]}/runs/{run_id[1]}", "mlflow-run.png",
              height=1000, wait_ms=15000)  # fmt: skip


def mlflow_run(uri: str) -> tuple[str, str]:
    """The experiment and run id of the first succeeded job's run."""
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=demo"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        experiment = json.load(response)["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [experiment], "order_by": ["attributes.start_time ASC"]})
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/runs/search",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.load(response)["runs"]
    return experiment, runs[0]["info"]["run_id"]


def optuna_sweep(work: Path, env: dict[str, str]) -> None:
    """optuna-dashboard on the study of an Optuna sweep of synthetic trials."""
    env = dict(env, FTQUEUE_EAGER="1", FTQUEUE_HOME=str(work / "optuna"))
    ftqueue(env, "db", "upgrade")
    sweep = work / "optuna-sweep.yaml"
    sweep.write_text(
        "name: optuna-demo\nmodel: synthetic:seconds=0.2\ndataset: movie-snippets\n"
        "fixed: {epochs: 3}\nspace:\n  lr: {low: 1.0e-4, high: 3.0e-3, log: true}\n"
        "  r: [4, 8, 16, 32]\n  dropout: {low: 0.0, high: 0.2}\nmethod: optuna\nseed: 0\n"
        "budget: {max_jobs: 16, max_parallel: 2}\n"
        "early_stopping: {type: asha, eta: 2, rungs: [1, 2]}\n"
    )
    ftqueue(env, "sweep", str(sweep))
    storage = f"sqlite:///{work / 'optuna' / 'ftqueue.optuna.db'}"
    port = free_port()
    dashboard = ["optuna-dashboard", storage, "--host", "127.0.0.1", "--port", str(port)]
    with started(dashboard, env, work / "optuna-dashboard.log"):
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/api/studies"), "optuna-dashboard")
        shoot(f"http://127.0.0.1:{port}/dashboard/studies/1", "optuna-dashboard.png",
              height=1100, wait_ms=10000)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-home", type=Path, help="an FTQUEUE_HOME with real results")
    parser.add_argument(
        "--only", choices=["report", "services", "optuna"], action="append", help="some pictures"
    )
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    db = os.environ.get("FTQUEUE_TEST_REDIS_DB", "13")
    with tempfile.TemporaryDirectory(prefix="ftqueue-shots-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTQUEUE_")}
        env.update(
            FTQUEUE_HOME=str(work / "home"),
            FTQUEUE_BROKER_URL=f"redis://127.0.0.1:6379/{db}",
            HF_HUB_OFFLINE="1",
            PYTHONPATH=str(ROOT),
        )
        subprocess.run(["redis-cli", "-n", db, "flushdb"], check=True, capture_output=True)
        wanted = set(args.only or ["report", "services", "optuna"])
        if "report" in wanted:
            report(args.report_home, work, env)
        if "services" in wanted:
            services(work, env)
        if "optuna" in wanted:
            optuna_sweep(work, env)


if __name__ == "__main__":
    main()
