"""The Python API: queue jobs, wait for them, read what they recorded.

The `ftqueue` commands are a shell over these functions, and a script or a test calls them
directly instead of running the command line. Every function reads the settings (FTQUEUE_*)
of the process, checks that the database is migrated, and raises an ``FtqueueError`` whose
text says what to do when something is wrong.

    from ftqueue import api
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.specs import DataSpec

    data = DataSpec(dataset="reviews.csv")
    sub = api.submit(LoraSpec(model="minilm", data=data, r=r) for r in (8, 16))
    api.wait(sub, timeout=3600)
    best = max(sub.job_ids, key=lambda j: api.results(j, split="test")[-1].accuracy)

Under FTQUEUE_EAGER=1 ``submit`` runs the new jobs in this process before it returns, so
``wait`` finds them ended.

This module holds the jobs' functions; what the other commands need lives in one module per
concern (``adapters``: predict, export; ``reporting``; ``sweeping``; ``admin``: schema and
workers; ``fleet``: live workers and queues; ``following``), each function also reachable as
``api.<name>``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ftqueue.core.states import JobStatus
from ftqueue.core.text import quote
from ftqueue.errors import FtqueueError, JobNotFound, WaitTimeout
from ftqueue.kinds import registry, rows
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.specs import JobSpec
from ftqueue.store import db, lifecycle, reads
from ftqueue.store.reads import JobState
from ftqueue.store.schema import Job, Sweep
from ftqueue.submit import submission
from ftqueue.submit.submission import Submission

__all__ = [
    "Ending",
    "Export",
    "Fetched",
    "JobResult",
    "JobState",
    "LogPage",
    "Reported",
    "Submission",
    "adapter_model",
    "adapters",
    "cancel",
    "check_workers",
    "completions",
    "db_current",
    "db_downgrade",
    "db_downgrade_loss",
    "db_upgrade",
    "db_url",
    "describe",
    "end_eager",
    "endings",
    "export",
    "extend_sweep",
    "fetch",
    "file_sha256",
    "idle_queues",
    "job",
    "jobs",
    "live_consumers",
    "logs_of",
    "plan_workers",
    "predict",
    "report",
    "results",
    "resume_sweep",
    "run_eager",
    "run_workers",
    "start_sweep",
    "states",
    "stop_sweep",
    "submit",
    "sweep_finished",
    "sweep_jobs",
    "sweep_report",
    "sweep_state",
    "sweep_trials_to_run",
    "top",
    "wait",
    "watch",
    "workers",
]


def submit(
    specs: JobSpec | Iterable[JobSpec],
    *,
    tags: Iterable[str] = (),
    name: str | None = None,
    sweep: str | None = None,
    force: bool = False,
    output_dir: str | None = None,
    run: bool = True,
    gpu_class: str | None = None,
    priority: str = "normal",
    strict: bool = False,
) -> Submission:
    """Queue one job per spec; an identical earlier job is reported instead (``force`` runs it).

    Under FTQUEUE_EAGER=1 the new jobs run in this process before this returns, unless
    ``run`` is False (then ``run_eager`` runs them). Nothing is written when a spec is bad.
    ``gpu_class`` routes the jobs to that class's workers (``strict``: refused when none is
    live); ``priority`` is high, normal or low.
    """
    if isinstance(specs, JobSpec):
        specs = [specs]
    sub = submission.submit(
        specs,
        tags=tuple(tags),
        name=name,
        sweep=sweep,
        force=force,
        output_dir=output_dir,
        gpu_class=gpu_class,
        priority=priority,
        strict=strict,
    )
    if run and sub.created and get_settings().eager:
        run_eager(sub)
    return sub


def run_eager(jobs: Submission | Sequence[Job]) -> None:
    """Run the new jobs of an eager submission here, one after the other, as a worker would."""
    from ftqueue.worker.tasks import run_eagerly

    run_eagerly(jobs.created if isinstance(jobs, Submission) else jobs)


def _ids(jobs: int | Iterable[int] | Submission) -> list[int]:
    if isinstance(jobs, Submission):
        return jobs.job_ids
    if isinstance(jobs, int):
        return [jobs]
    return list(jobs)


def states(jobs: int | Iterable[int] | Submission) -> dict[int, JobState]:
    """Where each job is now: status, attempts, worker, progress, error (JobNotFound if none)."""
    db.ensure_ready()
    return _snapshot(_ids(jobs))


def _snapshot(ids: list[int]) -> dict[int, JobState]:
    eager.settle(ids)  # a job whose eager process died would never end otherwise
    found = reads.job_states(ids)
    missing = sorted(set(ids) - set(found))
    if missing:
        raise JobNotFound(
            f"no job {missing[0]} in this database: `ftqueue list` shows the jobs there are."
        )
    return found


def watch(
    jobs: int | Iterable[int] | Submission,
    *,
    poll: float = 0.5,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[dict[int, JobState]]:
    """The jobs' states now and then every ``poll`` seconds, until every job has ended (that
    state is the last one yielded) or ``keep_going()`` returns False."""
    ids = _ids(jobs)
    db.ensure_ready()
    while True:
        snapshot = _snapshot(ids)
        yield snapshot
        if all(s.ended for s in snapshot.values()) or not keep_going():
            return
        time.sleep(poll)


def wait(
    jobs: int | Iterable[int] | Submission, *, timeout: float | None = None, poll: float = 0.5
) -> dict[int, JobStatus]:
    """Block until every job has ended; returns how each ended (succeeded, failed, cancelled).

    Raises WaitTimeout when ``timeout`` seconds pass first; the jobs go on.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[int, JobState] = {}
    for last in watch(jobs, poll=poll):
        if deadline is not None and time.monotonic() > deadline:
            pending = sorted(jid for jid, s in last.items() if not s.ended)
            if pending:
                raise WaitTimeout(
                    f"job(s) {', '.join(map(str, pending))} still not ended after {timeout:g}s; "
                    "they go on: wait again, or cancel them"
                )
    return {jid: s.status for jid, s in last.items()}


@dataclass(frozen=True)
class JobResult:
    """One measurement a job recorded: a split after an epoch (0: no training).

    The fields come in the order of ``Measurement``, the trainer's own record of them.
    """

    split: str
    epoch: int
    accuracy: float
    loss: float
    macro_f1: float
    n_examples: int
    attempt: int
    recorded_at: dt.datetime | None


def results(job_id: int, *, split: str | None = None) -> list[JobResult]:
    """What the job recorded, by split then epoch (of one ``split`` if given); [] until then.

    A training job's last ``test`` result is its headline: ``results(j, split="test")[-1]``.
    """
    db.ensure_ready()
    with db.session_scope() as session:
        row = reads.get_job(session, job_id, with_results=True)
        return [
            JobResult(
                split=r.split,
                epoch=r.epoch,
                accuracy=r.accuracy,
                loss=r.loss,
                macro_f1=r.macro_f1,
                n_examples=r.n_examples,
                attempt=r.attempt,
                recorded_at=r.recorded_at,
            )
            for r in row.results
            if split is None or r.split == split
        ]


def job(job_id: int, *, detail: bool = False) -> dict[str, Any]:
    """The JSON form of a job (what `--json` prints); ``detail`` adds history and results."""
    db.ensure_ready()
    eager.settle([job_id])
    with db.session_scope() as session:
        summary = rows.job_summary(
            reads.get_job(session, job_id, with_results=detail), detail=detail
        )
    if detail:
        summary["traceback"] = traceback_of(job_id)
    return fleet.annotate([summary])[0]


def jobs(
    *,
    statuses: Iterable[str] = (),
    kinds: Iterable[str] = (),
    sweep: str | None = None,
    tags: Iterable[str] = (),
    model: str | None = None,
    dataset: str | None = None,
    limit: int | None = None,
    before: int | None = None,
    user: str | None = None,
) -> list[dict[str, Any]]:
    """The JSON form of the jobs that match every filter given, newest first.

    ``user``: only the jobs that user submitted (FTQUEUE_USER when they submitted).

    ``model`` and ``dataset`` match as `submit` stored them: a local path by what it points to.
    """
    from ftqueue.inputs.pinning import stored_dataset, stored_model

    db.ensure_ready()
    eager.settle()
    for kind in kinds:
        registry.lookup(kind)  # an unknown kind is a typo to report, not an empty list
    with db.session_scope() as session:
        found = reads.list_jobs(
            session,
            statuses=tuple(statuses),
            job_kinds=tuple(kinds),
            sweep=sweep,
            tags=tuple(tags),
            model=stored_model(model) if model else None,
            dataset=stored_dataset(dataset) if dataset else None,
            limit=limit,
            before=before,
            user=user,
        )
        summaries = [rows.job_summary(job) for job in found]
    return fleet.annotate(summaries)


def cancel(
    jobs: int | Iterable[int] | Submission, *, sweep: str | None = None
) -> list[lifecycle.Cancellation]:
    """Cancel jobs, and every job of ``sweep`` if given: a queued one never starts, a running
    one stops at its next step. ``stop_sweep`` first keeps the sweep from making more."""
    from ftqueue import notify
    from ftqueue.sweeps import trials

    ids = list(_ids(jobs))
    db.ensure_ready()
    with db.session_scope() as session:
        if sweep:
            found = reads.list_jobs(session, sweep=sweep, limit=None)
            # A sweep stopped before its first trial has nothing to cancel: no error.
            if not found and session.get(Sweep, sweep) is None:
                raise FtqueueError(f"no jobs in sweep {quote(sweep)}: `ftqueue list` shows them")
            ids += [job.id for job in found]
        ids = sorted(set(ids))
        for jid in ids:
            reads.get_job(session, jid)
    cancelled = lifecycle.cancel(ids)
    if sweep:
        trials.end_if_finished(sweep)  # with no trial running, the sweep ends here
    notify.flush()
    return cancelled


# The commands' own functions, one module per concern; all of them are ``api.<name>``.
from ftqueue.api import fleet  # noqa: E402
from ftqueue.api.adapters import (  # noqa: E402
    Export,
    Fetched,
    adapter_model,
    adapters,
    export,
    fetch,
    file_sha256,
    predict,
)
from ftqueue.api.admin import (  # noqa: E402
    check_workers,
    db_current,
    db_downgrade,
    db_downgrade_loss,
    db_upgrade,
    db_url,
    plan_workers,
    run_workers,
)
from ftqueue.api.attempts import LogPage, logs_of, traceback_of  # noqa: E402
from ftqueue.api.fleet import idle_queues, live_consumers, top, workers  # noqa: E402
from ftqueue.api.following import Ending, completions, describe, end_eager, endings  # noqa: E402
from ftqueue.api.reporting import Reported, report, sweep_report  # noqa: E402
from ftqueue.api.sweeping import (  # noqa: E402
    extend_sweep,
    resume_sweep,
    start_sweep,
    stop_sweep,
    sweep_finished,
    sweep_jobs,
    sweep_state,
    sweep_trials_to_run,
)
