"""`ftqueue submit`: wiring in eager mode, grids, de-duplication, and bad input refused early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from ftqueue.queue import broker
from ftqueue.settings import reset_settings
from ftqueue.store import db
from ftqueue.store.schema import Job, JobEvent, Result
from tests.conftest import job_count, run

SYN = ["--model", "synthetic:seconds=0.05,steps=2", "--dataset", "movie-snippets"]


def test_eager_submit_runs_the_task_and_records(eager: str, isolated_home: Path) -> None:
    code, out = run("submit", "lora", *SYN, "--epochs", "2", "--tag", "smoke", "--json")
    assert code == 0, out
    payload = json.loads(out)
    [job] = payload["jobs"]
    assert job["status"] == "succeeded"
    with db.session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        assert row.worker and row.worker.startswith("eager@")
        assert row.attempts == 1 and row.tag_names == ["smoke"]
        splits = session.execute(
            select(Result.split, Result.epoch).where(Result.job_id == row.id)
        ).all()
        events = session.scalars(select(JobEvent.status).where(JobEvent.job_id == row.id)).all()
    # Test is measured once, on the epoch the job kept (its selected_epoch).
    assert row.selected_epoch in (1, 2)
    assert sorted(splits) == sorted(
        [("test", row.selected_epoch), ("validation", 1), ("validation", 2)]
    )
    assert events == ["queued", "running", "succeeded"]
    assert row.output_path == f"adapters/job-{row.id}"  # relative to the artifacts root
    adapter = isolated_home / "artifacts" / row.output_path
    assert (adapter / "adapter_model.safetensors").is_file()


def test_grid_expands_under_one_sweep(eager: str) -> None:
    code, out = run(
        "submit", "lora", *SYN, "--r", "8,16", "--lr", "1e-4,3e-4", "--seed", "0..1", "--json"
    )
    assert code == 0, out
    payload = json.loads(out)
    assert len(payload["jobs"]) == 8 and payload["sweep_id"]
    combos = {(j["spec"]["r"], j["spec"]["lr"], j["spec"]["seed"]) for j in payload["jobs"]}
    assert combos == {(r, lr, s) for r in (8, 16) for lr in (1e-4, 3e-4) for s in (0, 1)}
    with db.session_scope() as session:
        sweeps = session.scalars(select(Job.sweep_id).distinct()).all()
    assert sweeps == [payload["sweep_id"]]


def test_identical_spec_is_not_run_again_unless_forced(eager: str) -> None:
    code, first = run("submit", "lora", *SYN, "--seed", "7", "--json")
    assert code == 0
    first_id = json.loads(first)["jobs"][0]["id"]
    code, again = run("submit", "lora", *SYN, "--seed", "7")
    assert code == 0
    assert f"identical to job {first_id} (succeeded)" in again
    assert job_count() == 1
    code, forced = run("submit", "lora", *SYN, "--seed", "7", "--force", "--json")
    assert code == 0 and json.loads(forced)["jobs"][0]["id"] != first_id
    assert job_count() == 2


def test_wait_exit_code_says_how_the_job_ended(eager: str) -> None:
    code, out = run(
        "submit",
        "lora",
        "--model",
        "synthetic:seconds=0.05,fault=raise",
        "--dataset",
        "movie-snippets",
    )
    assert code == 1, out
    assert "synthetic failure" in out
    code, _ = run("submit", "evaluate", *SYN)
    assert code == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--epochs", "1000000"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "100000"], "--batch-size"),
        (["--r", "0"], "--r"),
        (["--r", "5000"], "--r"),
        (["--dropout", "1"], "--dropout"),
        (["--dropout", "-0.1"], "--dropout"),
        (["--tag", "../etc"], "--tag"),
        (["--tag", "a/b"], "--tag"),
        (["--name", "two\nlines"], "--name"),
        (["--name", "nul\x00byte"], "--name"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(
    eager: str, args: list[str], needle: str
) -> None:
    code, out = run("submit", "lora", *SYN, *args)
    assert code == 2, out
    assert needle in out and "Traceback" not in out
    assert job_count() == 0


def test_unknown_model_and_dataset_file(eager: str, tmp_path: Path) -> None:
    code, out = run("submit", "lora", "--model", "./no/such/dir", "--dataset", "movie-snippets")
    assert code == 2 and "unknown model" in out
    code, out = run("submit", "lora", *SYN[:2], "--dataset", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in out
    assert job_count() == 0


def test_adapter_job_must_exist_and_have_succeeded(eager: str) -> None:
    code, out = run("submit", "evaluate", "--adapter-job", "424242", *SYN)
    assert code == 2 and "no such job" in out
    code, failed = run(
        "submit",
        "lora",
        "--model",
        "synthetic:seconds=0.05,fault=raise",
        "--dataset",
        "movie-snippets",
        "--json",
    )
    failed_id = json.loads(failed)["jobs"][0]["id"]
    code, out = run("submit", "evaluate", "--adapter-job", str(failed_id), *SYN)
    assert code == 2 and "not succeeded" in out
    assert job_count() == 1


def test_redis_down_at_submit_writes_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_BROKER_URL", "redis://127.0.0.1:1/0")
    reset_settings()
    code, out = run("submit", "lora", *SYN)
    assert code == 1
    assert "127.0.0.1:1" in out and "FTQUEUE_EAGER=1" in out
    assert out.strip().count("\n") == 0
    assert job_count() == 0


def test_database_down_at_submit_publishes_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    monkeypatch.setenv("FTQUEUE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    reset_settings()
    code, out = run("submit", "lora", *SYN)
    assert code == 1 and "127.0.0.1:1/none" in out
    client = redis.Redis.from_url(redis_url)
    assert broker.queue_length("lora", client) == 0 and client.hlen("unacked") == 0


def test_cancel_unknown_job(eager: str) -> None:
    code, out = run("cancel", "999")
    assert code == 2 and "no job 999" in out


def test_output_dir_must_stay_inside_the_artifacts_directory(eager: str, isolated_home: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    artifacts = isolated_home / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (artifacts / "linked").symlink_to(outside)
    for bad, needle in [("../escape", "leaves"), ("/etc", "outside"), ("linked/x", "symlink")]:
        code, out = run("submit", "lora", *SYN, "--output-dir", bad)
        assert code == 2 and needle in out, out
    assert job_count() == 0
    code, out = run("submit", "lora", *SYN, "--output-dir", "experiments/rt", "--json")
    assert code == 0, out
    job_id = json.loads(out)["jobs"][0]["id"]
    with db.session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None
    assert row.output_path == f"experiments/rt/job-{job_id}"
    assert not list(outside.iterdir())  # nothing went through the link


def test_a_huge_grid_is_refused_before_it_is_built(eager: str) -> None:
    """The mistyped grid that once grew to 11.6 GB: refused from the axis lengths alone."""
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    code, out = run("submit", "lora", *SYN, "--seed", "0..10000", "--r", "1..1000",
                    "--epochs", "1..1000")  # fmt: skip
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == 2, out
    assert "10,001,000,000 jobs" in out and "FTQUEUE_MAX_GRID" in out
    assert out.strip().count("\n") == 0
    assert peak < 20 * 1024**2 and seconds < 5, (peak, seconds)
    assert job_count() == 0


def test_the_grid_cap_is_configurable(eager: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTQUEUE_MAX_GRID", "4")
    reset_settings()
    code, out = run("submit", "lora", *SYN, "--seed", "0..2", "--r", "8,16")
    assert code == 2 and "6 jobs (2 --r x 3 --seed), over the limit of 4" in out, out
    assert job_count() == 0
    code, out = run("submit", "lora", *SYN, "--seed", "0..1", "--r", "8,16", "--json")
    assert code == 0 and len(json.loads(out)["jobs"]) == 4


def test_grid_expansion_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools
    import tracemalloc

    from ftqueue.cli.options import INTS, build_specs, expand
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec

    monkeypatch.setenv("FTQUEUE_MAX_GRID", str(10**15))
    reset_settings()
    tracemalloc.start()
    seeds = INTS.convert("0..999999999", None, None)
    ranks = INTS.convert("1..1000,2048", None, None)
    assert (len(seeds), len(ranks)) == (10**9, 1001)
    fixed = {"model": "minilm", "data": DataSpec(dataset="x.csv")}
    specs = build_specs(LoraSpec, expand(fixed, {"seed": seeds, "r": ranks}))
    first = list(itertools.islice(specs, 3))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(s.seed, s.r) for s in first] == [(0, 1), (0, 2), (0, 3)]
    assert peak < 5 * 1024**2, peak


def test_submit_reads_its_specs_once_and_stops_at_the_cap(
    eager: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue.errors import SpecError
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec
    from ftqueue.submit.submission import submit

    monkeypatch.setenv("FTQUEUE_MAX_GRID", "10")
    reset_settings()
    made: list[int] = []

    def specs():  # type: ignore[no-untyped-def]
        for seed in range(10**6):
            made.append(seed)
            yield LoraSpec(model=SYN[1], data=DataSpec(dataset="movie-snippets"), seed=seed)

    with pytest.raises(SpecError, match="more than 10 jobs in one submit"):
        submit(specs())
    assert len(made) == 11 and job_count() == 0


def test_an_adapter_is_evaluated_only_with_its_own_base_model(eager: str) -> None:
    code, out = run("submit", "lora", *SYN, "--json")
    adapter_job = json.loads(out)["jobs"][0]["id"]
    code, out = run(
        "submit", "evaluate", "--adapter-job", str(adapter_job), "--model", "minilm",
        "--dataset", "movie-snippets",
    )  # fmt: skip
    assert code == 2, out
    assert f"--adapter-job {adapter_job} was trained on model {SYN[1]}, not minilm" in out
    assert out.strip().count("\n") == 0 and job_count() == 1
    code, out = run("submit", "evaluate", "--adapter-job", str(adapter_job),
                    "--dataset", "movie-snippets")  # fmt: skip
    assert code == 0, out
