"""Sweep files, trials, rung decisions and `ftqueue sweep` / `report --sweep` in-process.

The multi-worker behaviour (two workers at a rung, deaths, cancels, Optuna) is in
test_sweep_queue.py; here the pieces, eager runs, and one real minilm sweep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import func, select

from ftqueue.artifacts.publishing import ADAPTER_METADATA
from ftqueue.cli import cli
from ftqueue.errors import JobSuperseded, SweepFileError
from ftqueue.execution import attempt
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, insert, lifecycle
from ftqueue.store.schema import Job, Result, RungDecision, Sweep
from ftqueue.sweeps import asha, sweepfile
from ftqueue.sweeps.methods import grid as grid_method
from ftqueue.sweeps.methods import random_search

BASE: dict[str, Any] = {
    "model": "synthetic:seconds=0.05,steps=6",
    "dataset": "movie-snippets",
    "fixed": {"epochs": 3},
    "space": {"lr": [1e-4, 3e-4, 1e-3], "r": [4, 8, 16]},
    "method": "grid",
    "budget": {"max_parallel": 2},
    "early_stopping": {"eta": 3},
}


def write(tmp_path: Path, raw: Any, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="ftqueue")
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"space": {"lr": [0.0]}}, "space.lr: --lr must be"),
        ({"space": {"lr": {"low": 1e-5, "high": 1e-2, "log": True}}}, "space.lr: a range cannot"),
        ({"space": {"nope": [1]}}, "space.nope: not a searchable lora setting"),
        ({"space": {"r": 8}}, "space.r: a single value"),
        ({"method": "bayes"}, "method: must be one of grid, random, optuna"),
        ({"method": "random"}, "budget.max_jobs: missing"),
        ({"early_stopping": {"eta": 1}}, "early_stopping.eta: must be a whole number in 2..100"),
        (
            {"early_stopping": {"rungs": [3]}},
            "early_stopping.rungs: must be a whole number in 1..2",
        ),
        ({"budget": {"max_parallel": 0}}, "budget.max_parallel: must be a whole number"),
        ({"fixed": {"epochs": 3, "bogus": 1}}, "fixed.bogus: not a lora setting"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"kind": "evaluate"}, "kind: must be a training kind"),
    ],
)
def test_a_bad_sweep_file_is_one_line_exit_2_and_writes_nothing(
    sqlite_url: str, tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    path = write(tmp_path, {**BASE, **change})
    code, out = invoke("sweep", str(path))
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1, out
    assert str(path) in lines[0] and needle in lines[0], lines[0]
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Sweep)) == 0


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SweepFileError, match="cannot read it"):
        sweepfile.load(tmp_path / "missing.yaml")
    with pytest.raises(SweepFileError, match="not valid YAML"):
        sweepfile.load(write(tmp_path, "space: [unclosed"))
    toml = write(tmp_path, 'model = "minilm"\ndataset = "movie-snippets"\n'
                 "[space]\nlr = [0.001, 0.003]\n", "s.toml")  # fmt: skip
    assert sweepfile.load(toml).grid_size == 2


def test_grid_and_random_trials_are_functions_of_the_file(tmp_path: Path) -> None:
    grid = sweepfile.load(write(tmp_path, BASE))
    assert grid.max_jobs == grid.grid_size == 9 and grid.rungs == (1, 2)
    combos = {tuple(grid_method.values(grid, n).values()) for n in range(9)}
    assert len(combos) == 9
    random_raw = {
        **BASE,
        "method": "random",
        "seed": 7,
        "space": {
            "lr": {"low": 1e-5, "high": 1e-2, "log": True},
            "r": {"low": 2, "high": 64, "type": "int"},
            "target_modules": [["query", "value"], ["query", "key", "value", "dense"]],
        },
        "budget": {"max_jobs": 20, "max_parallel": 4},
    }
    one = sweepfile.load(write(tmp_path, random_raw, "a.yaml"))
    two = sweepfile.load(write(tmp_path, random_raw, "b.yaml"))
    other = sweepfile.load(write(tmp_path, {**random_raw, "seed": 8}, "c.yaml"))
    draws = [random_search.values(one, n) for n in range(20)]
    assert draws == [random_search.values(two, n) for n in range(20)]
    assert draws != [random_search.values(other, n) for n in range(20)]
    for values in draws:
        assert 1e-5 <= values["lr"] <= 1e-2 and isinstance(values["r"], int)
        assert one.spec(values).target_modules in (
            ("query", "value"),
            ("query", "key", "value", "dense"),
        )
    # Log-uniform: about as many draws below 3e-4 as above it (the geometric middle).
    lows = sum(v["lr"] < 3.2e-4 for v in (random_search.values(one, n) for n in range(400)))
    assert 140 < lows < 260


def _claimed_trials(n: int, eta: int = 3) -> list[lifecycle.Claim]:
    spec = LoraSpec(model="synthetic", data=DataSpec(dataset="movie-snippets"), epochs=3)
    with db.session_scope(write=True) as session:
        session.add(
            Sweep(id="s", kind="lora", method="grid", definition={}, max_jobs=n,
                  max_parallel=n, created=n, eta=eta, rungs=[1, 2], status="active")
        )  # fmt: skip
        session.flush()
        jobs = insert.create_jobs(
            session,
            [
                insert.NewJob(
                    kind="lora",
                    spec={**spec.to_dict(), "seed": i},
                    spec_hash=str(i),
                    model="synthetic",
                    dataset="x",
                    sweep_id="s",
                )
                for i in range(n)
            ],
            max_attempts=3,
        )
        ids = [job.id for job in jobs]
    claims = [lifecycle.claim(i, worker="w", lease_seconds=60) for i in ids]
    assert all(claims)
    return claims  # type: ignore[return-value]


def test_rung_rule_keeps_the_top_third_and_answers_once(sqlite_url: str) -> None:
    claims = _claimed_trials(6)
    policy = asha.policy_of(claims[0].job_id)
    assert policy == asha.Policy("s", 3, (1, 2))
    values = [0.70, 0.60, 0.80, 0.65, 0.75, 0.90]
    verdicts = [asha.decide(c, policy, 1, v) for c, v in zip(claims, values, strict=True)]
    # 1st alone: kept; 2nd (top 1 of 2): worse, pruned; 3rd best: kept; 4th of 4: top 1 only;
    # 5th: top 1 of 5 is 0.80: pruned; 6th: 0.90 is top of 6 (top 2 continue).
    assert verdicts == [True, False, True, False, False, True]
    # Asked again (a later attempt), the answer stands even though the field has changed.
    assert asha.decide(claims[1], policy, 1, 0.99) is False
    assert asha.decide(claims[0], policy, 1, 0.10) is True
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(RungDecision)) == 6
    # An attempt that lost its job decides nothing.
    lifecycle.cancel([claims[2].job_id])
    lifecycle.record_cancelled(claims[2])
    with pytest.raises(JobSuperseded):
        asha.decide(claims[2], policy, 2, 0.9)


def test_an_eager_sweep_prunes_reports_and_exits_0(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    path = write(tmp_path, {**BASE, "name": "eager1"})
    code, out = invoke("sweep", str(path))
    assert code == 0, out
    code, out = invoke("report", "--sweep", "eager1", "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["counts"].get("pruned", 0) >= 4 and sum(report["counts"].values()) == 9
    assert report["train_seconds"] < report["train_seconds_run_to_end"]
    best = next(t for t in report["trials"] if t["job_id"] == report["best_job"])
    assert best["status"] == "succeeded" and best["test_accuracy"] is not None
    # The best epoch is the best validation epoch; pruned trials have no test result.
    assert best["curve"][str(best["selected_epoch"])] == max(best["curve"].values())
    with db.session_scope() as session:
        tests = session.execute(
            select(Job.status, Job.selected_epoch, Result.epoch)
            .join(Result, Result.job_id == Job.id)
            .where(Result.split == "test")
        ).all()
    assert tests and all(s == "succeeded" and sel == e for s, sel, e in tests)
    code, out = invoke("report", "--sweep", "eager1", "--plot", str(tmp_path / "r.png"))
    assert code == 0 and "best: job" in out and "had every trial run" in out
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    code, out = invoke("list", "--status", "pruned", "--json")
    assert code == 0 and len(json.loads(out)) == report["counts"]["pruned"]
    # The same name again is refused before anything is written.
    code, out = invoke("sweep", str(path))
    assert code == 2 and "already exists" in out


def test_select_epoch_last_keeps_the_last_epoch(sqlite_url: str) -> None:
    data = DataSpec(dataset="movie-snippets")
    for select_epoch, expect_last in (("last", True), (None, False)):
        spec = LoraSpec(model="synthetic:seconds=0.01,steps=5", data=data, epochs=5,
                        seed=11, select_epoch=select_epoch)  # fmt: skip
        with db.session_scope(write=True) as session:
            [job] = insert.create_jobs(
                session,
                [
                    insert.NewJob(
                        kind="lora",
                        spec=spec.to_dict(),
                        spec_hash=spec.spec_hash(),
                        model=spec.model,
                        dataset="d",
                    )
                ],
                max_attempts=1,
            )
            job_id = job.id
        assert attempt.run_job(job_id, worker="w") == "succeeded"
        with db.session_scope() as session:
            row = session.get(Job, job_id)
            assert row is not None
            curve = {
                r.epoch: r.accuracy
                for r in session.scalars(select(Result).where(Result.job_id == job_id))
                if r.split == "validation"
            }
        best = max(curve, key=lambda e: (curve[e], -e))
        assert row.selected_epoch == (5 if expect_last else best)
    # The default is stored as absent, so specs from before the field keep their hash.
    assert "select_epoch" not in LoraSpec(model="minilm", data=data).to_dict()


@pytest.mark.slow
def test_a_real_minilm_sweep_prunes_and_keeps_the_best_epoch(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    raw = {
        "name": "tiny",
        "model": "minilm",
        "data": {"dataset": "movie-snippets", "train_samples": 256, "eval_samples": 128},
        "fixed": {
            "epochs": 2,
            "batch_size": 32,
            "max_length": 48,
            "head_lr": 1e-9,
            "pooling": "mean",
        },
        # The head stays as it started: the first trial's adapter learns to use it (0.69
        # after one epoch in a trial run), the second's learns nothing: chance, about 0.5.
        "space": {"lr": [3e-3, 1e-9]},
        "budget": {"max_parallel": 1},
        "early_stopping": {"eta": 2, "rungs": [1]},
    }
    code, out = invoke("sweep", str(write(tmp_path, raw)))
    assert code == 0, out
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "tiny").order_by(Job.id)))
        decided = {d.job_id: d for d in session.scalars(select(RungDecision))}
        results = session.execute(
            select(Result.job_id, Result.split, Result.epoch, Result.accuracy, Result.loss)
        ).all()
    assert jobs[0].status == "succeeded"
    assert len(jobs) == 2 and all(j.id in decided for j in jobs)
    for job in jobs:
        curve = {e: (a, -loss) for j, s, e, a, loss in results if j == job.id and s == "validation"}
        tests = [e for j, s, e, _, _ in results if j == job.id and s == "test"]
        meta = json.loads((Path(str(job.output_path)) / ADAPTER_METADATA).read_text())
        assert meta["selected_epoch"] == job.selected_epoch
        if job.status == "pruned":
            # Stopped at the rung: one epoch, no test, its adapter kept.
            assert not decided[job.id].keep and list(curve) == [1] and tests == []
        else:
            assert job.status == "succeeded" and decided[job.id].keep
            # Best: the highest accuracy, then the lowest loss, then the earliest epoch.
            best = max(curve, key=lambda e: (*curve[e], -e))
            assert tests == [job.selected_epoch] and job.selected_epoch == best
    assert jobs[1].status == "pruned", [d.value for d in decided.values()]
