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
from sqlalchemy import func, select

from ftqueue.artifacts.publishing import ADAPTER_METADATA
from ftqueue.core.confidence import wilson
from ftqueue.core.objective import Objective, RungPoints
from ftqueue.errors import JobSuperseded, SweepFileError
from ftqueue.execution import attempt
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import get_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, insert, lifecycle
from ftqueue.store.schema import Job, JobEvent, Result, RungDecision, Sweep
from ftqueue.sweeps import asha, sweepfile
from ftqueue.sweeps.methods import grid as grid_method
from ftqueue.sweeps.methods import random_search
from ftqueue.sweeps.plan import SweepPlan
from tests.conftest import run as invoke

BASE: dict[str, Any] = {
    "model": "synthetic:seconds=0.05,steps=6",
    "dataset": "movie-snippets",
    "fixed": {"epochs": 3},
    "space": {"lr": [1e-4, 3e-4, 1e-3], "r": [4, 8, 16]},
    "method": "grid",
    "budget": {"max_parallel": 2},
    "early_stopping": {"eta": 3},
}


def expected_kept(curve: dict[int, float], rows: int) -> int:
    """The epoch a run keeps, worked out here: the first, then each later one whose accuracy
    lies above the kept one's 95% Wilson interval."""
    kept = min(curve)
    for epoch in sorted(curve):
        if curve[epoch] > wilson(curve[kept], rows)[1]:
            kept = epoch
    return kept


def write(tmp_path: Path, raw: Any, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


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
            "early_stopping.rungs: each rung must be a number of epochs above 0 and below 3",
        ),
        ({"metric": "f1"}, "metric: must be a validation metric: accuracy, macro_f1, loss"),
        ({"goal": "up"}, "goal: must be max or min"),
        (
            {"metric": "loss", "goal": "max"},
            "goal: max with metric loss would search for the worst trials",
        ),
        ({"goal": "min"}, "accuracy is better higher, so leave goal out or write goal: max"),
        ({"fixed": {"epochs": 1}}, "early_stopping.rungs: one epoch has no epoch before the last"),
        (
            {"early_stopping": {"rungs": {"every": 0}}},
            "early_stopping.rungs.every: must be a number of epochs above 0 and below 3",
        ),
        (
            {"early_stopping": {"rungs": {"steps": [40, 20]}}},
            "early_stopping.rungs.steps: must be increasing",
        ),
        (
            {"early_stopping": {"rungs": {"hours": 1}}},
            "early_stopping.rungs: as a mapping, give one of every, epochs, steps",
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


def test_metric_goal_and_rungs_in_epochs_fractions_or_steps(tmp_path: Path) -> None:
    plain = sweepfile.load(write(tmp_path, BASE))
    assert (plain.metric, plain.goal, plain.rung_unit, plain.rungs) == (
        "accuracy",
        "max",
        "epoch",
        (1, 2),
    )
    loss = sweepfile.load(write(tmp_path, {**BASE, "metric": "loss"}, "l.yaml"))
    assert (loss.metric, loss.goal) == ("loss", "min")  # the goal follows the metric
    f1 = sweepfile.load(write(tmp_path, {**BASE, "metric": "macro_f1", "goal": "max"}, "f.yaml"))
    assert f1.objective == Objective("macro_f1", "max")
    every = {**BASE, "early_stopping": {"eta": 2, "rungs": {"every": 0.5}}}
    assert sweepfile.load(write(tmp_path, every, "e.yaml")).rungs == (0.5, 1, 1.5, 2, 2.5)
    thirds = {**BASE, "fixed": {"epochs": 1}, "early_stopping": {"rungs": {"every": 0.1}}}
    assert sweepfile.load(write(tmp_path, thirds, "t.yaml")).rungs == tuple(
        round(0.1 * k, 9) for k in range(1, 10)
    )
    listed = {**BASE, "early_stopping": {"rungs": [0.25, 1, 2.5]}}
    assert sweepfile.load(write(tmp_path, listed, "x.yaml")).rungs == (0.25, 1, 2.5)
    # Steps: epochs may then be searched (the rungs do not move with them).
    steps = {
        **BASE,
        "fixed": {},
        "space": {"epochs": [1, 2], "lr": [1e-4]},
        "early_stopping": {"rungs": {"steps": [20, 40]}},
    }
    plan = sweepfile.load(write(tmp_path, steps, "s.yaml"))
    assert (plan.rung_unit, plan.rungs, plan.stopping) == (
        "step",
        (20, 40),
        "ASHA eta=3 at steps 20,40",
    )
    # Stored with the sweep and read back; a definition from before reads as accuracy, max.
    assert SweepPlan.from_dict(plan.to_dict()) == plan
    old = {k: v for k, v in plain.to_dict().items() if k not in ("metric", "goal", "rung_unit")}
    assert SweepPlan.from_dict(old) == plain


def test_rung_points_fall_on_steps() -> None:
    halves = RungPoints("epoch", (0.5, 1, 1.5))
    assert halves.steps(16, 32) == {8: 0.5, 16: 1, 24: 1.5}
    assert halves.steps(16, 16) == {8: 0.5}  # at or past the last step: no rung
    assert RungPoints("epoch", (0.01, 0.02)).steps(10, 100) == {1: 0.01}  # one step, once
    assert RungPoints("step", (20, 40, 80)).steps(30, 60) == {20: 20, 40: 40}


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


def _claimed_trials(
    n: int, eta: int = 3, definition: dict[str, Any] | None = None
) -> list[lifecycle.Claim]:
    spec = LoraSpec(model="synthetic", data=DataSpec(dataset="movie-snippets"), epochs=3)
    with db.session_scope(write=True) as session:
        session.add(
            Sweep(id="s", kind="lora", method="grid", definition=definition or {}, max_jobs=n,
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


def _rows(job_id: int) -> list[tuple[float, int, bool | None, int | None, int | None]]:
    with db.session_scope() as session:
        return [
            (d.rung, d.arrival, d.keep, d.rank, d.out_of)
            for d in session.scalars(
                select(RungDecision)
                .where(RungDecision.job_id == job_id)
                .order_by(RungDecision.rung)
            )
        ]


def test_rung_rule_waits_for_eta_arrivals_judges_the_first_and_answers_once(
    any_db_url: str,
) -> None:
    claims = _claimed_trials(6)
    policy = asha.policy_of(claims[0].job_id)
    assert policy == asha.Policy("s", 3, (1, 2))
    values = [0.70, 0.60, 0.80, 0.65, 0.75, 0.90]
    verdicts = [asha.decide(c, policy, 1, v) for c, v in zip(claims, values, strict=True)]
    # 1st and 2nd: fewer than eta=3 arrivals, no verdict yet: they go on, pending. 3rd: top 1
    # of 3; 4th: 3rd of 4 (top 1 go on); 5th: 2nd of 5 (top 1); 6th: top of 6 (top 2).
    assert verdicts == [True, True, True, False, False, True]
    assert _rows(claims[0].job_id) == [(1.0, 1, None, None, None)]
    # The first arrival is judged at its next rung, on its value at rung 1, against all six
    # arrivals: 4th of 6, out. (The old rule kept the first arrival unjudged: True.)
    assert asha.decide(claims[0], policy, 2, 0.99) is False
    assert _rows(claims[0].job_id) == [(1.0, 1, False, 4, 6)]  # and no arrival at rung 2
    assert asha.decide(claims[1], policy, None, None) is False  # an epoch end: 6th of 6
    # Asked again (a later attempt), the answer stands even though the field has changed.
    assert asha.decide(claims[3], policy, 1, 0.99) is False
    assert asha.decide(claims[2], policy, 1, 0.10) is True
    assert asha.decide(claims[0], policy, 1, 0.99) is False
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(RungDecision)) == 6
        events = session.scalars(select(JobEvent.detail).where(JobEvent.job_id == claims[0].job_id))
        assert [e for e in events if e and e.startswith("rung 1:")] == [
            "rung 1: validation accuracy 0.7000, rank 4 of 6 (top 2 continue) "
            "(verdict taken at arrival 6): pruned"
        ]
    # An attempt that lost its job decides nothing.
    lifecycle.cancel([claims[2].job_id])
    lifecycle.record_cancelled(claims[2])
    with pytest.raises(JobSuperseded):
        asha.decide(claims[2], policy, 2, 0.9)


def test_a_loss_sweep_keeps_the_lowest_loss(any_db_url: str) -> None:
    claims = _claimed_trials(3, eta=2, definition={"metric": "loss", "goal": "min"})
    policy = asha.policy_of(claims[0].job_id)
    assert policy is not None and policy.objective == Objective("loss", "min")
    # 1st alone: pending. 2nd, loss 0.50 against 0.30: out (by accuracy's rule it would
    # have ranked first). 3rd, the lowest loss of 3: goes on.
    losses = (0.30, 0.50, 0.20)
    verdicts = [asha.decide(c, policy, 1, v) for c, v in zip(claims, losses, strict=True)]
    assert verdicts == [True, False, True]
    assert asha.decide(claims[0], policy, 2, 0.25) is False  # 0.30: 2nd of 3, top 1 go on
    assert [_rows(c.job_id)[0][3] for c in claims] == [2, 2, 1]


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
    # The kept epoch is the first, or a later one above its 95% interval (1,000 rows each);
    # pruned trials have no test result.
    curve = {int(e): a for e, a in best["curve"].items()}
    assert best["selected_epoch"] == expected_kept(curve, 1000)
    assert best["kept_validation"] == curve[best["selected_epoch"]]
    assert best["kept_low"] < best["kept_validation"] < best["kept_high"]
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
        assert row.selected_epoch == (5 if expect_last else expected_kept(curve, 1000))
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
        published = get_settings().artifacts_dir / str(job.output_path)
        meta = json.loads((published / ADAPTER_METADATA).read_text())
        assert meta["selected_epoch"] == job.selected_epoch
        if job.status == "pruned":
            # Stopped at the rung: one epoch, no test, its adapter kept.
            assert not decided[job.id].keep and list(curve) == [1] and tests == []
        else:
            # The first arrival ended before a second came: no verdict was needed.
            assert job.status == "succeeded" and decided[job.id].keep is None
            # The first epoch, replaced by a later one only above its 95% interval.
            kept = expected_kept({e: a for e, (a, _) in curve.items()}, 128)
            assert tests == [job.selected_epoch] and job.selected_epoch == kept
    assert jobs[1].status == "pruned", [d.value for d in decided.values()]


@pytest.mark.slow
def test_a_one_epoch_trial_is_pruned_half_way_by_macro_f1(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    raw = {
        "name": "half",
        "model": "minilm",
        "data": {"dataset": "movie-snippets", "train_samples": 256, "eval_samples": 128},
        "fixed": {
            "epochs": 1,
            "batch_size": 16,
            "max_length": 48,
            "head_lr": 1e-9,
            "pooling": "mean",
        },
        # As above: the first trial's adapter learns to use the head it started with, the
        # second's learns nothing. 16 steps in the epoch: the rung is after step 8.
        "space": {"lr": [3e-3, 1e-9]},
        "budget": {"max_parallel": 1},
        "metric": "macro_f1",
        "early_stopping": {"eta": 2, "rungs": {"every": 0.5}},
    }
    code, out = invoke("sweep", str(write(tmp_path, raw)))
    assert code == 0, out
    assert "ASHA eta=2 at epochs 0.5, by validation macro_f1 (max)" in out
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "half").order_by(Job.id)))
        decided = {d.job_id: d for d in session.scalars(select(RungDecision))}
        results = session.execute(select(Result.job_id, Result.split, Result.macro_f1)).all()
    first, second = jobs
    assert first.status == "succeeded" and second.status == "pruned"
    for job in jobs:
        # Each validated half-way, its macro-F1 is the rung's value.
        [(at, *_)] = [(v["rung"], v) for v in job.stats["rung_validations"]]
        half = job.stats["rung_validations"][0]
        assert at == 0.5 and decided[job.id].rung == 0.5
        assert decided[job.id].value == half["macro_f1"] and 0 <= half["macro_f1"] <= 1
    # The first arrival waited for a second one and ended before it came: no verdict needed.
    assert decided[first.id].keep is None and decided[first.id].arrival == 1
    assert (decided[second.id].keep, decided[second.id].rank, decided[second.id].out_of) == (
        False,
        2,
        2,
    )
    # Pruned after 8 of its 16 steps: half the examples, no epoch ended, nothing tested.
    assert second.stats["pruned_at"] == 0.5 and second.stats["train_examples"] == 128
    assert [r for r in results if r.job_id == second.id] == []
    assert second.output_path and (get_settings().artifacts_dir / second.output_path).is_dir()
    assert {s for j, s, _ in results if j == first.id} == {"validation", "test"}
    code, out = invoke("report", "--sweep", "half", "--format", "json")
    report = json.loads(out)
    assert (report["metric"], report["goal"], report["best_job"]) == ("macro_f1", "max", first.id)
    # Half its examples trained: had it run to the end, its train time would have doubled.
    stopped = report["trials"][1]
    assert stopped["trained_share"] == 0.5 and stopped["pruned_at"] == 0.5
    assert stopped["full_seconds"] == pytest.approx(2 * stopped["train_seconds"])
    assert report["trials"][0]["best_validation"] == pytest.approx(
        next(f for j, s, f in results if j == first.id and s == "validation")
    )
