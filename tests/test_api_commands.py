"""The API under the commands: what `list`, `cancel --sweep`, `db`, completions and the
end-of-run table read, called as Python, in an eager home."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftqueue import api
from ftqueue.core.states import JobStatus
from ftqueue.errors import FilterError, FtqueueError, JobNotFound, SpecError
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.testing import FtqueueEnv, synthetic_model

QUICK = synthetic_model(seconds=0.05, steps=2)
DATA = DataSpec(dataset="movie-snippets")


def test_the_schema_functions_say_where_the_database_is(ftqueue_env: FtqueueEnv) -> None:
    schema = api.db_current()
    assert schema["revision"] == schema["head"] and schema["url"] == api.db_url()
    assert api.db_upgrade() == (schema["head"], schema["head"])  # already there: a no-op
    assert api.db_downgrade_loss(revision="head") is None


def test_endings_and_completions_of_ended_jobs(ftqueue_env: FtqueueEnv) -> None:
    sub = api.submit(
        [
            LoraSpec(model=QUICK, data=DATA, epochs=1),
            EvaluateSpec(model=synthetic_model(0.05, 2, fault="raise"), data=DATA),
        ]
    )
    lora, failed = sub.job_ids
    ends = api.endings(job_ids=[failed, lora, 10_000])  # in the order given, missing left out
    assert [(e.id, e.status) for e in ends] == [
        (failed, JobStatus.FAILED),
        (lora, JobStatus.SUCCEEDED),
    ]
    assert ends[0].result is None and "synthetic failure" in (ends[0].error or "")
    assert ends[1].result is not None and ends[1].result["split"] == "test"
    assert ends[1].output is not None and ends[1].output[0] == "adapter"
    assert [c["id"] for c in api.completions()] == [failed, lora]
    assert [c["id"] for c in api.completions(runs_only=True)] == [lora]
    assert api.describe(sub.created)[0]["id"] == lora


def test_cancel_a_sweep_and_its_mistakes(ftqueue_env: FtqueueEnv) -> None:
    with pytest.raises(FtqueueError, match="no jobs in sweep 'nope'") as info:
        api.cancel([], sweep="nope")
    assert info.value.exit_code == 1
    assert api.stop_sweep(sweep_id="nope") is False
    sub = api.submit([LoraSpec(model=QUICK, data=DATA, seed=s, epochs=1) for s in (0, 1)])
    assert sub.sweep_id is not None
    ended = api.cancel([], sweep=sub.sweep_id)
    assert [(c.job_id, c.before) for c in ended] == [(j, JobStatus.SUCCEEDED) for j in sub.job_ids]
    with pytest.raises(JobNotFound):
        api.cancel([10_000], sweep=sub.sweep_id)


def test_adapter_checks_before_any_work(ftqueue_env: FtqueueEnv, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="give --model, or --adapter-job"):
        api.adapter_model(job_ids=[])
    with pytest.raises(FtqueueError, match="no such job"):
        api.adapters(job_ids=[10_000])
    [evaluate] = api.submit(EvaluateSpec(model=QUICK, data=DATA)).job_ids
    with pytest.raises(FtqueueError, match="trains no adapter"):
        api.predict(job_id=evaluate, texts=["a text"])
    with pytest.raises(FtqueueError, match="trains no adapter"):
        api.export(job_id=evaluate, directory=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_refuses_a_bad_filter_before_any_query(ftqueue_env: FtqueueEnv) -> None:
    with pytest.raises(FilterError, match="--since"):
        api.report(since="yesterday-ish")
    assert api.report().table is not None and api.report().sweep is None
    assert api.sweep_report(sweep_id="nope") is None
