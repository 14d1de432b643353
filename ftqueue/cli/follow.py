"""Following jobs until they end: a live progress bar on a terminal, status lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ftqueue import api
from ftqueue.api import JobState
from ftqueue.cli.render import utcnow, worker_command
from ftqueue.core.states import JobStatus
from ftqueue.core.text import duration, literal
from ftqueue.settings import get_settings

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
        if _lost(s):
            return f"job {s.id} {s.kind}: {_lost(s)}"
        # The live bar counts the steps itself, and has less room.
        return f"job {s.id} {s.kind}: {_progress(s, compact=True)}"
    # An epoch's accuracy the follower had no time to see is told at the end.
    return f"job {s.id} {s.kind}: {s.status}{_validation(s) if s.ended else ''}"


def _lost(s: JobState) -> str:
    """``lost? last heartbeat 2m10s ago`` for a running job whose lease lapsed; else empty."""
    now = utcnow()
    if s.status != JobStatus.RUNNING or s.heartbeat_at is None or s.lease_expires_at is None:
        return ""
    if s.lease_expires_at >= now:
        return ""
    return f"lost? last heartbeat {duration((now - s.heartbeat_at).total_seconds())} ago"


def _progress(s: JobState, *, compact: bool = False) -> str:
    """Phase, epoch, step, training loss and the last validation accuracy, where known."""
    p = s.progress
    parts = [str(p.phase or "starting")]
    if p.epoch:
        parts.append(f"epoch {p.epoch}")
    if not compact and p.step is not None and p.total:
        parts.append(f"step {p.step}/{p.total}")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if compact and p.val_accuracy is not None:
        return " ".join([*parts, f"val {p.val_accuracy:.4f}"])
    return " ".join(parts) + _validation(s)


def _validation(s: JobState) -> str:
    p = s.progress
    if p.val_accuracy is None:
        return ""
    return f"; epoch {p.val_epoch} val acc {p.val_accuracy:.4f}"


def idle_queue_line(queue: str) -> str:
    """The one line said when no live worker consumes a queue that jobs wait in."""
    if "." in queue:  # a GPU class's queue, lora.a100
        cls = queue.split(".", 1)[1]
        return (
            f"warning: no live worker of GPU class {cls} consumes queue {queue}; the jobs wait "
            f"until one starts (`{worker_command(cls)}`)"
        )
    return (
        f"warning: no live worker consumes queue {queue}; start one with `{worker_command(None)}`"
    )


#: Seconds a followed job stays queued before followers look for a live worker.
QUEUED_CHECK_AFTER = 10.0


class IdleQueues:
    """Says once per queue when a followed job has stayed queued with no live worker on it."""

    def __init__(self, *, after: float | None = None) -> None:
        self.after = QUEUED_CHECK_AFTER if after is None else after
        self.checked = time.monotonic()
        self.told: set[str] = set()
        # Eager jobs wait for this process, not for a worker.
        self.enabled = not get_settings().eager

    def lines(self, snaps: dict[int, JobState]) -> list[str]:
        now = time.monotonic()
        if not self.enabled or now - self.checked < self.after:
            return []
        self.checked = now
        # The kinds waiting, by the GPU class whose queues they wait in (None: shared).
        waiting: dict[str | None, list[str]] = {}
        for s in snaps.values():
            if s.status == JobStatus.QUEUED:
                waiting.setdefault(s.gpu_class, []).append(s.kind)
        if not waiting:
            return []
        try:
            idle = [
                q
                for gpu_class, kinds in waiting.items()
                for q in api.idle_queues(kinds, gpu_class=gpu_class)
                if q not in self.told
            ]
        except Exception:  # a hint only: following goes on without it
            return []
        self.told.update(idle)
        return [idle_queue_line(q) for q in idle]


def _plain(s: JobState) -> tuple[str, tuple[object, ...]]:
    """A job's plain line, and what must change for it to be printed before it is due."""
    if s.status != JobStatus.RUNNING:
        return _describe(s), (s.status, s.attempts)
    where = f" on {s.worker}" if s.worker else ""
    if _lost(s):
        # Its worker died: a run time would only keep growing until the reaper re-queues it.
        return f"job {s.id} {s.kind}: running{where}: {_lost(s)}", (s.status, s.worker, "lost")
    if s.started_at is not None:
        where += f" for {duration((utcnow() - s.started_at).total_seconds())}"
    p = s.progress
    # A new phase or epoch, or an epoch's validation accuracy, is printed at once;
    # steps and loss only when the line is due again.
    return f"job {s.id} {s.kind}: running{where}: {_progress(s)}", (
        s.status,
        s.worker,
        p.phase,
        p.epoch,
        p.val_epoch,
    )


def follow(
    job_ids: Sequence[int],
    *,
    console: Console,
    poll: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
    every: float | None = None,
) -> dict[int, str]:
    """Poll the jobs until each has ended (or ``keep_going`` says stop); returns final statuses.

    On a terminal: a live bar per job. Elsewhere (a pipe, a log file): one plain line per job
    when it starts, at each phase and epoch (with step, loss and validation accuracy), at
    least every ``every`` seconds (FTQUEUE_PROGRESS_EVERY, 30) while it runs, and when it ends.
    """
    if console.is_terminal:
        return _follow_live(job_ids, console=console, poll=poll, keep_going=keep_going)
    every = float(get_settings().progress_every) if every is None else every
    last: dict[int, tuple[object, ...]] = {}
    printed_at: dict[int, float] = {}
    snaps: dict[int, JobState] = {}
    idle = IdleQueues()
    for snaps in api.watch(job_ids, poll=poll, keep_going=keep_going):
        for warning in idle.lines(snaps):
            console.print(warning, highlight=False, soft_wrap=True)
        now = time.monotonic()
        for jid in job_ids:
            s = snaps[jid]
            line, key = _plain(s)
            due = s.status == JobStatus.RUNNING and now - printed_at.get(jid, now) >= every
            if last.get(jid) != key or due:
                console.print(literal(line), soft_wrap=True)  # worker names are user text
                last[jid] = key
                printed_at[jid] = now
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
        idle = IdleQueues()
        for snaps in api.watch(job_ids, poll=poll, keep_going=keep_going):
            for warning in idle.lines(snaps):
                progress.console.print(warning, highlight=False, soft_wrap=True)
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
    return endings_table(api.endings(job_ids=job_ids))


#: Hidden first when the terminal is narrow (lowest first); the others always stay.
_PRIORITY = {"macro-F1": 1, "split": 2, "kind": 3, "loss": 4}


def endings_table(endings: Sequence[Any]) -> Any:
    """How the jobs ended (``api.endings``): status, headline measurement, error or output."""
    from ftqueue.cli.render import status_text
    from ftqueue.core.tables import KEEP, Column, FitTable

    names = ("job", "kind", "status", "split", "accuracy", "macro-F1", "loss", "note")
    columns = [
        Column(
            name,
            priority=_PRIORITY.get(name, KEEP),
            justify="right" if name in ("job", "accuracy", "macro-F1", "loss") else "left",
            wrap=name == "note",
            min_width=20 if name == "note" else 0,
        )
        for name in names
    ]
    rows = []
    for end in endings:
        r = end.result
        note = end.error or ""
        if not r and end.output:  # nothing measured (predictions): where the files are
            label, paths = end.output
            note = f"{label}: {paths[0]}"
        rows.append(
            [
                str(end.id),
                end.kind,
                status_text(end.status),
                literal(r["split"]) if r else "",
                f"{r['accuracy']:.4f}" if r else "",
                f"{r['macro_f1']:.4f}" if r else "",
                f"{r['loss']:.4f}" if r else "",
                literal(note[:160]),
            ]
        )
    return FitTable(columns, rows, header_style="bold")
