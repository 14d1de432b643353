"""`ftqueue submit lora|evaluate`: specs from flags (comma lists expand into grids), queued."""

from __future__ import annotations

from typing import Any

import click

from ftqueue.cli.options import (
    build_specs,
    data_options,
    data_spec,
    expand,
    pop_queue_options,
    queue_options,
    spec_options,
    split_grid,
)
from ftqueue.cli.submitting import submit_specs
from ftqueue.core import gcpause
from ftqueue.core.text import clip
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec


class KindFirst(click.Group):
    """`ftqueue submit --model ...` says to name the kind of job first, not "no such option"."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # the parser consumes the list
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            kinds = "|".join(self.list_commands(ctx))
            raise click.UsageError(
                f"{exc.option_name} is a flag of a kind of job: name the kind first, as in "
                f"`ftqueue submit {kinds} {clip(' '.join(given), 80)}`",
                ctx,
            ) from None


@click.group("submit", cls=KindFirst)
@click.pass_context
def submit_group(ctx: click.Context) -> None:
    """Queue LoRA training, evaluation or prediction jobs.

    Flags shown as INTS or LIST take comma lists (and INTS ranges such as 0..4), which expand
    into a grid: one job per combination, all under one sweep id, at most FTQUEUE_MAX_GRID
    (10,000) jobs. Identical jobs that already succeeded are reported, not run again; a local
    data file or model directory is identified by its absolute path and its content.
    """
    # Building, checking and writing a grid makes millions of objects and no cycles worth a
    # collection; the garbage collector is back on before any job is followed or run.
    ctx.with_resource(gcpause.paused())


@submit_group.command("lora")
@spec_options(LoraSpec, only=("model",))
@data_options
@spec_options(LoraSpec, skip=("model",))
@click.option(
    "--target-modules",
    multiple=True,
    help="Comma list of module names to adapt [default: query,key,value,dense]; repeat "
    "the flag to compare several sets.",
)
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
      ftqueue submit lora --model minilm --dataset nli.csv --label-column label \\
          --text-column premise --text-pair-column hypothesis              # sentence pairs

    Labels are class numbers 0..N-1 (--label-names neg,pos names them) or class names
    (their ids follow the sorted order, or the order --label-names gives).
    """
    queue = pop_queue_options(kw)
    queue["output_dir"] = kw.pop("output_dir")
    data = data_spec(kw)
    modules = kw.pop("target_modules")
    fixed, grid = split_grid(LoraSpec, kw)
    grid["target_modules"] = [tuple(m.split(",")) for m in modules] or None
    submit_specs(build_specs(LoraSpec, expand({**fixed, "data": data}, grid)), **queue)


@submit_group.command("evaluate")
@click.option("--model", help="Model to evaluate; with --adapter-job, defaults to the adapter's.")
@data_options
@spec_options(EvaluateSpec)
@queue_options
def submit_evaluate(**kw: Any) -> None:
    """Evaluate a base model (head trained, body frozen) or an earlier LoRA job's adapter.

    \b
    Examples:
      ftqueue submit evaluate --model minilm --dataset movie-snippets    # the base line
      ftqueue submit evaluate --adapter-job 12 --dataset my_reviews.csv  # adapter, new data
      ftqueue submit evaluate --model minilm --dataset movie-snippets --seed 0..2 --wait
    """
    from ftqueue import api

    queue = pop_queue_options(kw)
    data = data_spec(kw)
    model = kw.pop("model") or api.adapter_model(job_ids=list(kw.get("adapter_job") or []))
    fixed, grid = split_grid(EvaluateSpec, kw)
    fixed.update(model=model, data=data)
    submit_specs(build_specs(EvaluateSpec, expand(fixed, grid)), **queue)
