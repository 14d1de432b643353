"""The report summary against the full query, on SQLite and PostgreSQL, over seeded random jobs.

Jobs go through the real lifecycle (claim, then record_success, record_failure, a cancel or a
superseded attempt), so the summary is the one record_success keeps; the full query then
aggregates every result again and both must agree: counts and first jobs exactly, sums, means
and standard deviations to 1e-9.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, select, update

from ftqueue.core.outcome import Measurement
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.report import ReportOptions, build_report
from ftqueue.report import query as report_query
from ftqueue.report.options import Condition
from ftqueue.report.query import Config
from ftqueue.specs import DataSpec, config_hash
from ftqueue.store import db, insert, lifecycle, summary
from ftqueue.store.schema import Job, ReportSummary, Result, utcnow

MODELS = ("bert-tiny", "minilm")
DATASETS = ("rt", "snips")
SPLITS = ("test", "validation")
CLOSE = 1e-9


@dataclass
class Planned:
    spec: LoraSpec | EvaluateSpec
    #: succeeded, pruned, failed, cancelled (asked while running) or superseded (its lease
    #: lapsed; a second attempt records).
    outcome: str
    measurements: list[Measurement]
    stats: dict[str, Any]


def _measurements(rng: random.Random, spec: LoraSpec | EvaluateSpec) -> tuple[list, int | None]:
    def m(split: str, epoch: int) -> Measurement:
        acc = rng.random()
        return Measurement(split, epoch, acc, rng.uniform(0.1, 2.0), acc, rng.randint(40, 400))

    if isinstance(spec, EvaluateSpec):
        splits = [spec.split] if rng.random() < 0.7 else list(SPLITS)
        return [m(split, rng.choice((0, 1))) for split in splits], None
    epochs = spec.epochs
    out = [m("validation", e) for e in range(1, epochs + 1)]
    kept = rng.choice([None, *range(1, epochs + 1)])
    # Test at the kept epoch, at the last, or after every epoch.
    test_epochs = rng.choice([[kept or epochs], [epochs], list(range(1, epochs + 1))])
    out += [m("test", e) for e in sorted(set(test_epochs))]
    return out, kept


def _stats(rng: random.Random, kept: int | None) -> dict[str, Any]:
    return {
        "train_seconds": None if rng.random() < 0.2 else rng.uniform(5, 900),
        "trainable_params": None if rng.random() < 0.1 else rng.randint(1000, 90_000),
        "total_params": rng.choice((0, 200_000, 400_000)),
        "selected_epoch": kept,
    }


def _outcome(rng: random.Random) -> str:
    return rng.choices(
        ("succeeded", "pruned", "failed", "cancelled", "superseded"), (70, 8, 8, 6, 8)
    )[0]


def run_random_jobs(seed: int, count: int, adapters: list[int] | None = None) -> list[int]:
    """``count`` LoRA runs and evaluations (base, and of earlier runs' adapters) through the
    lifecycle; returns the LoRA job ids."""
    rng = random.Random(seed)
    planned: list[Planned] = []
    for _ in range(count):
        model, data = rng.choice(MODELS), DataSpec(dataset=rng.choice(DATASETS))
        spec: LoraSpec | EvaluateSpec
        if rng.random() < (0.3 if adapters else 0.65):
            spec = LoraSpec(
                model=model,
                data=data,
                r=rng.choice((4, 8)),
                lr=rng.choice((1e-4, 3e-4)),
                epochs=rng.choice((1, 2, 3)),
                seed=rng.randint(0, 3),
            )
        else:
            adapter = rng.choice(adapters) if adapters and rng.random() < 0.7 else None
            spec = EvaluateSpec(
                model=model,
                data=data,
                split=rng.choice(SPLITS),
                seed=rng.randint(0, 3),
                adapter_job=adapter,
            )
        measurements, kept = _measurements(rng, spec)
        planned.append(Planned(spec, _outcome(rng), measurements, _stats(rng, kept)))
    new = [
        insert.NewJob(p.spec.kind, p.spec.to_dict(), p.spec.spec_hash(), p.spec.model,
                      p.spec.data.dataset)
        for p in planned
    ]  # fmt: skip
    with db.session_scope(write=True) as session:
        ids = [job.id for job in insert.create_jobs(session, new, max_attempts=3)]
    for job_id, plan in zip(ids, planned, strict=True):
        _run(job_id, plan)
    return [i for i, p in zip(ids, planned, strict=True) if isinstance(p.spec, LoraSpec)]


def _run(job_id: int, plan: Planned) -> None:
    claim = lifecycle.claim(job_id, worker="w1", lease_seconds=60)
    assert claim is not None
    if plan.outcome == "failed":
        assert lifecycle.record_failure(claim, "ValueError", "bad")
        return
    if plan.outcome == "cancelled":
        lifecycle.cancel([job_id])
        assert not lifecycle.record_success(claim, plan.measurements, stats=plan.stats)
        return
    if plan.outcome == "superseded":
        with db.session_scope(write=True) as session:  # the first attempt's lease lapsed
            past = utcnow() - dt.timedelta(seconds=1)
            session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=past))
        second = lifecycle.claim(job_id, worker="w2", lease_seconds=60)
        assert second is not None
        assert not lifecycle.record_success(claim, plan.measurements, stats=plan.stats)
        claim = second
    status = lifecycle.JobStatus.PRUNED if plan.outcome == "pruned" else None
    extra = {"status": status} if status else {}
    assert lifecycle.record_success(claim, plan.measurements, stats=plan.stats, **extra)


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=CLOSE, abs_tol=CLOSE)


def _by_key(configs: list[Config]) -> dict[tuple[Any, ...], Config]:
    return {(c.model, c.dataset, c.source, c.key): c for c in configs}


def assert_same_configs(url: str, opts: ReportOptions) -> int:
    """The summary's configurations equal the full query's, on both sides; returns how many."""
    seen = 0
    with db.session_scope(url=url) as session:
        for side in ("base", "runs"):
            fast = _by_key(report_query.summary_configs(session, opts, side=side, splits=SPLITS))
            full = _by_key(report_query.configs(session, opts, side=side, splits=SPLITS))
            assert fast.keys() == full.keys()
            for key, config in full.items():
                other = fast[key]
                assert other.sums.keys() == config.sums.keys(), key
                for split, want in config.sums.items():
                    got = other.sums[split]
                    assert (got.n, got.first_job, got.examples) == (
                        want.n,
                        want.first_job,
                        want.examples,
                    )
                    for mine, theirs in ((got.accuracy, want.accuracy), (got.loss, want.loss)):
                        assert (mine.lo, mine.hi) == (theirs.lo, theirs.hi)
                        assert _close(mine.total, theirs.total)
                        assert _close(mine.squares, theirs.squares)
                    assert _close(got.train_seconds, want.train_seconds)
                    assert _close(got.share, want.share)
                    a, b = other.group(split), config.group(split)
                    for x, y in ((a.accuracy, b.accuracy), (a.loss, b.loss)):
                        assert _close(x.mean, y.mean) and _close(x.std, y.std)
                    seen += 1
    return seen


def assert_same_report(url: str, **options: Any) -> list[dict[str, Any]]:
    """The report from the summary equals the report from the full query, row by row."""
    opts = ReportOptions(**options)
    assert report_query.summarised(opts)
    with db.session_scope(url=url) as session:
        fast = build_report(session, opts).flat_rows()
    with db.session_scope(url=url) as session:
        full = build_report(session, ReportOptions(**options, full_query=True)).flat_rows()
    assert len(fast) == len(full)
    for got, want in zip(fast, full, strict=True):
        assert got.keys() == want.keys()
        for name, value in want.items():
            if isinstance(value, float):
                assert _close(got[name], value), (name, got[name], value)
            else:
                assert got[name] == value, (name, got[name], value)
    return fast


def _summary_rows(url: str) -> list[dict[str, Any]]:
    columns = ReportSummary.__table__.c
    with db.session_scope(url=url) as session:
        rows = session.execute(select(*columns).order_by(*(columns[k] for k in summary.KEY)))
        return [dict(row._mapping) for row in rows]


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [[r[k] for k in summary.KEY] for r in got] == [[r[k] for k in summary.KEY] for r in want]
    for a, b in zip(got, want, strict=True):
        for name, value in b.items():
            same = _close(a[name], value) if isinstance(value, float) else a[name] == value
            assert same, (name, a[name], value)


def test_summary_answers_as_the_full_query_on_random_jobs(any_db_url: str) -> None:
    loras = run_random_jobs(seed=11, count=70)
    run_random_jobs(seed=12, count=50, adapters=loras)  # evaluations of those adapters
    with db.session_scope() as session:  # the cases the summary must get right are here
        evaluations = session.scalars(select(Job).where(Job.kind == "evaluate")).all()
        adapters = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(loras)))}
        cases = [
            (adapters[j.spec["adapter_job"]].train_seconds is None, j.train_seconds is None)
            for j in evaluations
            if j.status == "succeeded" and j.spec.get("adapter_job")
        ]
        assert (True, False) in cases and (False, False) in cases
    assert assert_same_configs(any_db_url, ReportOptions()) > 20
    rows = assert_same_report(any_db_url)
    assert rows and any(r["n"] and r["n"] > 1 for r in rows)
    assert_same_report(any_db_url, splits=("validation", "test"), select_by="test")
    assert_same_report(any_db_url, models=("minilm",), datasets=("rt",), sort="loss")
    assert_same_report(any_db_url, where=(Condition.parse("accuracy>0.5"),), sort="n")
    assert assert_same_configs(any_db_url, ReportOptions(models=("bert-tiny",))) > 5


def test_filtered_views_keep_the_full_query() -> None:
    assert report_query.summarised(ReportOptions(splits=("validation",), sort="accuracy"))
    assert report_query.summarised(ReportOptions.from_text(where=["delta>1"], models=("m",)))
    for filtered in (
        ReportOptions(group_by=("r",)),
        ReportOptions(tags=("nightly",)),
        ReportOptions(sweeps=("grid",)),
        ReportOptions(since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        ReportOptions.from_text(where=["r>=8"]),
        ReportOptions(statuses=("succeeded", "pruned")),
        ReportOptions(full_query=True),
    ):
        assert not report_query.summarised(filtered), filtered


def test_rebuild_counts_what_record_success_added(any_db_url: str) -> None:
    loras = run_random_jobs(seed=21, count=40)
    run_random_jobs(seed=22, count=25, adapters=loras)
    kept = _summary_rows(any_db_url)
    assert kept
    with db.session_scope(url=any_db_url, write=True) as session:
        assert summary.rebuild(session) == len(kept)
    assert_rows_equal(_summary_rows(any_db_url), kept)


def test_upgrade_counts_results_recorded_without_the_summary(any_db_url: str) -> None:
    """Results written while the schema was downgraded (by a version without the summary) are
    counted when the revision comes back; the summary then agrees with the full query."""
    loras = run_random_jobs(seed=31, count=30)
    db.downgrade(any_db_url, "0013")
    rng = random.Random(32)
    with db.session_scope(url=any_db_url, write=True) as session:
        old_jobs = Table("jobs", MetaData(), autoload_with=session.connection())
        for i in range(30):
            spec = LoraSpec(model="minilm", data=DataSpec(dataset="rt"), r=4, seed=i)
            if i % 3 == 0:
                spec = EvaluateSpec(model="minilm", data=DataSpec(dataset="rt"),
                                    adapter_job=rng.choice(loras), seed=i)  # fmt: skip
            # Through the table as that revision has it: the ORM class is the head's.
            job_id = session.execute(
                old_jobs.insert().returning(old_jobs.c.id),
                dict(
                    kind=spec.kind, status="succeeded" if i % 5 else "failed",
                    spec=spec.to_dict(), spec_hash=spec.spec_hash(),
                    config_hash=config_hash(spec.to_dict()), model=spec.model,
                    dataset=spec.data.dataset, train_seconds=rng.uniform(1, 9),
                    trainable_params=10, total_params=1000,
                    selected_epoch=rng.choice((None, 1)), created_at=utcnow(),
                ),
            ).scalar_one()  # fmt: skip
            for split in SPLITS:
                for epoch in (1, 2):
                    acc = rng.random()
                    session.add(Result(job_id=job_id, attempt=1, split=split, epoch=epoch,
                                       accuracy=acc, loss=1 - acc, macro_f1=acc,
                                       n_examples=100))  # fmt: skip
    db.upgrade(any_db_url)
    assert assert_same_configs(any_db_url, ReportOptions()) > 5
    assert_same_report(any_db_url, splits=("test", "validation"))


@pytest.mark.parametrize("outcome", ["pruned", "failed", "cancelled"])
def test_jobs_that_did_not_succeed_add_nothing(sqlite_url: str, outcome: str) -> None:
    spec = LoraSpec(model="minilm", data=DataSpec(dataset="rt"), r=4)
    plan = Planned(spec, outcome, [Measurement("test", 1, 0.8, 0.4, 0.8, 50)], {})
    new = insert.NewJob(spec.kind, spec.to_dict(), spec.spec_hash(), spec.model, "rt")
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(session, [new], max_attempts=3)
    _run(job.id, plan)
    assert _summary_rows(sqlite_url) == []
    plan.outcome = "succeeded"
    with db.session_scope(write=True) as session:
        [job] = insert.create_jobs(session, [new], max_attempts=3)
    _run(job.id, plan)
    [row] = _summary_rows(sqlite_url)
    assert (row["n"], row["acc_sum"], row["first_job"], row["split"]) == (1, 0.8, job.id, "test")


def test_concurrent_successes_of_one_configuration_all_count(any_db_url: str) -> None:
    """Eight attempts of the same configuration recording at once: one summary row, n = 8."""
    import threading

    specs = [LoraSpec(model="minilm", data=DataSpec(dataset="rt"), r=8, seed=s) for s in range(8)]
    new = [insert.NewJob(s.kind, s.to_dict(), s.spec_hash(), s.model, "rt") for s in specs]
    with db.session_scope(write=True) as session:
        ids = [job.id for job in insert.create_jobs(session, new, max_attempts=3)]
    claims = [lifecycle.claim(i, worker=f"w{i}", lease_seconds=60) for i in ids]
    barrier = threading.Barrier(len(claims))
    recorded: list[bool] = []

    def record(claim: lifecycle.Claim | None, acc: float) -> None:
        assert claim is not None
        barrier.wait()
        m = Measurement("test", 1, acc, 1 - acc, acc, 100)
        recorded.append(lifecycle.record_success(claim, [m], stats={"train_seconds": 1.0}))

    threads = [threading.Thread(target=record, args=(c, i / 10)) for i, c in enumerate(claims)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recorded == [True] * 8
    [row] = _summary_rows(any_db_url)
    assert (row["n"], row["seconds_n"], row["first_job"]) == (8, 8, min(ids))
    assert _close(row["acc_sum"], sum(i / 10 for i in range(8)))
    assert (row["acc_min"], row["acc_max"]) == (0.0, 0.7)
    assert_same_configs(any_db_url, ReportOptions())
