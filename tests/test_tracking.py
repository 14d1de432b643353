"""Jobs as MLflow runs: a real `mlflow server` (SQLite backend) and a real worker process.

The worker has FTQUEUE_MLFLOW_TRACKING_URI set; what MLflow holds afterwards is read back
with MLflow's own client and compared with the job rows and results ftqueue recorded.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ftqueue.execution.tracking import flatten
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import get_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job, Result
from ftqueue.submit.submission import submit
from ftqueue.testing.workers import end_group
from ftqueue.worker.tasks import run_eagerly
from tests.procs import WorkerProcess, all_terminal, child_env, wait_for

pytest.importorskip("mlflow")
pytestmark = [pytest.mark.slow, pytest.mark.redis]

EXPERIMENT = "ftqueue-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with a SQLite backend store, on a free local port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        end_group(proc)


def synthetic(seconds: float, *, fault: str | None = None, seed: int = 0) -> LoraSpec:
    model = f"synthetic:seconds={seconds},steps=6" + (f",fault={fault}" if fault else "")
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), epochs=2, r=8, seed=seed)


def test_each_job_is_an_mlflow_run(
    mlflow_server: str, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    # A short lease, so that the job whose first attempt kills its worker is taken over soon.
    env = child_env(
        FTQUEUE_MLFLOW_TRACKING_URI=mlflow_server,
        FTQUEUE_MLFLOW_EXPERIMENT=EXPERIMENT,
        FTQUEUE_LEASE_SECONDS="2",
    )
    client = MlflowClient(tracking_uri=mlflow_server)
    worker = WorkerProcess("tracked", env=env, log_dir=tmp_path).start()

    def ended_runs() -> dict[tuple[str, str], Any]:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        found = client.search_runs([experiment.experiment_id]) if experiment else []
        return {
            (r.data.tags["ftqueue.job_id"], r.data.tags["ftqueue.attempt"]): r
            for r in found
            if r.info.status != "RUNNING"
        }

    try:
        worker.wait_ready()
        ok = submit([synthetic(0.6, seed=1)], sweep="s1", tags=["nightly", "mlflow"]).created[0]
        bad = submit([synthetic(0.6, fault="raise", seed=2)]).created[0]
        crashed = submit([synthetic(0.6, fault="crash-first", seed=3)]).created[0]
        ids = [ok.id, bad.id, crashed.id]
        wait_for(lambda: all_terminal(ids), timeout=180, what="the three jobs to end")
        # A run ends in MLflow just after the job's row does.
        wait_for(lambda: len(ended_runs()) == 4, timeout=60, what="the MLflow runs to end")
    finally:
        worker.stop()
    every = ended_runs()
    assert set(every) == {
        (str(ok.id), "1"),
        (str(bad.id), "1"),
        (str(crashed.id), "1"),
        (str(crashed.id), "2"),
    }, worker.log()[-3000:]
    # The attempt that died with its worker was ended when the next attempt started.
    assert every[str(crashed.id), "1"].info.status == "KILLED"
    assert every[str(crashed.id), "1"].data.tags["ftqueue.outcome"] == "worker lost"
    assert every[str(crashed.id), "2"].info.status == "FINISHED"
    runs = {job: run for (job, attempt), run in every.items() if attempt == "1"}

    with db.session_scope() as session:
        job = session.get(Job, ok.id)
        assert job is not None and job.status == "succeeded"
        results = {
            (r.split, r.epoch): r
            for r in session.scalars(select(Result).where(Result.job_id == ok.id))
        }
        spec, output_path, job_stats = dict(job.spec), job.output_path, dict(job.stats or {})

    run = runs[str(ok.id)]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"job-{ok.id}"
    # The spec as params, nested keys dotted, lists comma-joined.
    params = run.data.params
    assert params["r"] == "8" and params["epochs"] == "2"
    # Every value of the recipe is a param, also those the spec left to the device (logged
    # as the job chose them when it ended).
    recipe = job_stats["recipe"]
    assert {k: params[k] for k in recipe} == dict(flatten(recipe))
    assert any(spec.get(k) is None for k in recipe), "the test wants a value left open"
    assert params["data.dataset"] == "movie-snippets"
    assert params["target_modules"] == ",".join(spec["target_modules"])
    tags = run.data.tags
    assert tags["ftqueue.kind"] == "lora" and tags["ftqueue.sweep_id"] == "s1"
    assert tags["ftqueue.tags"] == "mlflow,nightly"
    # Where the output is (the row holds it relative to the artifacts root).
    assert output_path and tags["ftqueue.output_path"] == str(
        get_settings().artifacts_dir / output_path
    )
    assert tags["ftqueue.worker"].startswith("tracked")
    # Per-epoch metrics with the epoch as step, equal to what ftqueue recorded.
    history = client.get_metric_history(run.info.run_id, "validation_accuracy")
    assert sorted((m.step, m.value) for m in history) == [
        (1, pytest.approx(results["validation", 1].accuracy)),
        (2, pytest.approx(results["validation", 2].accuracy)),
    ]
    losses = client.get_metric_history(run.info.run_id, "validation_loss")
    assert sorted(m.step for m in losses) == [1, 2]
    # Test is measured once, on the epoch the job kept.
    [kept] = [epoch for split, epoch in results if split == "test"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(results["test", kept].accuracy)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy")] == [kept]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert run.data.metrics["samples_per_second"] > 0

    failed = runs[str(bad.id)]
    assert failed.info.status == "FAILED"
    assert "synthetic failure requested" in failed.data.tags["ftqueue.error"]
    assert "test_accuracy" not in failed.data.metrics


def test_an_unreachable_tracker_does_not_fail_the_job(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    monkeypatch.setenv("FTQUEUE_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    reset_settings()
    created = submit([synthetic(0.1)]).created
    with caplog.at_level(logging.WARNING, logger="ftqueue.execution.tracking"):
        run_eagerly(created)
    with db.session_scope() as session:
        job = session.get(Job, created[0].id)
        assert job is not None and job.status == "succeeded"
    warnings = [r for r in caplog.records if r.name == "ftqueue.execution.tracking"]
    assert len(warnings) == 1 and "not logged to MLflow" in warnings[0].getMessage()
