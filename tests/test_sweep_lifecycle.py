"""A sweep's life after `ftqueue sweep`: whole or absent, followed, extended, resumed, mended.

Real SQLite files and PostgreSQL databases, real Optuna studies beside them, real Redis where
trials are published, and real `ftqueue` processes where one is killed. Trials are synthetic
jobs (ftqueue.kinds.synthetic), so each sweep runs in seconds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from ftqueue import api
from ftqueue.settings import reset_settings
from ftqueue.store import db, reads
from ftqueue.store.schema import Job, Sweep
from ftqueue.submit import enqueue
from ftqueue.sweeps import methods, sweepfile, trials
from ftqueue.sweeps.methods.study import storage_url, study_name
from ftqueue.testing import child_env
from ftqueue.worker import reaper
from tests.conftest import run as invoke

TPE: dict[str, Any] = {
    "model": "synthetic:seconds=0.02,steps=4",
    "dataset": "movie-snippets",
    "fixed": {"epochs": 2},
    "space": {"lr": {"low": 1e-5, "high": 1e-2, "log": True}, "r": [4, 8, 16]},
    "method": "optuna",
    "seed": 7,
    "budget": {"max_jobs": 4, "max_parallel": 2},
}


def write(tmp_path: Path, name: str, **changes: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TPE, "name": name, **changes}))
    return path


def study_trials(sweep_id: str) -> list[Any]:
    import optuna

    url, options = storage_url()
    storage = optuna.storages.RDBStorage(url, engine_kwargs=options)
    study = optuna.load_study(study_name=study_name(sweep_id), storage=storage)
    return study.get_trials(deepcopy=False)


def states(sweep_id: str) -> list[str]:
    return sorted(t.state.name for t in study_trials(sweep_id))


def jobs_of(sweep_id: str) -> list[Job]:
    with db.session_scope() as session:
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id)))
        for job in jobs:
            session.expunge(job)
        return jobs


def check_study_matches_jobs(sweep_id: str) -> None:
    """Every study trial is one job's, told as the job ended: none failed, none left running."""
    told = {t.number: t for t in study_trials(sweep_id)}
    jobs = jobs_of(sweep_id)
    assert sorted(told) == sorted(j.trial for j in jobs)  # type: ignore[type-var]
    for job in jobs:
        assert job.trial is not None
        expected = {"succeeded": "COMPLETE", "pruned": "PRUNED"}[job.status]
        assert told[job.trial].state.name == expected
        assert told[job.trial].params["lr"] == pytest.approx(job.spec["lr"])


@pytest.fixture
def eager_db(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """SQLite or PostgreSQL, with jobs run by the test's process (FTQUEUE_EAGER=1)."""
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    return any_db_url


@pytest.fixture
def queued_db(any_db_url: str, redis_url: str) -> str:
    """SQLite or PostgreSQL, with trials published to Redis (no worker takes them)."""
    return any_db_url


# --- 1. no failed trial from a slot race --------------------------------------------------


def test_a_fill_that_loses_its_slot_leaves_no_failed_trial_in_the_study(
    queued_db: str, tmp_path: Path
) -> None:
    """Two processes filling one free slot: the one that finds it taken asked for nothing."""
    started = trials.start_sweep(sweepfile.load(write(tmp_path, "race")))
    plan = started.plan
    with db.session_scope(write=True) as session:
        session.execute(
            update(Job).where(Job.id == started.created[0].id).values(status="succeeded")
        )
    # The slow filler sees the free slot and makes its offer first...
    offer = methods.lookup("optuna").propose("race", plan, 1)
    # ...the fast one takes the slot...
    assert len(trials.fill("race")) == 1
    # ...and the slow one then finds none.
    assert enqueue.jobs(lambda session: trials._take(session, "race", plan, offer)) == []
    offer.release()
    assert "FAIL" not in states("race")
    assert len(study_trials("race")) == len(jobs_of("race")) == 3


# --- 2. follow ------------------------------------------------------------------------------


def test_follow_ends_when_the_sweep_ends_and_refuses_an_unknown_name(
    queued_db: str, tmp_path: Path
) -> None:
    trials.start_sweep(sweepfile.load(write(tmp_path, "watched")))
    follower = subprocess.Popen(
        [sys.executable, "-m", "ftqueue", "sweep", "--follow", "watched"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(4)
        assert follower.poll() is None  # its trials are queued: it is still following
        api.stop_sweep(sweep_id="watched")
        api.cancel([], sweep="watched")
        out, _ = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 3, out  # the sweep ended cancelled
    assert "sweep watched: cancelled" in out
    code, out = invoke("sweep", "--follow", "nope\x1b[31m")
    assert code == 2
    assert out.count("\n") == 1 and "no sweep 'nope\\x1b[31m'" in out


# --- 3. extend ------------------------------------------------------------------------------


def test_extend_adds_trials_to_the_same_study(eager_db: str, tmp_path: Path) -> None:
    code, out = invoke("sweep", str(write(tmp_path, "grow")))
    assert code == 0, out
    assert len(study_trials("grow")) == 4
    code, out = invoke("sweep", "--extend", "grow", "--trials", "3", "--json")
    assert code == 0, out
    assert len(json.loads(out)["jobs"]) == 7
    check_study_matches_jobs("grow")
    assert len(study_trials("grow")) == 7
    code, out = invoke("report", "--sweep", "grow", "--format", "json")
    assert json.loads(out)["status"] == "done" and len(json.loads(out)["trials"]) == 7


def test_extend_refuses_what_a_grid_does_not_hold(eager_db: str, tmp_path: Path) -> None:
    path = write(tmp_path, "g", method="grid", space={"r": [4, 8]}, budget={"max_parallel": 2})
    assert invoke("sweep", str(path))[0] == 0
    code, out = invoke("sweep", "--extend", "g", "--trials", "1")
    assert code == 2 and "has 2 distinct trials" in out and "no other trial to add" in out
    code, out = invoke("sweep", "--extend", "g")
    assert code == 2 and "--trials N go together" in out
    assert len(jobs_of("g")) == 2


# --- 4. resume ------------------------------------------------------------------------------


def test_resume_after_a_cancel_runs_the_rest_in_the_same_study(
    queued_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = trials.start_sweep(sweepfile.load(write(tmp_path, "paused")))
    code, out = invoke("cancel", "--sweep", "paused")
    assert code == 0, out
    assert {j.status for j in jobs_of("paused")} == {"cancelled"}
    # Cancelled before they ran: given back to the study, neither failed nor left running.
    assert states("paused") == ["WAITING", "WAITING"]
    assert invoke("report", "--sweep", "paused", "--format", "json")[1].count("cancelled")
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    code, out = invoke("sweep", "--resume", "paused")
    assert code == 0, out
    assert "2 trials queued again" in out
    jobs = jobs_of("paused")
    assert len(jobs) == 4 and {j.status for j in jobs} <= {"succeeded", "pruned"}
    assert [j.id for j in jobs[:2]] == [j.id for j in started.created]
    check_study_matches_jobs("paused")
    code, out = invoke("sweep", "--resume", "paused")
    assert code == 2 and "is done: nothing to resume" in out


def test_an_eager_sweep_killed_is_interrupted_then_resumed(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "2")
    reset_settings()
    path = write(tmp_path, "killed", model="synthetic:seconds=30,steps=4")
    process = subprocess.Popen(
        [sys.executable, "-m", "ftqueue", "sweep", str(path)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(j.status == "running" for j in jobs_of("killed")):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    time.sleep(2.5)  # its lease lapses
    assert api.sweep_state(sweep_id="killed") == "interrupted"
    code, out = invoke("sweep", str(path))
    assert code == 2 and "--resume killed" in out
    with db.session_scope(write=True) as session:  # the rest runs quickly
        for job in session.scalars(select(Job).where(Job.sweep_id == "killed")):
            job.spec = {**job.spec, "model": "synthetic:seconds=0.02,steps=4"}
        sweep = session.get(Sweep, "killed")
        assert sweep is not None
        sweep.definition = {
            **sweep.definition,
            "base": {**sweep.definition["base"], "model": "synthetic:seconds=0.02,steps=4"},
        }
    code, out = invoke("sweep", "--resume", "killed")
    assert code == 0, out
    jobs = jobs_of("killed")
    assert len(jobs) == 4 and {j.status for j in jobs} <= {"succeeded", "pruned"}
    assert api.sweep_state(sweep_id="killed") == "done"
    # The trials the dead process held ran again under their own numbers: no failed trial,
    # and nothing left running.
    check_study_matches_jobs("killed")


# --- 5. whole or absent; broken sweeps --------------------------------------------------


@pytest.mark.parametrize(
    "point", ["sweep-method-started", "sweep-row-written", "sweep-trials-proposed"]
)
def test_a_sweep_killed_while_it_is_made_leaves_nothing(
    queued_db: str, tmp_path: Path, point: str
) -> None:
    path = write(tmp_path, "half")
    run = subprocess.run(
        [sys.executable, "-m", "ftqueue", "sweep", str(path)],
        env=child_env(FTQUEUE_TEST_KILL_AT=point),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert reads.sweep_row("half") is None and jobs_of("half") == []
    started = trials.start_sweep(sweepfile.load(path))  # the same name is free
    assert len(started.created) == 2
    assert states("half") == ["RUNNING", "RUNNING"]  # a new study: nothing of the first try


def test_a_broken_sweep_is_marked_and_the_reaper_fills_the_others(
    queued_db: str, tmp_path: Path
) -> None:
    import optuna

    broken = trials.start_sweep(sweepfile.load(write(tmp_path, "a-broken")))
    fine = trials.start_sweep(sweepfile.load(write(tmp_path, "b-fine")))
    with db.session_scope(write=True) as session:
        ids = [broken.created[0].id, fine.created[0].id]
        session.execute(update(Job).where(Job.id.in_(ids)).values(status="succeeded"))
    url, options = storage_url()
    storage = optuna.storages.RDBStorage(url, engine_kwargs=options)
    optuna.delete_study(study_name=study_name("a-broken"), storage=storage)
    summary = reaper.reap_once(lock_seconds=5)
    assert summary.ran and summary.broken == ["a-broken"]
    assert [j.sweep_id for j in jobs_of("b-fine")].count("b-fine") == 3
    assert len(summary.filled) == 1
    sweep = reads.sweep_row("a-broken")
    assert sweep is not None and sweep.status == "broken" and "KeyError" in (sweep.problem or "")
    code, out = invoke("report", "--sweep", "a-broken")
    assert code == 0 and "broken: KeyError" in out
    code, out = invoke("sweep", "--resume", "a-broken")
    assert code == 2 and "study is missing" in out
    assert reaper.reap_once(lock_seconds=5).broken == []  # marked once; not tried again


def test_a_proposal_never_queued_is_given_back_and_used_by_the_next_fill(
    queued_db: str, tmp_path: Path
) -> None:
    trials.start_sweep(sweepfile.load(write(tmp_path, "orphan")))
    # A filler killed between its ask and its commit: a running trial with no job.
    sweep = reads.sweep_row("orphan")
    assert sweep is not None
    lost = methods.lookup("optuna").propose("orphan", trials.plan_of(sweep), 1)
    [proposal] = lost.take(2, 1)
    assert states("orphan") == ["RUNNING"] * 3
    reaper.reap_once(lock_seconds=5)
    assert states("orphan") == ["RUNNING", "RUNNING", "WAITING"]
    first = jobs_of("orphan")[0]
    with db.session_scope(write=True) as session:
        session.execute(update(Job).where(Job.id == first.id).values(status="succeeded"))
    [made] = trials.fill("orphan")
    assert made.trial == proposal.number and made.spec["lr"] == pytest.approx(proposal.values["lr"])


# --- 3 (submit) and 4 (pruned) ----------------------------------------------------------


def test_a_submitted_grid_is_a_grid_sweep_with_its_report(eager: str) -> None:
    code, out = invoke(
        "submit", "lora", "--model", "synthetic:seconds=0.02,steps=4", "--dataset",
        "movie-snippets", "--epochs", "1", "--lr", "1e-4,1e-3", "--sweep", "pair", "--json",
    )  # fmt: skip
    assert code == 0, out
    sweep = reads.sweep_row("pair")
    assert sweep is not None and (sweep.method, sweep.max_jobs) == ("grid", 2)
    code, out = invoke("report", "--sweep", "pair", "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["method"] == "grid" and report["counts"] == {"succeeded": 2}
    assert report["status"] == "done"
    assert sorted(t["values"]["lr"] for t in report["trials"]) == [1e-4, 1e-3]


def test_a_pruned_spec_is_not_run_again_unless_forced(eager: str, tmp_path: Path) -> None:
    raw = {
        **TPE,
        "name": "asha",
        "method": "grid",
        "space": {"lr": [1e-4, 3e-4, 1e-3], "r": [4, 8, 16]},
        "fixed": {"epochs": 3},
        "budget": {"max_parallel": 2},
        "early_stopping": {"eta": 3},
    }
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert invoke("sweep", str(path))[0] == 0
    pruned = next(j for j in jobs_of("asha") if j.status == "pruned")
    flags = [
        "submit", "lora", "--model", raw["model"], "--dataset", "movie-snippets",
        "--epochs", "3", "--lr", str(pruned.spec["lr"]), "--r", str(pruned.spec["r"]),
    ]  # fmt: skip
    code, out = invoke(*flags)
    assert code == 0, out
    assert f"job {pruned.id}'s settings were pruned in sweep asha at rung 1" in out
    assert out.count("\n") == 1
    with db.session_scope() as session:
        assert len(list(session.scalars(select(Job.id)))) == 9
    code, out = invoke(*flags, "--force")
    assert code == 0 and "pruned" not in out
    with db.session_scope() as session:
        assert len(list(session.scalars(select(Job.id)))) == 10


def test_a_trial_told_meanwhile_is_left_as_told(
    eager_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reaper mending a trial while its worker tells it: the first tell stands."""
    from ftqueue.sweeps.methods import study

    trials.start_sweep(sweepfile.load(write(tmp_path, "twice")))
    method = methods.lookup("optuna")
    method.tell("twice", 0, "succeeded", [(1, 0.5), (2, 0.75)])
    opened = study._open
    # The second teller read the trial as running just before the first one told it.
    monkeypatch.setattr(study, "_open", lambda s, n, finished=False: opened(s, n, finished=True))
    method.tell("twice", 0, "failed", [])
    method.give_back("twice", [0])
    [first] = [t for t in study_trials("twice") if t.number == 0]
    assert first.state.name == "COMPLETE" and first.value == 0.75
