"""Sweeps: start one from its file, see its trials, stop it making more."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftqueue.store.schema import Job
    from ftqueue.sweeps.trials import StartedSweep


def start_sweep(*, file: Path) -> StartedSweep:
    """Check a sweep file and its inputs, write the sweep, queue its first trials."""
    from ftqueue.sweeps import sweepfile, trials

    return trials.start_sweep(sweepfile.load(file))


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
