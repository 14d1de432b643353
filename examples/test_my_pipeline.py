"""Testing your own code built on ftqueue: copy this file next to your tests and run `pytest`.

`best_adapter` below stands for the code under test: it trains a small LoRA grid on the team's
data and picks the adapter with the best validation accuracy. The tests run it on a throwaway
queue (ftqueue's pytest plugin) with synthetic jobs, which sleep for a moment instead of
training and record made-up, repeatable numbers, so they need no model download and take
seconds: once with the jobs run in the test's process (`ftqueue_env`), once delivered through
Redis to a real `ftqueue worker` process (`ftqueue_worker`; skipped when no Redis is running).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ftqueue import api
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.testing import FtqueueEnv, WorkerProcess, synthetic_model

# Loads the fixtures; a conftest.py line, `pytest -p ftqueue.testing` or `pytest --ftqueue`
# does the same.
pytest_plugins = ["ftqueue.testing"]


# --- the code under test: in a real project it lives in your package ---------------------


def best_adapter(model: str, dataset: str, ranks: tuple[int, ...] = (4, 8, 16)) -> int:
    """Train one LoRA adapter per rank; the job id of the best on validation accuracy."""
    specs = [LoraSpec(model=model, data=DataSpec(dataset=dataset), r=r, epochs=2) for r in ranks]
    sub = api.submit(specs, tags=["nightly"])
    ended = api.wait(sub, timeout=300)
    failed = sorted(job for job, status in ended.items() if status != "succeeded")
    if failed:
        raise RuntimeError(f"training job(s) {failed} did not succeed")
    return max(sub.job_ids, key=lambda job: api.results(job, split="validation")[-1].accuracy)


# --- its tests -----------------------------------------------------------------------------

#: A synthetic job of 2 steps that takes 0.1 s.
QUICK = synthetic_model(seconds=0.1, steps=2)


@pytest.fixture
def reviews(tmp_path: Path) -> str:
    """A small labelled CSV file in the shape of the team's real data."""
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(40):
            writer.writerow([f"review number {i}", i % 2])
    return str(path)


def check_best(job: int) -> None:
    """The job chosen is a finished training run with the top score and an adapter on disk."""
    chosen = api.job(job)
    assert chosen["status"] == "succeeded"
    assert Path(chosen["output_path"], "adapter_model.safetensors").is_file()
    grid = api.jobs(sweep=chosen["sweep_id"])
    assert sorted(j["spec"]["r"] for j in grid) == [4, 8, 16]
    scores = {j["id"]: api.results(j["id"], split="validation")[-1].accuracy for j in grid}
    assert scores[job] == max(scores.values())
    # Both epochs were measured on validation, and the test split once, at the epoch the job
    # kept (its best on validation: `--select-epoch best`, the default).
    kept = chosen["selected_epoch"]
    assert kept in (1, 2)
    assert [(r.split, r.epoch) for r in api.results(job)] == [
        ("test", kept),
        ("validation", 1),
        ("validation", 2),
    ]


def test_best_adapter_in_process(ftqueue_env: FtqueueEnv, reviews: str) -> None:
    job = best_adapter(QUICK, reviews)
    check_best(job)
    assert api.job(job)["worker"].startswith("eager@")  # it ran in this process
    # Asked again, the queue reports the earlier jobs instead of training them again.
    assert best_adapter(QUICK, reviews) == job


def test_best_adapter_on_a_worker(ftqueue_worker: WorkerProcess, reviews: str) -> None:
    job = best_adapter(QUICK, reviews)
    check_best(job)
    # The worker process ran it (its log is there for a test that fails).
    assert api.job(job)["worker"].startswith("pytest"), ftqueue_worker.log()[-2000:]


def test_a_failed_training_job_stops_the_pipeline(ftqueue_env: FtqueueEnv, reviews: str) -> None:
    failing = synthetic_model(seconds=0.1, steps=2, fault="raise")
    with pytest.raises(RuntimeError, match="did not succeed"):
        best_adapter(failing, reviews)
