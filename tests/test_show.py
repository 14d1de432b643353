"""`ftqueue show JOB`: spec, status history, results per epoch, timings, stats, error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import get_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job


def run_jobs(monkeypatch: pytest.MonkeyPatch, *specs: LoraSpec) -> list[int]:
    from ftqueue.submit.submission import submit
    from ftqueue.worker.tasks import run_eagerly

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    created = submit(list(specs), tags=["shown"]).created
    run_eagerly(created)
    return [job.id for job in created]


def show(*args: str) -> Any:
    return CliRunner().invoke(cli, ["show", *args])


def test_show_json_has_the_whole_job(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LoraSpec(model="synthetic:seconds=0,steps=2", data=DataSpec(dataset="movie-snippets"),
                    r=4, epochs=3, seed=5)  # fmt: skip
    (job_id,) = run_jobs(monkeypatch, spec)
    out = show(str(job_id), "--json")
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    with db.session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        expected_results = [(r.split, r.epoch, r.accuracy, r.loss, r.macro_f1) for r in job.results]
        stats, adapter = job.stats, job.output_path
    assert payload["spec"] == spec.to_dict() and payload["status"] == "succeeded"
    assert [e["status"] for e in payload["events"]] == ["queued", "running", "succeeded"]
    got = [(r["split"], r["epoch"], r["accuracy"], r["loss"], r["macro_f1"])
           for r in payload["results"]]  # fmt: skip
    assert got == expected_results
    # Validation after each epoch; test once, at the epoch the job kept (its best).
    kept = payload["selected_epoch"]
    assert sorted((r["split"], r["epoch"]) for r in payload["results"]) == sorted(
        [("test", kept), ("validation", 1), ("validation", 2), ("validation", 3)]
    )
    # The row holds the location relative to the artifacts root; JSON shows where it is.
    assert adapter == f"adapters/job-{job_id}"
    assert payload["stats"] == stats and Path(payload["output_path"]).is_dir()
    assert payload["output_path"] == str(get_settings().artifacts_dir / adapter)
    assert payload["tags"] == ["shown"] and payload["queued_at"] is not None


def test_show_text_has_every_section(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = DataSpec(dataset="movie-snippets")
    ok, broken = run_jobs(
        monkeypatch,
        LoraSpec(model="synthetic:seconds=0,steps=2", data=data, epochs=2),
        LoraSpec(model="synthetic:seconds=0,steps=2,fault=raise", data=data),
    )
    out = show(str(ok))
    assert out.exit_code == 0, out.output
    for section in ("spec", "status history", "results", "timings", "stats", "adapter"):
        assert section in out.output
    with db.session_scope() as s:
        job = s.get(Job, ok)
        assert job is not None
        for result in job.results:
            assert f"{result.accuracy:.4f}" in out.output
    failed = show(str(broken))
    assert failed.exit_code == 0 and "failed" in failed.output
    assert "synthetic failure requested" in failed.output


def test_show_unknown_job_is_one_line(sqlite_url: str) -> None:
    out = show("424242")
    assert out.exit_code == 2 and out.output.count("\n") == 1
    assert "no job 424242" in out.output and "ftqueue list" in out.output


def test_show_says_who_submitted_where_it_runs_and_how_soon(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue import api

    monkeypatch.setenv("FTQUEUE_USER", "alice")
    reset_settings()
    spec = LoraSpec(model="synthetic:seconds=0,steps=2", data=DataSpec(dataset="movie-snippets"))
    (routed,) = api.submit([spec], gpu_class="a100", priority="high").created
    (plain,) = api.submit([spec.replace(seed=1)]).created
    routed_text, plain_text = (" ".join(show(str(j.id)).output.split()) for j in (routed, plain))
    assert "user alice" in routed_text
    assert "a100 (its workers only)" in routed_text and "high" in routed_text
    # A normal job of no class says neither: every worker takes it, in turn.
    assert "user alice" in plain_text and "GPU class" not in plain_text
    assert "priority" not in plain_text
