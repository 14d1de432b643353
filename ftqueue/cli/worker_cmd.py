"""`ftqueue worker`: one Celery worker process per GPU, or CPU workers where there is none."""

from __future__ import annotations

import click

from ftqueue import kinds
from ftqueue.core.states import GPU_CLASS_PATTERN
from ftqueue.core.text import printable, quote


@click.command("worker")
@click.option("--gpus", help="Comma list of GPU indices, one worker each [default: all visible].")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Number of CPU workers when there is no GPU.",
)
@click.option(
    "--queues",
    default=",".join(kinds.queues()),
    show_default=True,
    help="Queues to take jobs from (one per job kind).",
)
@click.option(
    "--class",
    "gpu_class",
    metavar="CLASS",
    help="GPU class whose queues (lora.CLASS ...) it takes as well as the shared ones, for "
    "jobs submitted with --gpu-class CLASS [default: from the GPU's name, e.g. h200; cpu "
    "without a GPU].",
)
@click.option("--name", "prefix", help="Prefix of the worker names [default: gpu or cpu].")
@click.option(
    "--wait-for-gpu",
    is_flag=True,
    help="Wait for a GPU another worker on this host holds, instead of exiting.",
)
@click.option(
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def worker_cmd(
    gpus: str | None,
    processes: int,
    queues: str,
    gpu_class: str | None,
    prefix: str | None,
    wait_for_gpu: bool,
    loglevel: str,
) -> None:
    """Run jobs: one worker process per GPU (CUDA_VISIBLE_DEVICES set), one job at a time each.

    Falls back to CPU workers where no GPU is visible. A worker keeps imports, tokenized data
    and the base model between jobs. A GPU is one worker's on its host: another worker asking
    for it is refused (or waits, with --wait-for-gpu). `celery -A ftqueue.queue.app worker`
    works too, without that claim.

    \b
    Examples:
      ftqueue worker                      # every visible GPU
      ftqueue worker --gpus 0,1 --queues lora
      ftqueue worker --class a100         # also jobs sent with --gpu-class a100
      FTQUEUE_DATABASE_URL=postgresql+psycopg://ftq@db/ftq ftqueue worker --processes 2
    """
    from ftqueue import api

    names = [q.strip() for q in queues.split(",") if q.strip()]
    known = kinds.queues()
    unknown = sorted(set(names) - set(known))
    if not names or unknown:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; known: {', '.join(known)}",
            param_hint="--queues",
        )
    if gpu_class is not None and not GPU_CLASS_PATTERN.fullmatch(gpu_class):
        raise click.BadParameter(
            f"{quote(gpu_class, 40)} is no class name: use up to 32 lower-case letters, digits,"
            " - or _, such as a100 or h200",
            param_hint="--class",
        )
    visible = api.check_workers(prefix=prefix)
    chosen = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else visible
    if gpus is not None and not chosen:
        raise click.BadParameter(
            "names no GPU: give indices such as 0 or 0,1, or leave --gpus out",
            param_hint="--gpus",
        )
    if gpus and not visible:
        raise click.BadParameter(
            f"{gpus} asks for GPUs but none is visible here (no nvidia-smi, or it lists none, "
            "or CUDA_VISIBLE_DEVICES is empty): leave --gpus out to run CPU workers",
            param_hint="--gpus",
        )
    missing = sorted(set(chosen) - set(visible))
    if missing:
        raise click.BadParameter(
            f"GPU(s) {', '.join(missing)} not visible (visible: {', '.join(visible)})",
            param_hint="--gpus",
        )
    slots = api.plan_workers(
        gpus=chosen,
        processes=processes,
        prefix=prefix,
        wait_for_gpu=wait_for_gpu,
        on_wait=lambda line: click.echo(printable(line), err=True),
        gpu_class=gpu_class,
    )
    kind = "GPU" if chosen else "CPU"
    names_text = printable(", ".join(s.name for s in slots))
    click.echo(f"starting {len(slots)} {kind} worker(s): {names_text}")
    for cls in sorted({s.gpu_class for s in slots if s.gpu_class}):
        click.echo(printable(f"class {cls}: also takes the jobs of submit --gpu-class {cls}"))
    raise SystemExit(api.run_workers(slots, queues=names, loglevel=loglevel.upper()))
