"""Sweeps: start one from its file, see its trials, stop it, extend it, resume it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftqueue.store.schema import Job
    from ftqueue.sweeps.continuing import Continued
    from ftqueue.sweeps.trials import StartedSweep


def start_sweep(*, file: Path, strict: bool = False) -> StartedSweep:
    """Check a sweep file and its inputs, write the sweep, queue its first trials.

    ``strict``: refused (NoClassWorker), before anything is written, when the file names a
    ``gpu_class`` that no live worker serves."""
    from ftqueue.sweeps import sweepfile, trials

    return trials.start_sweep(sweepfile.load(file), strict=strict)


def sweep_jobs(*, sweep_id: str) -> dict[int, str]:
    """The status of every trial the sweep has made so far, by job id."""
    from ftqueue.sweeps import trials

    return trials.job_statuses(sweep_id)


def sweep_finished(*, sweep_id: str) -> bool:
    """Whether the sweep has no trial pending and none still to make."""
    from ftqueue.sweeps import trials

    return trials.finished(sweep_id)


def sweep_trials_to_run(*, sweep_id: str) -> list[Job]:
    """The sweep's queued trials this eager process is to run, oldest first ([]: none left)."""
    from ftqueue.sweeps import trials

    return trials.held_queued(sweep_id)


def stop_sweep(*, sweep_id: str) -> bool:
    """Make no more trials for the sweep; False when no sweep has this id."""
    from ftqueue import notify
    from ftqueue.sweeps import trials

    stopped = trials.stop(sweep_id)
    notify.flush()  # a sweep with no trial running ended just now
    return stopped


def extend_sweep(*, sweep_id: str, trials: int) -> Continued:
    """Add ``trials`` trials to a sweep, from its method and space (the same Optuna study)."""
    from ftqueue.sweeps import continuing

    return continuing.extend(sweep_id, trials)


def resume_sweep(*, sweep_id: str) -> Continued:
    """Continue a cancelled, broken or interrupted sweep: what did not run is queued again."""
    from ftqueue.sweeps import continuing

    return continuing.resume(sweep_id)


def sweep_state(*, sweep_id: str) -> str:
    """running, done, cancelled, broken (with why) or interrupted; SpecError for no sweep."""
    from ftqueue.store import db
    from ftqueue.store.schema import Job
    from ftqueue.sweeps import continuing

    sweep = continuing.known(sweep_id, "--follow")
    with db.session_scope() as session:
        from sqlalchemy import select

        pending = session.scalar(
            select(Job.id).where(Job.sweep_id == sweep_id, Job.status.in_(("queued", "running")))
        )
    state = continuing.state(sweep, pending is not None)
    return f"{state}: {sweep.problem}" if sweep.problem else state
