"""Predict jobs end to end (eager, and through Redis and a real worker), `ftqueue predict`,
`ftqueue export` from the command line, and bad input refused before anything is written."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftqueue.artifacts.publishing import ADAPTER_METADATA
from ftqueue.core.states import AttemptEnd
from ftqueue.execution import attempt
from ftqueue.settings import get_settings
from ftqueue.store import db, insert, lifecycle
from ftqueue.store.schema import Job
from ftqueue.training import label_texts
from tests.conftest import TrainedAdapter, job_count, run
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for

pytestmark = pytest.mark.slow

TEXTS = ["a gripping, beautifully acted film", "dull, far too long and never funny", "42"]


def register_adapter(adapter: TrainedAdapter, *, metadata: dict[str, object] | None = None) -> int:
    """A succeeded lora job whose published adapter is a copy of ``adapter``, recorded through
    the lifecycle a worker uses (so no training here)."""
    spec = adapter.spec
    new = insert.NewJob(
        kind="lora",
        spec=spec.to_dict(),
        spec_hash=spec.spec_hash(),
        model=spec.model,
        dataset=spec.source(),
    )
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(session, [new], max_attempts=1)
        job_id = job.id
    claim = lifecycle.claim(job_id, worker="trainer@test", lease_seconds=60)
    assert claim is not None
    target = get_settings().artifacts_dir / "adapters" / f"job-{job_id}"
    shutil.copytree(adapter.directory, target)
    if metadata:
        meta = json.loads((target / ADAPTER_METADATA).read_text())
        (target / ADAPTER_METADATA).write_text(json.dumps({**meta, **metadata}))
    assert lifecycle.record_success(claim, [], stats={}, publish=lambda: str(target))
    return job_id


def texts_csv(path: Path, texts: list[str] = TEXTS) -> Path:
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(path, index=False)
    return path


def check_predictions(directory: Path, adapter: TrainedAdapter, texts: list[str]) -> None:
    """Both files hold one row per text, in order, with ftqueue's own probabilities."""
    expected = label_texts(adapter.directory, texts)
    parquet = pd.read_parquet(directory / "predictions.parquet")
    csv = pd.read_csv(directory / "predictions.csv")
    for frame in (parquet, csv):
        assert list(frame.columns) == [
            "row", "text", "label", "score", "prob_negative", "prob_positive"
        ]  # fmt: skip
        assert frame["row"].tolist() == list(range(len(texts)))
        assert frame["text"].astype(str).tolist() == texts
        assert frame["label"].tolist() == expected.labels
        probs = frame[["prob_negative", "prob_positive"]].to_numpy()
        np.testing.assert_allclose(frame["score"], probs.max(1), atol=1e-6)
        np.testing.assert_allclose(probs, expected.probabilities, atol=1e-6)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    meta = json.loads((directory / "ftqueue_predictions.json").read_text())
    assert meta["stats"]["rows"] == len(texts)


def test_a_predict_job_in_eager_mode(
    eager: str, default_adapter: TrainedAdapter, tmp_path: Path
) -> None:
    adapter_job = register_adapter(default_adapter)
    source = texts_csv(tmp_path / "texts.csv")
    args = ("submit", "predict", "--adapter-job", str(adapter_job), "--input", str(source))
    code, out = run(*args, "--json")
    assert code == 0, out
    assert json.loads(out)["jobs"], out
    [job] = json.loads(out)["jobs"]
    assert job["status"] == "succeeded" and job["dataset"] == str(source)
    published = get_settings().artifacts_dir / "predictions" / f"job-{job['id']}"
    check_predictions(published, default_adapter, TEXTS)
    with db.session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.output_path == f"predictions/job-{job['id']}"
        assert row.stats is not None and row.stats["rows"] == 3
        assert row.stats["rows_per_second"] > 0 and row.samples_per_second is not None
    code, shown = run("show", str(job["id"]))
    assert code == 0 and str(published / "predictions.parquet") in shown.replace("\n", "")
    code, shown = run("show", str(job["id"]), "--json")
    assert json.loads(shown)["output_files"] == [
        str(published / "predictions.parquet"),
        str(published / "predictions.csv"),
    ]
    # A second delivery of the same message records nothing and leaves the files alone.
    before = (published / "predictions.parquet").stat().st_mtime_ns
    assert attempt.run_job(job["id"], worker="again@test") == AttemptEnd.SKIPPED
    assert (published / "predictions.parquet").stat().st_mtime_ns == before
    # The same file again is the same job; an edited file is a new one.
    code, again = run(*args)
    assert code == 0 and f"identical to job {job['id']} (succeeded)" in again
    texts_csv(source, [*TEXTS, "one more row"])
    code, out = run(*args, "--json")
    assert code == 0, out
    [edited] = json.loads(out)["jobs"]
    assert edited["id"] != job["id"] and edited["status"] == "succeeded"
    second = get_settings().artifacts_dir / "predictions" / f"job-{edited['id']}"
    check_predictions(second, default_adapter, [*TEXTS, "one more row"])


@pytest.mark.redis
def test_a_predict_job_through_redis_and_a_worker_process(
    sqlite_url: str, redis_url: str, default_adapter: TrainedAdapter, tmp_path: Path
) -> None:
    adapter_job = register_adapter(default_adapter)
    texts = [f"{t} (take {i})" for i in range(40) for t in TEXTS]
    source = texts_csv(tmp_path / "many.csv", texts)
    worker = WorkerProcess("predict", env=child_env(), log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        out = subprocess.run(
            [sys.executable, "-m", "ftqueue", "submit", "predict", "--adapter-job",
             str(adapter_job), "--input", str(source), "--eval-batch-size", "16", "--json"],
            env=child_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        [job] = json.loads(out.stdout)["jobs"]
        wait_for(lambda: all_terminal([job["id"]]), timeout=300, what="the predict job")
    finally:
        worker.stop()
    assert statuses([job["id"]]) == {job["id"]: "succeeded"}, worker.log()[-3000:]
    with db.session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.worker and row.worker.startswith("predict")
        assert row.attempts == 1 and row.stats is not None and row.stats["rows"] == 120
    published = get_settings().artifacts_dir / str(row.output_path)
    check_predictions(published, default_adapter, texts)
    assert not list(published.parent.glob(".staging-*"))


def test_predict_cli_labels_a_few_texts(sqlite_url: str, default_adapter: TrainedAdapter) -> None:
    job = register_adapter(default_adapter)
    code, out = run("predict", str(job), *TEXTS[:2], "--json")
    assert code == 0, out
    rows = json.loads(out)
    expected = label_texts(default_adapter.directory, TEXTS[:2])
    assert [r["label"] for r in rows] == expected.labels
    assert rows[0]["probabilities"]["positive"] == pytest.approx(
        float(expected.probabilities[0, 1]), abs=1e-6
    )
    code, table = run("predict", str(job), TEXTS[0])
    assert code == 0 and "p(positive)" in table
    code, out = run("predict", str(job), "  ")
    assert code == 2 and "every TEXT must hold some text" in out


def _bad_inputs(tmp: Path, adapter_job: int, evaluate_job: int) -> list[tuple[list[str], str]]:
    latin = tmp / "latin.csv"
    latin.write_bytes("text\ncr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1"))
    empty = tmp / "empty.csv"
    empty.write_bytes(b"")
    blank = tmp / "blank.csv"
    blank.write_text("text,n\nfine,1\n  ,2\n")
    ok = texts_csv(tmp / "ok.csv")
    job = ["--adapter-job", str(adapter_job)]
    return [
        ([*job, "--input", str(tmp / "missing.csv")], "does not exist"),
        ([*job, "--input", str(ok), "--text-column", "body"], "no column 'body'"),
        ([*job, "--input", str(empty)], "is empty"),
        ([*job, "--input", str(latin)], "is not UTF-8 text"),
        ([*job, "--input", str(blank)], "row 2: 'text' is empty"),
        (["--adapter-job", "999", "--input", str(ok)], "999: no such job"),
        (["--adapter-job", str(evaluate_job), "--input", str(ok)], "trains no adapter"),
    ]


def test_bad_predict_input_is_refused_before_anything_is_written(
    eager: str, default_adapter: TrainedAdapter, tmp_path: Path
) -> None:
    adapter_job = register_adapter(default_adapter)
    with db.session_scope(write=True) as session:
        spec = {"model": "minilm", "data": {"dataset": "movie-snippets"}}
        [evaluate] = insert.create_jobs(
            session,
            [insert.NewJob("evaluate", spec, "h", "minilm", "movie-snippets")],
            max_attempts=1,
        )
        evaluate_job = evaluate.id
    before = job_count()
    for args, message in _bad_inputs(tmp_path, adapter_job, evaluate_job):
        code, out = run("submit", "predict", *args)
        assert code == 2, (args, out)
        assert message in out and len(out.strip().splitlines()) == 1, out
    assert job_count() == before
    assert not (get_settings().artifacts_dir / "predictions").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_export_cli(sqlite_url: str, default_adapter: TrainedAdapter, tmp_path: Path) -> None:
    job = register_adapter(default_adapter)
    mean = {"pooling": "mean", "stock_class": None}
    spec = {**default_adapter.spec.to_dict(), "pooling": "mean"}
    mean_job = register_adapter(default_adapter, metadata={**mean, "spec": spec})
    target = tmp_path / "exported"
    for args, message in [
        ([str(mean_job), str(target)], "it was trained with --pooling mean"),
        (["999", str(target)], "job 999: no such job"),
    ]:
        code, out = run("export", *args)
        assert code == 2 and message in out and len(out.strip().splitlines()) == 1, out
        assert not target.exists()
    code, out = run("export", str(job), str(target), "--json")
    assert code == 0, out
    assert json.loads(out)["directory"] == str(target)
    assert (target / "model.safetensors").is_file()
    code, out = run("export", str(job), str(target))
    assert code == 2 and "exists and is not an empty directory" in out


def test_export_checks_everything_up_to_the_upload(
    sqlite_url: str, default_adapter: TrainedAdapter, tmp_path: Path
) -> None:
    """In subprocesses: huggingface_hub reads HF_HOME and HF_ENDPOINT when it is imported.

    The endpoint is a closed port on this machine, so nothing leaves it.
    """
    job = register_adapter(default_adapter)
    env = {k: v for k, v in child_env().items() if k != "HF_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    target = tmp_path / "pushed"

    def export(*args: str, **extra: str) -> tuple[int, str]:
        out = subprocess.run(
            [sys.executable, "-m", "ftqueue", "export", str(job), str(target), *args],
            env={**env, **extra}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return out.returncode, out.stderr + out.stdout

    for args, message in [
        (["--push-to-hub", "not a repo!"], "is not a hub repository id"),
        (["--push-to-hub", "my-model"], "names no owner"),
        (["--push-to-hub", "me/my-model"], "needs a Hugging Face token"),
    ]:
        code, out = export(*args)
        assert code == 2 and message in out and len(out.strip().splitlines()) == 1, out
        assert not target.exists()
    # With a token and a hub that does not answer, the export is whole and the failed upload
    # is one line saying how to retry it.
    code, out = export("--push-to-hub", "me/my-model", HF_TOKEN="hf_test_token_not_real")
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert "could not upload" in out and f"hf upload me/my-model {target}" in out
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
