"""Following jobs until they end: a live progress bar on a terminal, status lines elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ftqueue import api, store
from ftqueue.states import JobStatus
from ftqueue.store import JobState

if TYPE_CHECKING:
    from rich.console import Console

#: `--wait` and `status --follow` exit with these, so scripts can tell how jobs ended.
#: A pruned trial is a sweep working as asked: it exits 0, like a success.
EXIT_CODES = {
    JobStatus.SUCCEEDED: 0,
    JobStatus.FAILED: 1,
    JobStatus.CANCELLED: 3,
    JobStatus.PRUNED: 0,
}


def exit_code(statuses: Sequence[str]) -> int:
    """Failure wins over cancellation, which wins over success."""
    codes = [EXIT_CODES.get(JobStatus(s), 1) for s in statuses]
    if 1 in codes:
        return 1
    return max(codes, default=0)


def _describe(s: JobState) -> str:
    if s.status == JobStatus.QUEUED:
        return f"job {s.id} {s.kind}: queued" + (
            f" (attempt {s.attempts + 1})" if s.attempts else ""
        )
    if s.status == JobStatus.RUNNING:
        p = s.progress
        epoch = f" epoch {p.epoch}" if p.epoch else ""
        loss = f" loss {p.loss:.4f}" if p.loss is not None else ""
        return f"job {s.id} {s.kind}: {p.phase or 'starting'}{epoch}{loss}"
    return f"job {s.id} {s.kind}: {s.status}"


def follow(
    job_ids: Sequence[int],
    *,
    console: Console,
    poll: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
) -> dict[int, str]:
    """Poll the jobs until each has ended (or ``keep_going`` says stop); returns final statuses."""
    if console.is_terminal:
        return _follow_live(job_ids, console=console, poll=poll, keep_going=keep_going)
    last: dict[int, str] = {}
    snaps: dict[int, JobState] = {}
    for snaps in api.watch(job_ids, poll=poll, keep_going=keep_going):
        for jid in job_ids:
            s = snaps[jid]
            running = s.status == JobStatus.RUNNING
            line = f"job {s.id} {s.kind}: running" if running else _describe(s)
            line += f" on {s.worker}" if running and s.worker else ""
            if last.get(jid) != line:
                console.print(line, highlight=False)
                last[jid] = line
    return {jid: s.status for jid, s in snaps.items()}


def _follow_live(
    job_ids: Sequence[int], *, console: Console, poll: float, keep_going: Callable[[], bool]
) -> dict[int, str]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {jid: progress.add_task(f"job {jid}", total=None) for jid in job_ids}
        snaps: dict[int, JobState] = {}
        for snaps in api.watch(job_ids, poll=poll, keep_going=keep_going):
            for jid, s in snaps.items():
                done = s.ended
                total = s.progress.total or None
                completed = (s.progress.total or 1) if done else (s.progress.step or 0)
                progress.update(
                    bars[jid],
                    description=_describe(s),
                    total=total or (1 if done else None),
                    completed=completed,
                )
                if done:
                    progress.stop_task(bars[jid])
        return {jid: s.status for jid, s in snaps.items()}


def summary_table(job_ids: Sequence[int]) -> Any:
    """A table of how the jobs ended, with each one's headline accuracy and loss."""
    from rich.table import Table

    from ftqueue.cli.render import status_text

    snaps = store.job_states(job_ids)
    results = store.final_results(job_ids)
    outputs = store.outputs_of(job_ids)
    table = Table(header_style="bold")
    for name in ("job", "kind", "status", "split", "accuracy", "macro-F1", "loss", "note"):
        table.add_column(
            name, justify="right" if name in ("job", "accuracy", "macro-F1", "loss") else "left"
        )
    for jid in job_ids:
        s = snaps.get(jid)
        if s is None:
            continue
        r = results.get(jid)
        note = s.error or ""
        if not r and jid in outputs:  # nothing measured (predictions): where the files are
            label, paths = outputs[jid]
            note = f"{label}: {paths[0]}"
        table.add_row(
            str(jid),
            s.kind,
            status_text(s.status),
            r.split if r else "",
            f"{r.accuracy:.4f}" if r else "",
            f"{r.macro_f1:.4f}" if r else "",
            f"{r.loss:.4f}" if r else "",
            note[:160],
        )
    return table
