"""Following jobs until they end: a live progress bar on a terminal, status lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ftqueue import db
from ftqueue.models import TERMINAL_STATUSES, Job, Result

#: `--wait` and `status --follow` exit with these, so scripts can tell how jobs ended.
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}


@dataclass
class Snapshot:
    id: int
    kind: str
    status: str
    attempts: int
    worker: str | None
    phase: str | None
    epoch: int | None
    step: int | None
    total: int | None
    loss: float | None
    error: str | None


def snapshot(job_ids: Sequence[int]) -> dict[int, Snapshot]:
    cols = (
        Job.id,
        Job.kind,
        Job.status,
        Job.attempts,
        Job.worker,
        Job.progress_phase,
        Job.progress_epoch,
        Job.progress_step,
        Job.progress_total,
        Job.progress_loss,
        Job.error_message,
    )
    with db.session_scope() as session:
        rows = session.execute(select(*cols).where(Job.id.in_(job_ids))).all()
    return {row[0]: Snapshot(*row) for row in rows}


def final_results(job_ids: Sequence[int]) -> dict[int, Result]:
    """Each job's headline measurement: its last test result, else its last result of any split."""
    best: dict[int, Result] = {}
    with db.session_scope() as session:
        rows = session.scalars(
            select(Result).where(Result.job_id.in_(job_ids)).order_by(Result.epoch, Result.id)
        ).all()
    for r in rows:
        current = best.get(r.job_id)
        if current is None or r.split == "test" or current.split != "test":
            best[r.job_id] = r
    return best


def exit_code(statuses: Sequence[str]) -> int:
    """Failure wins over cancellation, which wins over success."""
    codes = [EXIT_CODES.get(s, 1) for s in statuses]
    if 1 in codes:
        return 1
    return max(codes, default=0)


def _describe(s: Snapshot) -> str:
    if s.status == "queued":
        return f"job {s.id} {s.kind}: queued" + (
            f" (attempt {s.attempts + 1})" if s.attempts else ""
        )
    if s.status == "running":
        epoch = f" epoch {s.epoch}" if s.epoch else ""
        loss = f" loss {s.loss:.4f}" if s.loss is not None else ""
        return f"job {s.id} {s.kind}: {s.phase or 'starting'}{epoch}{loss}"
    return f"job {s.id} {s.kind}: {s.status}"


def follow(
    job_ids: Sequence[int],
    *,
    console: Any,
    poll: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
) -> dict[int, str]:
    """Poll the jobs until each has ended (or ``keep_going`` says stop); returns final statuses."""
    if console.is_terminal:
        return _follow_live(job_ids, console=console, poll=poll, keep_going=keep_going)
    last: dict[int, str] = {}
    while True:
        snaps = snapshot(job_ids)
        for jid in job_ids:
            s = snaps.get(jid)
            if s is None:
                continue
            line = _describe(s) if s.status != "running" else f"job {s.id} {s.kind}: running"
            line += f" on {s.worker}" if s.status == "running" and s.worker else ""
            if last.get(jid) != line:
                console.print(line, highlight=False)
                last[jid] = line
        if all(s.status in TERMINAL_STATUSES for s in snaps.values()) or not keep_going():
            return {jid: s.status for jid, s in snaps.items()}
        time.sleep(poll)


def _follow_live(
    job_ids: Sequence[int], *, console: Any, poll: float, keep_going: Callable[[], bool]
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
        while True:
            snaps = snapshot(job_ids)
            for jid, s in snaps.items():
                done = s.status in TERMINAL_STATUSES
                total = s.total or None
                completed = (s.total or 1) if done else (s.step or 0)
                progress.update(
                    bars[jid],
                    description=_describe(s),
                    total=total or (1 if done else None),
                    completed=completed,
                )
                if done:
                    progress.stop_task(bars[jid])
            if all(s.status in TERMINAL_STATUSES for s in snaps.values()) or not keep_going():
                return {jid: s.status for jid, s in snaps.items()}
            time.sleep(poll)


def summary_table(job_ids: Sequence[int]) -> Any:
    """A table of how the jobs ended, with each one's headline accuracy and loss."""
    from rich.table import Table

    from ftqueue.cli.render import status_text

    snaps = snapshot(job_ids)
    results = final_results(job_ids)
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
        table.add_row(
            str(jid),
            s.kind,
            status_text(s.status),
            r.split if r else "",
            f"{r.accuracy:.4f}" if r else "",
            f"{r.macro_f1:.4f}" if r else "",
            f"{r.loss:.4f}" if r else "",
            (s.error or "")[:120],
        )
    return table
