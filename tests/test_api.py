"""ftqueue.api: submit, wait, results, jobs and cancel, on the plugin's throwaway queues."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftqueue import api
from ftqueue.core.confidence import kept_epoch
from ftqueue.core.states import JobStatus
from ftqueue.errors import JobNotFound, SpecError, WaitTimeout
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import get_settings
from ftqueue.specs import DataSpec
from ftqueue.testing import FtqueueEnv, WorkerProcess, synthetic_model

QUICK = synthetic_model(seconds=0.05, steps=2)
DATA = DataSpec(dataset="movie-snippets")


def test_ftqueue_env_is_a_migrated_eager_home(ftqueue_env: FtqueueEnv, tmp_path: Path) -> None:
    settings = get_settings()
    assert settings.eager
    assert settings.home == ftqueue_env.home and ftqueue_env.home.is_relative_to(tmp_path)
    assert settings.database_url == ftqueue_env.database_url
    assert settings.artifacts_dir == ftqueue_env.artifacts_dir and settings.artifacts_dir.is_dir()
    assert settings.cache_dir == ftqueue_env.cache_dir and settings.cache_dir.is_dir()
    assert api.jobs() == []  # migrated: the tables are there, and empty
    assert ftqueue_env.environ(EXTRA="1")["FTQUEUE_HOME"] == str(ftqueue_env.home)


def test_eager_submit_runs_the_jobs_before_it_returns(ftqueue_env: FtqueueEnv) -> None:
    specs = [LoraSpec(model=QUICK, data=DATA, seed=s, epochs=2) for s in (0, 1)]
    sub = api.submit(specs, tags=["t1"])
    assert len(sub.created) == 2 and sub.sweep_id
    assert api.wait(sub, timeout=0) == {j: JobStatus.SUCCEEDED for j in sub.job_ids}
    first = sub.job_ids[0]
    found = api.results(first)
    validation = [(r.epoch, r.accuracy, r.n_examples) for r in found if r.split == "validation"]
    assert [e for e, _, _ in validation] == [1, 2]
    # Test is measured once, on the epoch the run kept (a later one only beyond the first's
    # 95% interval), and that epoch is the job's.
    kept = kept_epoch(validation)
    assert [(r.split, r.epoch) for r in found if r.split == "test"] == [("test", kept)]
    assert api.job(first)["selected_epoch"] == kept
    [test] = api.results(first, split="test")
    assert 0.5 <= test.accuracy <= 0.95 and test.attempt == 1
    assert [j["id"] for j in api.jobs(tags=["t1"])] == sub.job_ids[::-1]  # newest first
    assert api.job(first, detail=True)["results"][0]["split"] == "test"
    # The same specs again: the earlier jobs stand for them, nothing new is written.
    again = api.submit(specs)
    assert again.created == [] and again.job_ids == sub.job_ids


def test_a_single_spec_and_a_failed_job(ftqueue_env: FtqueueEnv) -> None:
    failing = EvaluateSpec(model=synthetic_model(0.05, 2, fault="raise"), data=DATA)
    sub = api.submit(failing)
    [job_id] = sub.job_ids
    assert api.wait(job_id) == {job_id: JobStatus.FAILED}
    assert "synthetic failure" in api.job(job_id)["error_message"]
    assert api.results(job_id) == []


def test_wait_gives_up_after_its_timeout_and_cancel_ends_the_jobs(ftqueue_env: FtqueueEnv) -> None:
    # run=False: queued and held by this process, but not run (the CLI runs them in a thread).
    sub = api.submit(LoraSpec(model=QUICK, data=DATA), run=False)
    [job_id] = sub.job_ids
    with pytest.raises(WaitTimeout, match=f"job\\(s\\) {job_id} still not ended after 0.3s"):
        api.wait(sub, timeout=0.3, poll=0.1)
    assert api.states(job_id)[job_id].status == JobStatus.QUEUED
    [outcome] = api.cancel(sub)
    assert (outcome.before, outcome.after) == ("queued", "cancelled")
    assert api.wait(job_id) == {job_id: JobStatus.CANCELLED}


def test_unknown_jobs_and_bad_specs_are_one_line_errors(ftqueue_env: FtqueueEnv) -> None:
    for call in (api.wait, api.results, api.job, api.cancel):
        with pytest.raises(JobNotFound, match="no job 99 in this database"):
            call(99)
    with pytest.raises(SpecError, match="bad synthetic setting"):
        api.submit(LoraSpec(model="synthetic:fault=sometimes", data=DATA))
    assert api.jobs() == []
    with pytest.raises(SpecError, match="bad synthetic setting"):
        synthetic_model(steps=0)


@pytest.mark.slow
@pytest.mark.redis
def test_ftqueue_worker_runs_jobs_through_redis(
    ftqueue_worker: WorkerProcess, ftqueue_env: FtqueueEnv
) -> None:
    """Asked for after the worker, ftqueue_env is still the worker's queue, not an eager one."""
    assert not get_settings().eager
    sub = api.submit([LoraSpec(model=QUICK, data=DATA, seed=s) for s in (0, 1)])
    assert api.wait(sub, timeout=60) == {j: JobStatus.SUCCEEDED for j in sub.job_ids}
    for job_id in sub.job_ids:
        summary = api.job(job_id)
        assert summary["worker"].startswith("pytest"), ftqueue_worker.log()[-2000:]
        assert Path(summary["output_path"]).parent == ftqueue_env.artifacts_dir / "adapters"
