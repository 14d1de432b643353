"""Sweeps on real worker processes, on SQLite and PostgreSQL: rung decisions, deaths, cancels.

Trials are synthetic jobs whose validation accuracy per epoch is a function of their
hyper-parameters (ftqueue.kinds.synthetic.validation_accuracy), so each check can recompute what
ASHA should have decided from the numbers the database holds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from ftqueue.core.objective import Objective
from ftqueue.queue import broker
from ftqueue.settings import get_settings, reset_settings
from ftqueue.store import db
from ftqueue.store.schema import Job, JobEvent, Result, RungDecision, Sweep
from ftqueue.sweeps import asha, sweepfile, trials
from ftqueue.sweeps.methods.study import storage_url
from tests.procs import WorkerProcess, child_env, running_workers, statuses, wait_for

pytestmark = pytest.mark.slow


def sweep_file(tmp_path: Path, name: str, **overrides: object) -> Path:
    raw: dict[str, object] = {
        "name": name,
        "model": "synthetic:seconds=1.2,steps=12",
        "dataset": "movie-snippets",
        "fixed": {"epochs": 3},
        "space": {"lr": [1e-4, 3e-4, 1e-3], "r": [4, 8]},
        "method": "grid",
        "budget": {"max_jobs": 6, "max_parallel": 2},
        "early_stopping": {"eta": 2, "rungs": [1, 2]},
    }
    raw.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def env(any_db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "3")
    reset_settings()
    return child_env()


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    with running_workers(("w1", "w2"), env=env, log_dir=tmp_path) as started:
        yield started


def logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(w.log()[-3000:] for w in workers)


def wait_finished(sweep_id: str, workers: list[WorkerProcess], timeout: float = 240) -> None:
    try:
        wait_for(lambda: trials.finished(sweep_id), timeout=timeout, what=sweep_id, poll=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(workers)}") from None


def settled_study(sweep_id: str) -> Any:
    """The sweep's Optuna study once every trial in it is told (workers tell just after a
    trial's end is recorded, and give back proposals that found no slot just after a fill)."""
    import optuna

    url, options = storage_url()
    storage = optuna.storages.RDBStorage(url, engine_kwargs=options)
    study = optuna.load_study(study_name=f"ftqueue-{sweep_id}", storage=storage)
    wait_for(
        lambda: all(t.state.is_finished() for t in study.get_trials(deepcopy=False)),
        timeout=30,
        what=f"every trial of {sweep_id} told to its study",
    )
    return study


def decisions(sweep_id: str) -> list[RungDecision]:
    with db.session_scope() as session:
        rows = list(
            session.scalars(
                select(RungDecision)
                .where(RungDecision.sweep_id == sweep_id)
                .order_by(RungDecision.rung, RungDecision.arrival)
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def check_asha(sweep_id: str, eta: int) -> list[RungDecision]:
    """Each rung's arrivals are numbered in order, and each verdict, re-derived from the
    arrivals there when it was taken, matches the stored one."""
    rows = decisions(sweep_id)
    for rung in {r.rung for r in rows}:
        at_rung = [r for r in rows if r.rung == rung]
        # Serialised: the n-th trial to reach a rung saw n - 1 there before it.
        assert [r.arrival for r in at_rung] == list(range(1, len(at_rung) + 1))
        for row in at_rung:
            if row.keep is None:
                continue  # its trial ended before eta trials had reached the rung
            # Judged once eta had arrived, itself among them, on the arrivals until then.
            assert row.out_of is not None and max(eta, row.arrival) <= row.out_of
            seen = [r.value for r in at_rung[: row.out_of]]
            assert (row.rank, row.keep) == asha.verdict(row.value, seen, eta, Objective())
    return rows


def test_rungs_decided_once_under_two_workers_then_redelivery_and_cancel(
    workers: list[WorkerProcess], tmp_path: Path
) -> None:
    plan = sweepfile.load(sweep_file(tmp_path, "pair"))
    started = trials.start_sweep(plan)
    assert len(started.created) == 2  # max_parallel: the workers make the rest
    wait_finished("pair", workers)
    rows = check_asha("pair", eta=2)
    final = statuses(trials.job_statuses("pair"))
    assert len(final) == 6
    for job_id, status in final.items():
        verdicts = [r.keep for r in rows if r.job_id == job_id]
        # A trial is pruned exactly when one of its rungs said so, and then stops there.
        assert status == ("pruned" if False in verdicts else "succeeded"), (job_id, verdicts)
        # Pruned once, with no verdict after it (a later rung may hold a pending arrival: the
        # verdict that pruned it waited for a second trial at its rung).
        after = verdicts[verdicts.index(False) + 1 :] if False in verdicts else []
        assert verdicts.count(False) <= 1 and all(v is None for v in after), verdicts
    assert "pruned" in final.values()
    with db.session_scope() as session:
        # Both workers ran trials; every pruned one kept its measurements and its adapter.
        ran_on = set(session.scalars(select(Job.worker).where(Job.sweep_id == "pair")))
        pruned = list(
            session.scalars(select(Job).where(Job.sweep_id == "pair", Job.status == "pruned"))
        )
        for job in pruned:
            assert job.output_path and (get_settings().artifacts_dir / job.output_path).is_dir()
            splits = session.scalars(select(Result.split).where(Result.job_id == job.id)).all()
            assert splits and set(splits) == {"validation"}
    assert len(ran_on) == 2, ran_on

    # A re-delivered message of a pruned trial runs nothing and changes nothing.
    victim = pruned[0]
    before = (victim.attempts, len(decisions("pair")))
    broker.publish([victim])
    wait_for(lambda: not broker.pending_task_ids(), timeout=60, what="the message consumed")
    wait_for(lambda: "nothing to do for this delivery" in logs(workers), timeout=30, what="skip")
    with db.session_scope() as session:
        again = session.get(Job, victim.id)
        assert again is not None and again.status == "pruned"
        assert (again.attempts, len(decisions("pair"))) == before

    # A cancelled sweep: the running trial stops, and no worker makes another.
    slow = sweep_file(
        tmp_path,
        "stopme",
        model="synthetic:seconds=30,steps=60",
        budget={"max_jobs": 6, "max_parallel": 1},
    )
    started = trials.start_sweep(sweepfile.load(slow))
    [first] = [job.id for job in started.created]
    wait_for(lambda: statuses([first])[first] == "running", timeout=60, what="trial running")
    result = subprocess.run(
        [sys.executable, "-m", "ftqueue", "cancel", "--sweep", "stopme"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    wait_for(lambda: trials.finished("stopme"), timeout=60, what="stopme to end")
    assert trials.job_statuses("stopme") == {first: "cancelled"}
    with db.session_scope() as session:
        sweep = session.get(Sweep, "stopme")
        assert sweep is not None and sweep.status == "cancelled" and sweep.created == 1


def test_worker_killed_at_a_rung_gets_the_same_verdict_again(
    workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # Each trial crashes right after its arrival at its first rung, with its verdict or with
    # none yet (its first attempt only); its second attempt, on whichever worker, must read
    # them, not arrive or decide again.
    path = sweep_file(
        tmp_path,
        "crashy",
        model="synthetic:seconds=1.2,steps=12,fault=crash-at-rung",
        space={"lr": [1e-4, 3e-4, 1e-3, 3e-3]},
        budget={"max_jobs": 4, "max_parallel": 2},
    )
    trials.start_sweep(sweepfile.load(path))
    wait_finished("crashy", workers, timeout=300)
    rows = check_asha("crashy", eta=2)
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "crashy")))
        for job in jobs:
            # Killed once (a loaded machine may add a takeover of a late heartbeat).
            assert job.attempts >= 2, (job.id, job.attempts, job.status)
            first = [r for r in rows if r.job_id == job.id and r.rung == 1]
            assert len(first) == 1 and first[0].attempt == 1
            assert job.status == ("pruned" if any(
                r.keep is False for r in rows if r.job_id == job.id) else "succeeded")  # fmt: skip
            noted = session.scalar(
                select(func.count())
                .select_from(JobEvent)
                .where(JobEvent.job_id == job.id, JobEvent.detail.like("rung 1:%"))
            )
            # Decided once (the second attempt read it), or never: the trial ended first.
            assert noted == (0 if first[0].keep is None else 1)
            # Results come from the attempt that recorded the end, once.
            attempts = set(session.scalars(select(Result.attempt).where(Result.job_id == job.id)))
            assert attempts == {job.attempts}


def test_optuna_trials_recorded_and_continued_after_the_submitter_exits(
    workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """More trials than slots, two workers and the reapers filling at once: the study holds
    exactly the trials that ran, none failed for want of a slot."""

    path = sweep_file(
        tmp_path,
        "tpe",
        model="synthetic:seconds=0.6,steps=6",
        space={
            "lr": {"low": 1e-5, "high": 1e-2, "log": True},
            "r": [4, 8, 16],
            "target_modules": [["query", "value"], ["query", "key", "value", "dense"]],
        },
        method="optuna",
        seed=3,
        budget={"max_jobs": 10, "max_parallel": 3},
    )
    result = subprocess.run(
        [sys.executable, "-m", "ftqueue", "sweep", str(path), "--json"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The submitting process is gone: workers ask Optuna for the other seven trials.
    wait_finished("tpe", workers, timeout=300)
    check_asha("tpe", eta=2)
    everything = settled_study("tpe").get_trials()
    assert [t.number for t in everything if t.state.name not in ("COMPLETE", "PRUNED")] == []
    trials = {t.number: t for t in everything}
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "tpe")))
    assert len(jobs) == len(trials) == 10
    assert sorted(job.trial for job in jobs) == sorted(trials)  # type: ignore[type-var]
    for job in jobs:
        assert job.trial is not None
        trial = trials[job.trial]
        assert trial.state.name == {"succeeded": "COMPLETE", "pruned": "PRUNED"}[job.status]
        assert trial.params["lr"] == pytest.approx(job.spec["lr"])
        assert trial.params["target_modules"] == ",".join(job.spec["target_modules"])
        if job.status == "succeeded":
            best = max(v for v in trial.intermediate_values.values())
            assert trial.value == pytest.approx(best)


def test_a_sobol_sweep_runs_on_workers_and_tells_each_trial(
    workers: list[WorkerProcess], tmp_path: Path
) -> None:

    path = sweep_file(
        tmp_path,
        "qmc",
        model="synthetic:seconds=0.6,steps=6",
        space={"lr": {"low": 1e-5, "high": 1e-2, "log": True}, "r": [4, 8, 16]},
        method="sobol",
        seed=11,
        budget={"max_jobs": 4, "max_parallel": 2},
    )
    started = trials.start_sweep(sweepfile.load(path))
    assert len(started.created) == 2  # the workers ask for the other two
    wait_finished("qmc", workers)
    check_asha("qmc", eta=2)
    everything = settled_study("qmc").get_trials()
    trials_run = {t.number: t for t in everything}
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == "qmc")))
    assert len(jobs) == len(trials_run) == 4
    for job in jobs:
        assert job.trial is not None
        trial = trials_run[job.trial]
        assert trial.state.name == {"succeeded": "COMPLETE", "pruned": "PRUNED"}[job.status]
        assert trial.params["lr"] == pytest.approx(job.spec["lr"])
        assert 1e-5 <= job.spec["lr"] <= 1e-2 and job.spec["r"] in (4, 8, 16)
