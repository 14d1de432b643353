"""`ftqueue report` numbers against an independent computation, on SQLite and PostgreSQL.

The database holds real synthetic jobs run through the queue plus inserted rows; the expected
report is computed here from the ORM rows with the statistics module, one run at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.core.confidence import wilson
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.report.options import CONFIG_COLUMNS, HYPERPARAMS
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, summary
from ftqueue.store.schema import Job, JobTag, Result, utcnow

SYNTH = "synthetic:seconds=0,steps=2"
SNIPPETS = DataSpec(dataset="movie-snippets")
#: Inserted by hand: on "rt", r=8 wins on test but r=32 wins on validation.
TINY = "bert-tiny"


@dataclass
class Filled:
    url: str
    lora_ids: list[int] = field(default_factory=list)
    adapter_eval_id: int = 0
    other_dataset: str = ""
    failed_id: int = 0
    old_id: int = 0


def run_synthetic_jobs(filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Base evaluations, a LoRA grid with seeds and an adapter evaluated on another dataset,
    submitted and run through the real Celery tasks in-process."""
    from ftqueue.submit.submission import submit
    from ftqueue.worker.tasks import run_eagerly

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    base = [EvaluateSpec(model=SYNTH, data=SNIPPETS, split="test", seed=s) for s in range(3)]
    base += [EvaluateSpec(model=SYNTH, data=SNIPPETS, split="validation", seed=s) for s in (0, 1)]
    run_eagerly(submit(base).created)
    grid = [
        LoraSpec(model=SYNTH, data=SNIPPETS, r=r, alpha=16, epochs=2, seed=s)
        for r in (4, 8)
        for s in range(3)
    ]
    sweep = submit(grid, sweep="grid", tags=["nightly"])
    run_eagerly(sweep.created)
    single = submit([LoraSpec(model=SYNTH, data=SNIPPETS, r=16, alpha=16, epochs=2, seed=7)])
    run_eagerly(single.created)
    filled.lora_ids = [job.id for job in sweep.created + single.created]

    other = tmp_path / "other.csv"
    rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'},{i % 2}" for i in range(60)]
    other.write_text("text,label\n" + "\n".join(rows) + "\n")
    filled.other_dataset = str(other)
    adapter_eval = EvaluateSpec(
        model=SYNTH, data=DataSpec(dataset=str(other)), adapter_job=filled.lora_ids[0]
    )
    created = submit([adapter_eval]).created
    run_eagerly(created)
    filled.adapter_eval_id = created[0].id
    monkeypatch.delenv("FTQUEUE_EAGER")
    reset_settings()


def _insert(
    session: Any,
    spec: LoraSpec | EvaluateSpec,
    metrics: dict[tuple[str, int], float],
    *,
    status: str = "succeeded",
    seconds: float = 10.0,
    trainable: int = 1000,
    created: dt.datetime | None = None,
    tags: tuple[str, ...] = (),
    examples: int = 100,
    kept: int | None = None,
) -> int:
    job = Job(
        kind=spec.kind,
        status=status,
        spec=spec.to_dict(),
        spec_hash=spec.spec_hash(),
        model=spec.model,
        dataset=spec.data.dataset,
        train_seconds=seconds,
        trainable_params=trainable,
        total_params=200_000,
        created_at=created or utcnow(),
        tags=[JobTag(tag=t) for t in tags],
        selected_epoch=kept,
    )
    session.add(job)
    session.flush()
    for (split, epoch), accuracy in metrics.items():
        loss = 1.5 - accuracy - epoch / 100
        result = Result(split=split, epoch=epoch, accuracy=accuracy, loss=loss, macro_f1=accuracy)
        session.add(result)
        result.job_id, result.attempt, result.n_examples = job.id, 1, examples
    summary.add_job(session, job)  # as record_success does
    return job.id


def insert_rows(filled: Filled) -> None:
    """A second model whose best configuration depends on the split that chooses it, a failed
    job with results, and an old job."""
    data = DataSpec(dataset="rt")
    with db.session_scope(url=filled.url, write=True) as s:
        for seed, acc in ((0, 0.60), (1, 0.64)):
            _insert(s, EvaluateSpec(model=TINY, data=data, seed=seed), {("test", 1): acc})
        _insert(
            s, EvaluateSpec(model=TINY, data=data, split="validation"), {("validation", 1): 0.61}
        )

        def lora(r: int, seed: int) -> LoraSpec:
            return LoraSpec(model=TINY, data=data, r=r, epochs=2, seed=seed)

        # r=8: better on test; its validation peaks at epoch 1, so "final epoch" matters.
        r8 = [(0.95, 0.70, 0.85), (0.96, 0.71, 0.86), (0.97, 0.72, 0.84)]
        for seed, (v1, v2, test) in enumerate(r8):
            metrics = {("validation", 1): v1, ("validation", 2): v2, ("test", 2): test}
            _insert(s, lora(8, seed), metrics, seconds=20.0 + seed, trainable=4000)
        for seed, (v2, test) in enumerate([(0.80, 0.78), (0.82, 0.79)]):
            metrics = {("validation", 1): 0.5, ("validation", 2): v2, ("test", 2): test}
            _insert(s, lora(32, seed), metrics, seconds=50.0 * (seed + 1), trainable=16000 + seed)
        best_of_all = {("validation", 2): 0.99, ("test", 2): 0.99}
        filled.failed_id = _insert(s, lora(64, 0), best_of_all, status="failed")
        month_ago = utcnow() - dt.timedelta(days=30)
        metrics = {("validation", 2): 0.5, ("test", 2): 0.55}
        filled.old_id = _insert(s, lora(2, 0), metrics, created=month_ago, tags=("old",))


def fill(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Filled:
    filled = Filled(url)
    run_synthetic_jobs(filled, tmp_path, monkeypatch)
    insert_rows(filled)
    return filled


# --- the independent computation -----------------------------------------------------------


@dataclass
class Run:
    job_id: int
    accuracy: float
    loss: float
    seconds: float | None
    share: float | None
    #: What the run trained with (jobs.trained_with): the report shows it over the spec.
    used: dict[str, Any] | None = None
    examples: int = 0


def _config(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in ("seed", "split")}, sort_keys=True)


def expected_report(
    url: str,
    *,
    split: str = "test",
    select_by: str = "validation",
    statuses: tuple[str, ...] = ("succeeded",),
    lora_filter: Any = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """What the default report should show per (model, dataset), computed from the ORM rows
    with the statistics module, one run at a time."""
    runs: dict[tuple[str, str, str, str], dict[str, list[Run]]] = defaultdict(
        lambda: defaultdict(list)
    )
    with db.session_scope(url=url) as s:
        jobs = {job.id: job for job in s.query(Job).all()}
        for job in jobs.values():
            if job.status not in statuses:
                continue
            adapter = jobs.get(job.spec.get("adapter_job") or 0)
            if job.kind == "evaluate" and adapter is None:
                side, config_job = "base", job
            else:
                side, config_job = ("adapter" if adapter else "lora"), adapter or job
                if lora_filter is not None and not lora_filter(job, config_job):
                    continue
            # The epoch the job kept, or the last where it kept none (or has no row of it).
            last: dict[str, Result] = {}
            for result in sorted(job.results, key=lambda r: r.epoch):
                kept = last.get(result.split)
                if kept is None or kept.epoch != job.selected_epoch:
                    last[result.split] = result
            share = None
            if config_job.trainable_params and config_job.total_params:
                share = config_job.trainable_params / config_job.total_params
            key = (job.model, job.dataset, side, _config(config_job.spec))
            for name, result in last.items():
                run = Run(
                    job.id,
                    result.accuracy,
                    result.loss,
                    config_job.train_seconds,
                    share,
                    config_job.trained_with,
                    result.n_examples,
                )
                runs[key][name].append(run)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (model, dataset, side, config), by_split in runs.items():
        row = out.setdefault((model, dataset), {"base": [], "lora": []})
        row["base" if side == "base" else "lora"].append((side, config, by_split))
    found = {
        pair: {side: _best(sides[side], split, select_by) for side in ("base", "lora")}
        for pair, sides in out.items()
    }
    return {pair: sides for pair, sides in found.items() if sides["base"] or sides["lora"]}


def _tie_winner(pool: list[Any], split: str) -> Any:
    """The best by mean accuracy on ``split``, or among those inside its 95% interval the one
    with more seeds, then smaller r, fewer target modules, lower lr (only on the LoRA side)."""

    def mean(c: Any) -> float:
        return statistics.mean(r.accuracy for r in c[2][split])

    top = max(pool, key=lambda c: (mean(c), -min(r.job_id for r in c[2][split])))
    if top[0] == "base":
        return top
    low = wilson(mean(top), min(r.examples for r in top[2][split]))[0]
    tied = [c for c in pool if mean(c) >= low]

    def order(c: Any) -> tuple[Any, ...]:
        spec = json.loads(c[1])
        return (-len(c[2][split]), spec["r"], len(spec["target_modules"]), spec.get("lr") or 9,
                -mean(c), min(r.job_id for r in c[2][split]))  # fmt: skip

    return min(tied, key=order)


def _best(cands: list[Any], split: str, select_by: str) -> dict[str, Any] | None:
    with_split = [c for c in cands if c[2].get(split)]
    chosen_by = select_by if any(c[2].get(select_by) for c in with_split) else split
    pool = [c for c in with_split if c[2].get(chosen_by)]
    if not pool:
        return None
    side, config, by_split = _tie_winner(pool, chosen_by)
    chosen = by_split[split]
    accuracies = [r.accuracy for r in chosen]
    losses = [r.loss for r in chosen]
    seconds = [r.seconds for r in chosen if r.seconds is not None]
    shares = [r.share for r in chosen if r.share is not None]
    return {
        "source": side,
        "config": json.loads(config),
        "n": len(chosen),
        "accuracy": statistics.mean(accuracies),
        "accuracy_std": statistics.stdev(accuracies) if len(chosen) > 1 else None,
        "loss": statistics.mean(losses),
        "loss_std": statistics.stdev(losses) if len(chosen) > 1 else None,
        "train_seconds": statistics.mean(seconds) if seconds else None,
        "trainable_share": statistics.mean(shares) if shares else None,
        "selected_by": chosen_by,
        "selection_accuracy": statistics.mean(r.accuracy for r in by_split[chosen_by]),
        "first_job": min(r.job_id for r in chosen),
        "used": min(chosen, key=lambda r: r.job_id).used or {},
    }


# --- the tests ------------------------------------------------------------------------------


def close(value: float) -> Any:
    """Equal up to float rounding: SQL sums in another order than the statistics module."""
    return pytest.approx(value, rel=1e-9, abs=1e-9)


def report_rows(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["report", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def _value(config: dict[str, Any], name: str, used: dict[str, Any] | None = None) -> Any:
    """A configuration's value of ``name``: the one its first run trained with, else the
    spec's, else the field's value where a spec leaves it out."""
    node: Any = config
    for part in HYPERPARAMS[name].path:
        node = node.get(part) if isinstance(node, dict) else None
    if used and used.get(name) is not None:
        node = used[name]
    if node is None:
        node = HYPERPARAMS[name].absent
    return ",".join(node) if isinstance(node, list) else node


def assert_row(row: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every number of a report row against the independent computation."""
    base, lora = expected["base"], expected["lora"]
    for name in ("accuracy", "accuracy_std", "loss", "loss_std", "n"):
        want = base[name] if base else None
        got = row[f"base_{name}"]
        assert got == (want if want is None else close(want)), name
    if lora is None:
        assert row["accuracy"] is None and row["delta_points"] is None
        return
    numbers: tuple[str, ...] = ("accuracy", "accuracy_std", "loss", "loss_std", "n", "source")
    numbers += (
        "train_seconds",
        "trainable_share",
        "selection_accuracy",
        "first_job",
        "selected_by",
    )
    for name in numbers:
        want = lora[name]
        got = row[name]
        assert got == (want if not isinstance(want, float) else close(want)), name
    for name in CONFIG_COLUMNS:
        assert row[name] == _value(lora["config"], name, lora["used"]), name
    assert row["trained_on"] == lora["config"]["data"]["dataset"]
    if base is None:
        assert row["delta_points"] is None
    else:
        delta = 100 * (lora["accuracy"] - base["accuracy"])
        assert row["delta_points"] == close(delta)


def assert_report(rows: list[dict[str, Any]], expected: dict[Any, dict[str, Any]]) -> None:
    assert sorted((r["model"], r["dataset"]) for r in rows) == sorted(expected)
    for row in rows:
        assert_row(row, expected[(row["model"], row["dataset"])])


@pytest.fixture
def filled(any_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Filled:
    return fill(any_db_url, tmp_path, monkeypatch)


def test_default_report_equals_an_independent_computation(filled: Filled) -> None:
    rows = report_rows()
    assert_report(rows, expected_report(filled.url))
    by_pair = {(r["model"], r["dataset"]): r for r in rows}
    tiny = by_pair[(TINY, "rt")]
    # Chosen by validation, although r=8 has the better test accuracy.
    assert (tiny["r"], tiny["selected_by"], tiny["n"]) == (32, "validation", 2)
    assert tiny["trainable_share"] == pytest.approx((16000 / 200_000 + 16001 / 200_000) / 2)
    synth = by_pair[(SYNTH, "movie-snippets")]
    assert synth["source"] == "lora" and synth["base_n"] == 3
    # An adapter evaluated elsewhere is a LoRA run there, chosen by test: no validation exists.
    adapter = by_pair[(SYNTH, filled.other_dataset)]
    assert (adapter["source"], adapter["selected_by"]) == ("adapter", "test")
    assert adapter["trained_on"] == "movie-snippets" and adapter["base_accuracy"] is None
    assert adapter["first_job"] == filled.adapter_eval_id and adapter["n"] == 1


def test_select_by_test_and_other_splits(filled: Filled) -> None:
    by_test = report_rows("--select-by", "test")
    assert_report(by_test, expected_report(filled.url, select_by="test"))
    assert {r["r"] for r in by_test if r["model"] == TINY} == {8}
    validation = report_rows("--split", "validation")
    assert_report(validation, expected_report(filled.url, split="validation"))
    both = report_rows("--split", "validation", "--split", "test")
    assert sorted({r["split"] for r in both}) == ["test", "validation"]


def test_filters_pick_lora_runs(filled: Filled) -> None:
    def expect(predicate: Any, **kw: Any) -> dict[Any, dict[str, Any]]:
        found = expected_report(filled.url, lora_filter=predicate, **kw)
        return {pair: sides for pair, sides in found.items() if sides["lora"]}

    # One sweep alone gets its own report (a submitted grid is a sweep too), which refuses
    # the comparison's filters rather than ignoring them.
    refused = CliRunner().invoke(cli, ["report", "--sweep", "grid", "--tag", "nightly"])
    assert refused.exit_code == 2 and "--tag does not apply" in refused.output, refused.output
    assert_report(report_rows("--tag", "old"), expect(lambda job, _: "old" in job.tag_names))
    week_ago = utcnow() - dt.timedelta(days=7)
    until = report_rows("--until", "7d")
    assert_report(until, expect(lambda job, _: job.created_at < week_ago))
    assert [r["first_job"] for r in until] == [filled.old_id]
    assert_report(
        report_rows("--where", "r>=16", "--where", "target_modules=query,key,value,dense"),
        expect(lambda _, config: config.spec["r"] >= 16),
    )
    assert_report(
        report_rows("--where", "lr != 0.001", "--model", TINY),
        {},  # every LoRA run here has lr 1e-3
    )
    statuses = ("succeeded", "failed")
    with_failed = report_rows("--status", "succeeded", "--status", "failed")
    assert_report(with_failed, expected_report(filled.url, statuses=statuses))
    assert filled.failed_id in {r["first_job"] for r in with_failed}


def test_group_by_gives_one_row_per_value(filled: Filled) -> None:
    rows = report_rows("--group-by", "r,alpha", "--model", SYNTH, "--dataset", "movie-snippets")
    expected: dict[tuple[int, float], list[Result]] = defaultdict(list)
    with db.session_scope(url=filled.url) as s:
        for job in s.query(Job).filter(Job.kind == "lora", Job.model == SYNTH):
            test = [res for res in job.results if res.split == "test"]
            expected[(job.spec["r"], job.spec["alpha"])] += test
        base = [r.accuracy for j in s.query(Job).filter(Job.kind == "evaluate")
                for r in j.results if r.split == "test" and j.model == SYNTH
                and j.spec.get("adapter_job") is None]  # fmt: skip
    assert [(r["r"], r["alpha"]) for r in rows] == sorted(expected)  # ordered by value
    for row in rows:
        results = expected[(row["r"], row["alpha"])]
        accuracies = [res.accuracy for res in results]
        assert row["n"] == len(results)
        assert row["accuracy"] == close(statistics.mean(accuracies))
        if len(results) > 1:
            assert row["accuracy_std"] == close(statistics.stdev(accuracies))
        else:
            assert row["accuracy_std"] is None
        assert row["loss"] == close(statistics.mean(res.loss for res in results))
        delta = 100 * (row["accuracy"] - statistics.mean(base))
        assert row["delta_points"] == close(delta)


def test_metric_filters_and_sorting(filled: Filled) -> None:
    every = report_rows("--group-by", "r")
    good = report_rows("--group-by", "r", "--where", "accuracy>0.8", "--where", "n>=2")
    wanted = [r for r in every if r["accuracy"] > 0.8 and r["n"] >= 2]
    assert good == wanted and 0 < len(good) < len(every)
    by_accuracy = report_rows("--group-by", "r", "--sort", "accuracy")
    assert [r["accuracy"] for r in by_accuracy] == sorted(
        (r["accuracy"] for r in every), reverse=True
    )
    by_loss = report_rows("--group-by", "r", "--sort", "loss", "--desc")
    assert [r["loss"] for r in by_loss] == sorted((r["loss"] for r in every), reverse=True)
    by_delta = report_rows("--group-by", "r", "--sort", "delta", "--asc")
    deltas = [r["delta_points"] for r in by_delta]
    present = [d for d in deltas if d is not None]
    assert deltas == sorted(present) + [None] * (len(deltas) - len(present))
