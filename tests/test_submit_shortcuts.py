"""The shortcuts a big submit takes give what the long ways gave: the head revision read from
the revision files, grid specs made by replacing what differs, each spec's hash and stored
JSON spliced into a template, rows inserted as one JSON array, and a grid's sweep
definition."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from ftqueue.cli.options import build_specs
from ftqueue.errors import SpecError
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec, config_hash
from ftqueue.specs.texts import SpecTexts
from ftqueue.store import db
from ftqueue.store.schema import Job, JobEvent, JobTag, Sweep
from ftqueue.submit.submission import submit


def test_the_head_revision_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    alembic_head = ScriptDirectory.from_config(db._alembic_config("sqlite://")).get_current_head()
    assert db.head_revision() == alembic_head


def test_grid_specs_made_by_replacing_equal_specs_made_whole() -> None:
    data = DataSpec(dataset="movie-snippets")
    rows = [
        {"model": "synthetic:seconds=0", "data": data, "lr": lr, "r": r, "seed": seed,
         "target_modules": modules, "epochs": None}
        for lr in (1e-4, 3e-4, 0.1 + 0.2) for r in (4, 8.0) for seed in (0, 1)
        for modules in ("query,value", ["query", "key"])
    ]  # fmt: skip
    made = list(build_specs(LoraSpec, rows))
    whole = [LoraSpec(**{k: v for k, v in row.items() if v is not None}) for row in rows]
    assert made == whole
    assert [s.spec_hash() for s in made] == [s.spec_hash() for s in whole]
    assert [s.to_dict() for s in made] == [s.to_dict() for s in whole]
    assert isinstance(made[2].r, int) and made[2].target_modules == ("query", "value")


#: A grid axis: a spec field and the values it takes (None: the spec's default).
_AXES = {
    "seed": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
    "r": st.lists(st.sampled_from([4, 8, 16, 8.0]), min_size=1, max_size=3),
    "lr": st.lists(st.sampled_from([None, 1e-4, 3e-4, 0.1 + 0.2, 1e-05]), min_size=1, max_size=3),
    "alpha": st.lists(st.sampled_from([32.0, 16, 0.5]), min_size=1, max_size=2),
    "epochs": st.lists(st.sampled_from([None, 1, 3]), min_size=1, max_size=2),
    "target_modules": st.lists(
        st.sampled_from(["query,value", ("query", "key"), "dense"]), min_size=1, max_size=2
    ),
    "data": st.lists(
        st.builds(
            DataSpec,
            dataset=st.just("movie-snippets"),
            split_seed=st.integers(0, 3),
            dataset_name=st.sampled_from([None, "films", "Kritiken über Filme"]),
        ),
        min_size=1,
        max_size=2,
    ),
}


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    axes=st.dictionaries(
        st.sampled_from(sorted(_AXES)), st.just(None), min_size=1, max_size=4
    ).flatmap(lambda keys: st.fixed_dictionaries({k: _AXES[k] for k in keys})),
    whole_every=st.sampled_from([0, 3]),
)
def test_spliced_hashes_and_texts_are_those_of_each_spec_encoded_whole(
    axes: dict[str, list[object]], whole_every: int
) -> None:
    """Any grid, in the order the command makes it, some specs made whole rather than by
    replacing (fresh objects in every field): each spec's spliced hash and stored text are
    its own, encoded whole."""
    from ftqueue.cli.options import expand

    fixed = {"model": "synthetic:seconds=0", "data": DataSpec(dataset="movie-snippets")}
    made = list(build_specs(LoraSpec, expand(fixed, axes)))
    if whole_every:
        made = [
            LoraSpec.from_dict(s.to_dict()) if i % whole_every == 0 else s
            for i, s in enumerate(made)
        ]
    texts = SpecTexts()
    for spec in made:
        as_dict = spec.to_dict()
        assert texts(spec, as_dict) == (spec.spec_hash(), json.dumps(as_dict))


def test_a_bad_value_in_a_later_grid_row_is_refused_as_before() -> None:
    data = DataSpec(dataset="movie-snippets")
    rows = [{"model": "synthetic:seconds=0", "data": data, "lr": lr} for lr in (1e-4, -1.0)]
    with pytest.raises(SpecError) as made:
        list(build_specs(LoraSpec, rows))
    with pytest.raises(SpecError) as whole:
        LoraSpec(model="synthetic:seconds=0", data=data, lr=-1.0)
    assert made.value.message == whole.value.message


def test_a_grids_repeats_share_the_configuration_hash_made_once(
    sqlite_url: str, eager: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue.submit import submission as module

    made: list[str] = []

    def counted(spec: dict[str, object]) -> str:
        made.append(config_hash(spec))
        return made[-1]

    monkeypatch.setattr(module, "config_hash", counted)
    data = DataSpec(dataset="movie-snippets")
    specs = [
        LoraSpec(model="synthetic:seconds=0", data=data, lr=lr, seed=seed)
        for lr in (1e-4, 1e-3)
        for seed in range(3)
    ]
    submit(specs)
    assert len(made) == 2  # one per learning rate, not one per seed
    with db.session_scope() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        assert [j.config_hash for j in jobs] == [config_hash(s.to_dict()) for s in specs]
        assert len({j.config_hash for j in jobs}) == 2


def test_rows_inserted_in_one_statement_keep_every_value(any_db_url: str, eager: str) -> None:
    # A name for people with quotes, a backslash, braces and non-ASCII: every row goes in
    # inside one JSON text (PostgreSQL) or one prepared statement (SQLite).
    data = DataSpec(dataset="movie-snippets", dataset_name='Kritik "über" {a\\b}, ok')
    lrs = [0.1 + 0.2, 1 / 3, 2.5e-05, 0.012345678901234567]
    specs = [LoraSpec(model="synthetic:seconds=0", data=data, lr=lr, seed=7) for lr in lrs]
    sub = submit(specs, tags=["a", "b", "a"], name="n1")
    assert len(sub.created) == 4 and sub.sweep_id
    with db.session_scope() as session:
        jobs = session.scalars(select(Job).order_by(Job.id)).all()
        assert [j.spec["lr"] for j in jobs] == lrs  # every digit, none re-rendered
        for job, spec in zip(jobs, specs, strict=True):
            assert job.spec == spec.to_dict()
            assert job.spec_hash == spec.spec_hash()
            assert job.config_hash == config_hash(spec.to_dict())
            assert (job.name, job.sweep_id, job.kind) == ("n1", sub.sweep_id, "lora")
            assert job.created_at.tzinfo is not None
        ids = [j.id for j in jobs]
        assert [j.trial for j in jobs] == [0, 1, 2, 3]
        tags = session.execute(select(JobTag.job_id, JobTag.tag)).all()
        assert sorted(tags) == sorted((i, t) for i in ids for t in ("a", "b"))
        events = session.scalars(select(JobEvent).order_by(JobEvent.job_id)).all()
        assert [e.job_id for e in events] == ids and events[0].at.tzinfo is not None
        sweep = session.get(Sweep, sub.sweep_id)
        assert sweep is not None
        (axis,) = sweep.definition["space"]
        assert axis["name"] == "lr" and axis["values"] == lrs
        assert not any(math.isnan(v) for v in axis["values"])
    assert sorted(sub.created[0].tag_names) == ["a", "b"]
    assert json.loads(json.dumps(sub.created[0].spec)) == specs[0].to_dict()


def test_a_kinds_check_runs_once_per_value_of_what_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lora's check reads the model and the target modules: a grid over seeds and lr checks
    them once per target list, and a bad list is still refused."""
    from ftqueue.inputs import weights
    from ftqueue.submit.submission import Checker

    looked = []
    real = weights.layer_names
    monkeypatch.setattr(weights, "layer_names", lambda m: looked.append(m) or real(m))
    data = DataSpec(dataset="movie-snippets")
    checker = Checker()
    for seed in range(20):
        for modules in (("query", "value"), ("query", "key")):
            checker(LoraSpec(model="minilm", data=data, seed=seed, target_modules=modules))
    assert len(looked) == 2  # lora's check looks the model's layers up; once per target list
    with pytest.raises(SpecError, match="qury"):
        checker(LoraSpec(model="minilm", data=data, target_modules=("qury",)))
    with pytest.raises(SpecError, match="qury"):  # refused each time, never remembered
        checker(LoraSpec(model="minilm", data=data, seed=1, target_modules=("qury",)))


def test_the_collector_pause_nests_and_leaves_the_collector_as_it_found_it() -> None:
    import gc

    from ftqueue.core import gcpause

    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    with gcpause.paused(), gcpause.paused():
        gcpause.resume()  # before long work inside the pauses
        assert gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()
    with pytest.raises(ValueError), gcpause.paused():
        raise ValueError("an error inside the pause")
    assert gc.isenabled()


def test_submit_collects_garbage_again_before_it_runs_or_follows_jobs(
    eager: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ftqueue submit` pauses the collector while it builds and writes a grid; running the
    jobs (eager) or following them (--wait) may take hours, with the collector on."""
    import gc

    from ftqueue import api
    from tests.conftest import run

    seen: dict[str, bool] = {}
    real_submit, real_run = api.submit, api.run_eager

    def submit(*args: object, **kwargs: object) -> object:
        seen["submit"] = gc.isenabled()
        return real_submit(*args, **kwargs)  # type: ignore[arg-type]

    def run_eager(*args: object, **kwargs: object) -> object:
        seen["run"] = gc.isenabled()
        return real_run(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(api, "submit", submit)
    monkeypatch.setattr(api, "run_eager", run_eager)
    code, out = run("submit", "lora", "--model", "synthetic:seconds=0", "--dataset",
                    "movie-snippets", "--seed", "0,1")  # fmt: skip
    assert code == 0, out
    assert seen == {"submit": False, "run": True}
    assert gc.isenabled()  # the command's end leaves the collector on
