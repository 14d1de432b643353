"""Where a job is in its life, and how one attempt at it ended, as string enums.

The values are what the database stores and what `--json` prints; a member compares equal to
its value, so rows read back as plain strings still match.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """``jobs.status``: queued -> running -> one of the terminal states.

    ``pruned`` is a sweep's early stop: the job kept its measurements and its adapter, and
    is neither a failure nor counted as one.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def pending(self) -> bool:
        """Not ended yet: its end is still to come."""
        return self in (JobStatus.QUEUED, JobStatus.RUNNING)


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED})
#: The status values, as plain strings (for CHECK constraints and --status choices).
STATUSES = tuple(s.value for s in JobStatus)


class AttemptEnd(StrEnum):
    """How one delivery of a job's message ended, as the worker saw it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Stopped early by its sweep's rung decision; recorded as ``pruned``.
    PRUNED = "pruned"
    #: The delivery found nothing to do (already done, running elsewhere, out of attempts).
    SKIPPED = "skipped"
    #: Another attempt took the job over; this one's result was discarded.
    SUPERSEDED = "superseded"


class Phase(StrEnum):
    """What a running attempt is doing, stored in ``jobs.progress_phase``."""

    STARTING = "starting"
    LOAD = "load"
    TOKENIZE = "tokenize"
    TRAIN = "train"
    EVALUATE = "evaluate"
    PREDICT = "predict"
    SAVE = "save"
    DONE = "done"


#: The phases a job's wall time is split into in its stats (``phase_seconds``).
TIMED_PHASES = (Phase.LOAD, Phase.TOKENIZE, Phase.TRAIN, Phase.EVALUATE, Phase.SAVE)


class Event(StrEnum):
    """Something a person may want to hear about (FTQUEUE_NOTIFY_ON), stored in
    ``notifications.event``."""

    #: A job failed for good: its error, or its worker died once per allowed attempt.
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    #: A job cancelled (queued, or stopped at a step); a pruned trial is not one.
    CANCELLED = "cancelled"
    #: A sweep made its last trial and every trial ended.
    SWEEP_DONE = "sweep-done"
    #: A sweep was cancelled and its last running trial stopped.
    SWEEP_CANCELLED = "sweep-cancelled"


#: Sent whenever FTQUEUE_NOTIFY is set; FTQUEUE_NOTIFY_ON adds the others.
DEFAULT_EVENTS = frozenset({Event.FAILED, Event.SWEEP_DONE})
