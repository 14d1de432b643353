"""Sweep methods through their registry: the known ones, ``sobol``, and one a test adds.

``sobol`` proposals are checked against the space and for determinism on a real study (in
the SQLite file's ``.optuna.db``), and an eager ``ftqueue sweep`` runs one to the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from ftqueue.cli import cli
from ftqueue.errors import SpecError, SweepFileError
from ftqueue.settings import reset_settings
from ftqueue.store import db
from ftqueue.store.schema import Job, Result
from ftqueue.sweeps import methods, sweepfile
from ftqueue.sweeps.methods import grid, registry
from ftqueue.sweeps.methods.study import storage_url, study_name
from ftqueue.sweeps.plan import Dimension, SweepPlan, combinations

SOBOL: dict[str, Any] = {
    "model": "synthetic:seconds=0.05,steps=6",
    "dataset": "movie-snippets",
    "fixed": {"epochs": 3},
    "space": {
        "lr": {"low": 1e-5, "high": 1e-2, "log": True},
        "r": {"low": 2, "high": 64, "type": "int"},
        "target_modules": [["query", "value"], ["query", "key", "value", "dense"]],
    },
    "method": "sobol",
    "seed": 5,
    "budget": {"max_jobs": 8, "max_parallel": 2},
}


def plan_of(raw: dict[str, Any]) -> sweepfile.SweepPlan:
    return sweepfile.parse(raw, where="s.yaml")


def test_the_methods_are_registered_in_order() -> None:
    assert methods.names() == ("grid", "random", "optuna", "sobol")
    with pytest.raises(SpecError, match="unknown sweep method 'bayes': use one of grid, random"):
        methods.lookup("bayes")


def test_a_sobol_file_is_accepted_and_needs_a_budget() -> None:
    plan = plan_of(SOBOL)
    assert (plan.method, plan.seed, plan.max_jobs) == ("sobol", 5, 8)
    with pytest.raises(SweepFileError, match=r"budget\.max_jobs: missing: method sobol needs"):
        plan_of({**SOBOL, "budget": {}})
    with pytest.raises(SweepFileError, match="method: must be one of grid, random, optuna, sobol"):
        plan_of({**SOBOL, "method": "halton"})


def proposals(sweep_id: str, plan: sweepfile.SweepPlan, count: int) -> list[dict[str, Any]]:
    """``count`` trials asked one at a time, as workers filling one slot each would."""
    method = methods.lookup("sobol")
    method.start(sweep_id, plan)
    made: list[dict[str, Any]] = []
    for _ in range(count):
        offer = method.propose(sweep_id, plan, 1)
        [proposal] = offer.take(len(made), 1)
        offer.release()
        made.append(proposal.values)
    return made


def test_sobol_proposals_lie_in_the_space_and_follow_the_seed(sqlite_url: str) -> None:
    plan = plan_of(SOBOL)
    first = proposals("a", plan, 8)
    assert proposals("b", plan, 8) == first  # same seed: the same sequence
    assert proposals("c", plan_of({**SOBOL, "seed": 6}), 8) != first
    for values in first:
        assert 1e-5 <= values["lr"] <= 1e-2
        assert isinstance(values["r"], int) and 2 <= values["r"] <= 64
        assert plan.spec(values).target_modules in (
            ("query", "value"),
            ("query", "key", "value", "dense"),
        )
    # Spread over the space: no two trials alike, and both halves of the log range used.
    assert len({(v["lr"], v["r"]) for v in first}) == 8
    middle = math.sqrt(1e-5 * 1e-2)
    assert 2 <= sum(v["lr"] < middle for v in first) <= 6


def test_an_eager_sobol_sweep_runs_and_tells_every_trial(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    path = tmp_path / "sobol.yaml"
    path.write_text(yaml.safe_dump({**SOBOL, "name": "qmc", "early_stopping": {"eta": 2}}))
    result = CliRunner().invoke(cli, ["sweep", str(path), "--json"], prog_name="ftqueue")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["sweep_id"] == "qmc" and len(payload["jobs"]) == 8
    assert set(payload["jobs"].values()) <= {"succeeded", "pruned"}
    url, options = storage_url()
    study = optuna.load_study(
        study_name=study_name("qmc"),
        storage=optuna.storages.RDBStorage(url, engine_kwargs=options),
    )
    told = {t.number: t for t in study.get_trials() if "ftqueue" not in t.user_attrs}
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "qmc")))
    assert sorted(job.trial for job in jobs) == sorted(told)  # type: ignore[type-var]
    for job in jobs:
        assert job.trial is not None
        trial = told[job.trial]
        assert trial.state.name == {"succeeded": "COMPLETE", "pruned": "PRUNED"}[job.status]
        assert trial.params["lr"] == pytest.approx(job.spec["lr"])
        assert trial.params["r"] == job.spec["r"]


@pytest.mark.parametrize(("metric", "direction"), [("loss", "MINIMIZE"), ("macro_f1", "MAXIMIZE")])
def test_an_optuna_study_takes_the_sweeps_goal_and_metric(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metric: str, direction: str
) -> None:
    import optuna

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    raw = {**SOBOL, "name": "tpe", "method": "optuna", "metric": metric}
    raw["budget"] = {"max_jobs": 4, "max_parallel": 1}
    path = tmp_path / "tpe.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["sweep", str(path), "--json"], prog_name="ftqueue")
    assert result.exit_code == 0, result.output
    url, options = storage_url()
    study = optuna.load_study(
        study_name=study_name("tpe"),
        storage=optuna.storages.RDBStorage(url, engine_kwargs=options),
    )
    assert study.direction.name == direction
    told = {t.number: t for t in study.get_trials() if t.state.name == "COMPLETE"}
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "tpe")))
        curves = {
            job.trial: [
                getattr(r, metric)
                for r in session.scalars(select(Result).where(Result.job_id == job.id))
                if r.split == "validation"
            ]
            for job in jobs
        }
    assert len(told) == 4
    pick = min if direction == "MINIMIZE" else max
    for number, trial in told.items():
        # The value told is the trial's best validation value of the sweep's metric.
        assert trial.value == pytest.approx(pick(curves[number]))
        assert pick(curves[number]) != (max if pick is min else min)(curves[number])


class Backwards(methods.SweepMethod):
    """A grid walked from its last combination: a method added by a test, through the registry."""

    name = "backwards-test"

    def size(self, space: Sequence[Dimension]) -> int | None:
        return combinations(space)

    def propose(self, sweep_id: str, plan: SweepPlan, count: int) -> methods.Offer:
        last = plan.grid_size - 1
        return methods.Numbered(lambda number: grid.values(plan, last - number))


@pytest.fixture
def backwards() -> Iterator[None]:
    registry.register(Backwards())
    yield
    registry.unregister(Backwards.name)


def test_a_method_added_through_the_registry_alone_runs_a_sweep(
    backwards: None, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    raw = {**SOBOL, "name": "back", "method": "backwards-test", "space": {"lr": [1e-4, 1e-3]}}
    del raw["budget"]  # the method's size (2) is the budget
    path = tmp_path / "back.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["sweep", str(path), "--json"], prog_name="ftqueue")
    assert result.exit_code == 0, result.output
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "back").order_by(Job.trial)))
    assert [(j.trial, j.spec["lr"], j.status) for j in jobs] == [
        (0, 1e-3, "succeeded"),
        (1, 1e-4, "succeeded"),
    ]
