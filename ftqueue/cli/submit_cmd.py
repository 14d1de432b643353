"""`ftqueue submit lora|evaluate`: specs from flags (grids expand), queued, then followed."""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ftqueue.cli.app import cli, console, echo_json, json_option
from ftqueue.errors import SpecError
from ftqueue.specs import BIASES, POOLINGS, SPLITS, DataSpec, EvaluateSpec, LoraSpec

F = TypeVar("F", bound=Callable[..., Any])


class Grid(click.ParamType):
    """A comma list of numbers (``8,16,32``), or for integers a range (``0..4``)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = "list" if kind is float else "ints"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        items: list[Any] = []
        for part in str(value).split(","):
            part = part.strip()
            try:
                if self.kind is int and ".." in part:
                    lo, hi = (int(x) for x in part.split("..", 1))
                    if hi < lo or hi - lo > 10_000:
                        raise ValueError
                    items.extend(range(lo, hi + 1))
                elif self.kind is int:
                    number = float(part)
                    if not math.isfinite(number) or not number.is_integer():
                        raise ValueError
                    items.append(int(number))
                else:
                    items.append(float(part))
            except ValueError:
                what = "whole numbers" if self.kind is int else "numbers"
                self.fail(
                    f"{part!r} is not valid: give {what}, comma-separated (e.g. "
                    f"{'8,16,32' if self.kind is int else '1e-4,3e-4'})",
                    param,
                    ctx,
                )
        return items


INTS = Grid(int)
FLOATS = Grid(float)


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def data_options(func: F) -> F:
    options = [
        click.option(
            "--dataset",
            required=True,
            metavar="DATA",
            help="movie-snippets (offline), a hub id (rotten_tomatoes), a .csv/.jsonl/"
            ".parquet file, or train=a.csv,validation=b.csv,test=c.csv.",
        ),
        click.option("--text-column", default="text", show_default=True),
        click.option(
            "--label-column", default="label", show_default=True, help="Integer labels 0..N-1."
        ),
        click.option(
            "--split-seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the deterministic split of files without named splits.",
        ),
        click.option("--train-samples", type=int, help="Use only this many training rows."),
        click.option(
            "--eval-samples", type=int, help="Use only this many validation and test rows."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def queue_options(func: F) -> F:
    options = [
        click.option("--tag", "tags", multiple=True, help="Label the jobs (repeatable)."),
        click.option("--name", help="A name for the job(s)."),
        click.option("--sweep", help="Put the jobs in this sweep (default: a new id for a grid)."),
        click.option(
            "--force",
            is_flag=True,
            help="Run even if an identical job already succeeded or is pending.",
        ),
        click.option(
            "--wait",
            is_flag=True,
            help="Follow the jobs with a progress bar until they end; the exit code "
            "says how (0 succeeded, 1 failed, 3 cancelled).",
        ),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.group("submit")
def submit_group() -> None:
    """Queue LoRA training or evaluation jobs.

    Comma lists on hyper-parameter flags expand into a grid: one job per combination, all
    under one sweep id. Identical jobs that already succeeded are reported, not run again.
    """


def _data(kw: dict[str, Any]) -> DataSpec:
    return DataSpec(
        dataset=kw.pop("dataset"),
        text_column=kw.pop("text_column"),
        label_column=kw.pop("label_column"),
        split_seed=kw.pop("split_seed"),
        train_samples=kw.pop("train_samples"),
        eval_samples=kw.pop("eval_samples"),
    )


def expand(fixed: dict[str, Any], grid: dict[str, list[Any] | None]) -> list[dict[str, Any]]:
    """Every combination of the grid values given, each merged into the fixed arguments."""
    axes = {k: v for k, v in grid.items() if v}
    combos = itertools.product(*axes.values()) if axes else [()]
    return [{**fixed, **dict(zip(axes, combo, strict=True))} for combo in combos]


def _build(cls: type[LoraSpec] | type[EvaluateSpec], rows: list[dict[str, Any]]) -> list[Any]:
    return [cls(**{k: v for k, v in row.items() if v is not None}) for row in rows]


LORA_GRID = (
    "r",
    "alpha",
    "dropout",
    "lr",
    "head_lr",
    "epochs",
    "batch_size",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "seed",
)


def _h(name: str, text: str, spec: type = LoraSpec) -> str:
    """Help text with the spec's own default, so help and behaviour cannot drift apart."""
    default = _default(spec, name)
    return f"{text} [default: {'64 on CPU, 512 on GPU' if default is None else default}]"


def _e(name: str, text: str) -> str:
    return _h(name, text, EvaluateSpec)


@submit_group.command("lora")
@click.option(
    "--model",
    required=True,
    help="minilm (offline), a hub id (bert-base-uncased) or a local model directory.",
)
@data_options
@click.option("--r", type=INTS, help=_h("r", "LoRA rank, 1..1024."))
@click.option("--alpha", type=FLOATS, help=_h("alpha", "LoRA alpha (scale = alpha / r)."))
@click.option("--dropout", type=FLOATS, help=_h("dropout", "LoRA dropout in [0, 1)."))
@click.option(
    "--target-modules",
    multiple=True,
    help="Comma list of module names to adapt [default: query,key,value,dense]; repeat "
    "the flag to compare several sets.",
)
@click.option("--bias", type=click.Choice(BIASES), help=_h("bias", "Which biases to train."))
@click.option(
    "--pooling",
    type=click.Choice(POOLINGS),
    help=_h("pooling", "Sentence vector: mean of tokens, first token, or the pooler."),
)
@click.option("--lr", type=FLOATS, help=_h("lr", "Learning rate of the adapter, in (0, 1]."))
@click.option("--head-lr", type=FLOATS, help=_h("head_lr", "Learning rate of the new head."))
@click.option("--epochs", type=INTS, help=_h("epochs", "Passes over the training data."))
@click.option("--batch-size", type=INTS, help=_h("batch_size", "Training batch size."))
@click.option("--eval-batch-size", type=int, help=_h("eval_batch_size", "Evaluation batch size."))
@click.option("--max-length", type=INTS, help=_h("max_length", "Tokens kept per text."))
@click.option("--warmup-ratio", type=FLOATS, help=_h("warmup_ratio", "Share of warm-up steps."))
@click.option("--weight-decay", type=FLOATS, help=_h("weight_decay", "AdamW weight decay."))
@click.option("--seed", type=INTS, help=_h("seed", "Random seed; 0..4 runs five seeds."))
@click.option(
    "--output-dir",
    metavar="DIR",
    help="Publish adapters as DIR/job-<id> under FTQUEUE_ARTIFACTS_DIR [default: adapters].",
)
@queue_options
def submit_lora(**kw: Any) -> None:
    """Fine-tune LoRA adapters and record validation and test accuracy.

    \b
    Examples:
      ftqueue submit lora --model minilm --dataset movie-snippets --wait
      ftqueue submit lora --model minilm --dataset movie-snippets \\
          --r 32 --alpha 4 --dropout 0.01 --target-modules query,key,value   # the original
      ftqueue submit lora --model minilm --dataset movie-snippets \\
          --r 8,16,32 --lr 1e-4,3e-4 --seed 0,1,2 --tag grid1               # 18 jobs
    """
    queue = {k: kw.pop(k) for k in ("tags", "name", "sweep", "force", "wait", "as_json")}
    queue["output_dir"] = kw.pop("output_dir")
    data = _data(kw)
    modules = kw.pop("target_modules")
    fixed = {"model": kw.pop("model"), "data": data}
    fixed.update({k: kw.pop(k) for k in ("bias", "pooling", "eval_batch_size")})
    grid: dict[str, list[Any] | None] = {k: kw.pop(k) for k in LORA_GRID}
    grid["target_modules"] = [tuple(m.split(",")) for m in modules] or None
    _submit(_build(LoraSpec, expand(fixed, grid)), **queue)


@submit_group.command("evaluate")
@click.option("--model", help="Model to evaluate; with --adapter-job, defaults to the adapter's.")
@data_options
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
@click.option(
    "--adapter-job",
    type=INTS,
    help="Evaluate the adapter of this succeeded LoRA job (a comma list evaluates "
    "several), with no training.",
)
@click.option(
    "--head-epochs",
    type=INTS,
    help="Epochs of head-only training (body frozen) before evaluating a bare model [default: 1].",
)
@click.option("--head-lr", type=FLOATS, help=_e("head_lr", "Learning rate of the head."))
@click.option(
    "--pooling",
    type=click.Choice(POOLINGS),
    help="Sentence vector [default: mean; an adapter's own with --adapter-job].",
)
@click.option("--batch-size", type=int, help=_e("batch_size", "Head training batch size."))
@click.option("--eval-batch-size", type=int, help=_e("eval_batch_size", "Evaluation batch size."))
@click.option("--max-length", type=int, help=_e("max_length", "Tokens kept per text."))
@click.option("--seed", type=INTS, help=_e("seed", "Random seed of head training."))
@queue_options
def submit_evaluate(**kw: Any) -> None:
    """Evaluate a base model (head trained, body frozen) or an earlier LoRA job's adapter.

    \b
    Examples:
      ftqueue submit evaluate --model minilm --dataset movie-snippets    # the base line
      ftqueue submit evaluate --adapter-job 12 --dataset my_reviews.csv  # adapter, new data
      ftqueue submit evaluate --model minilm --dataset movie-snippets --seed 0..2 --wait
    """
    queue = {k: kw.pop(k) for k in ("tags", "name", "sweep", "force", "wait", "as_json")}
    data = _data(kw)
    adapters = kw.pop("adapter_job") or []
    model = kw.pop("model") or _adapter_model(adapters)
    fixed = {"model": model, "data": data, "split": kw.pop("split")}
    fixed.update({k: kw.pop(k) for k in ("pooling", "batch_size", "eval_batch_size", "max_length")})
    grid = {
        "adapter_job": adapters or None,
        "head_epochs": kw.pop("head_epochs"),
        "head_lr": kw.pop("head_lr"),
        "seed": kw.pop("seed"),
    }
    _submit(_build(EvaluateSpec, expand(fixed, grid)), **queue)


def _adapter_model(adapters: Sequence[int]) -> str:
    from ftqueue import db
    from ftqueue.models import Job

    if not adapters:
        raise SpecError(
            "give --model, or --adapter-job to evaluate a LoRA job's adapter", param="--model"
        )
    db.ensure_ready()
    with db.session_scope() as session:
        jobs = [session.get(Job, a) for a in adapters]
        models = {job.model for job in jobs if job is not None}
    if len(models) != 1:
        raise SpecError(
            "the adapters given were trained on different (or unknown) models: give "
            "--model, or evaluate them separately",
            param="--adapter-job",
        )
    return models.pop()


def _submit(
    specs: list[Any],
    *,
    tags: tuple[str, ...],
    name: str | None,
    sweep: str | None,
    force: bool,
    wait: bool,
    as_json: bool,
    output_dir: str | None = None,
) -> None:
    from ftqueue import submission
    from ftqueue.settings import get_settings

    out = console()
    sub = submission.submit(
        specs, tags=tags, name=name, sweep=sweep, force=force, output_dir=output_dir
    )
    eager = get_settings().eager
    if as_json and not (wait or eager):
        echo_json(_payload(sub))
        return
    if not as_json:
        _print_submission(out, sub, eager=eager)
    # With --json, progress goes nowhere: stdout is for the JSON document alone.
    progress_out = console(quiet=True) if as_json else out
    statuses: dict[int, str] = {}
    if eager and sub.created:
        statuses = _run_eager(sub, progress_out)
    elif wait and sub.to_follow:
        statuses = _wait(sub.to_follow, progress_out)
    if as_json:
        echo_json(_payload(sub, statuses))
    elif statuses:
        from ftqueue.cli.follow import summary_table

        out.print(summary_table(sorted(statuses)))
    if statuses or (wait and sub.duplicates):
        from ftqueue.cli.follow import exit_code

        everything = list(statuses.values()) + [
            d.status for d in sub.duplicates if d.job_id not in statuses
        ]
        raise SystemExit(exit_code(everything))


def _wait(job_ids: list[int], out: Any) -> dict[int, str]:
    from ftqueue.cli.follow import follow

    try:
        return follow(job_ids, console=out)
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped following; the jobs go on. `ftqueue status {job_ids[0]} --follow` "
            "picks them up again.",
            err=True,
        )
        raise SystemExit(130) from None


def _run_eager(sub: Any, out: Any) -> dict[int, str]:
    """Run the new jobs in a thread of this process and follow them from this one."""
    from ftqueue import lifecycle, submission
    from ftqueue.cli.follow import follow, snapshot

    errors: list[BaseException] = []

    def target() -> None:
        try:
            submission.run_eagerly(sub.created)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=target, name="eager-jobs", daemon=True)
    runner.start()
    ids = [job.id for job in sub.created]
    try:
        follow(ids, console=out, keep_going=runner.is_alive)
    except KeyboardInterrupt:
        lifecycle.cancel(ids)
        click.echo("\nCancelling: the running job stops at its next step.", err=True)
    runner.join()
    if errors:
        raise errors[0]
    # Read once more after the runner ended: the follower may have stopped just before the
    # last job recorded its end.
    return {jid: s.status for jid, s in snapshot(ids).items()}


def _payload(sub: Any, statuses: dict[int, str] | None = None) -> dict[str, Any]:
    statuses = statuses or {}
    return {
        "sweep_id": sub.sweep_id,
        "jobs": [
            {
                "id": job.id,
                "kind": job.kind,
                "status": statuses.get(job.id, job.status),
                "spec_hash": job.spec_hash,
                "spec": job.spec,
            }
            for job in sub.created
        ],
        "duplicates": [
            {
                "job_id": d.job_id,
                "status": statuses.get(d.job_id, d.status),
                "spec_hash": d.spec.spec_hash(),
            }
            for d in sub.duplicates
        ],
    }


def _print_submission(out: Any, sub: Any, *, eager: bool) -> None:
    from rich.table import Table

    specs = [(job.id, job.spec, "queued") for job in sub.created]
    specs += [
        (d.job_id, d.spec.to_dict(), f"identical to job {d.job_id} ({d.status}), not re-run")
        for d in sub.duplicates
    ]
    if len(specs) == 1 and not sub.duplicates:
        job = sub.created[0]
        where = "running it in this process (FTQUEUE_EAGER=1)" if eager else "queued"
        out.print(f"job {job.id} ({job.kind} {job.model} on {job.dataset}): {where}")
        return
    varying = _varying([spec for _, spec, _ in specs])
    table = Table(title=f"sweep {sub.sweep_id}" if sub.sweep_id else None, header_style="bold")
    table.add_column("job", justify="right")
    for key in varying:
        table.add_column(key)
    table.add_column("state")
    for jid, spec, state in specs:
        table.add_row(str(jid), *[_fmt(spec.get(k)) for k in varying], state)
    out.print(table)


def _varying(specs: list[dict[str, Any]]) -> list[str]:
    keys = [k for k in specs[0] if k != "data"] if specs else []
    return [k for k in keys if len({repr(s.get(k)) for s in specs}) > 1] or keys[:1]


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)
