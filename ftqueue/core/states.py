"""Where a job is in its life, and how one attempt at it ended, as string enums.

The values are what the database stores and what `--json` prints; a member compares equal to
its value, so rows read back as plain strings still match.
"""

from __future__ import annotations

import re
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
    #: Not claimed: its submitter runs FTQUEUE_MAX_RUNNING_PER_USER jobs already; the
    #: message goes back to its queue for later, and no attempt is counted.
    DEFERRED = "deferred"


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


class Priority(StrEnum):
    """How soon a queued job is taken, before the jobs of lower priority on its queues."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def level(self) -> int:
        """Its Celery priority on Redis, where 0 is taken first (kombu's steps 0, 3, 6, 9)."""
        return PRIORITY_LEVELS[self]

    @classmethod
    def of_level(cls, level: int | None) -> Priority:
        """The priority stored as ``level`` (None, from before priorities: normal)."""
        for priority, value in PRIORITY_LEVELS.items():
            if value == level:
                return priority
        return cls.NORMAL


PRIORITY_LEVELS = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}
#: kombu's Redis priority steps: one list per step, a queue's own name for step 0, which is
#: taken first. Jobs use 0 (high), 3 (normal) and 6 (low): PRIORITY_LEVELS.
PRIORITY_STEPS = (0, 3, 6, 9)

#: A GPU class name: what `ftqueue worker --class` and `submit --gpu-class` take. It becomes
#: part of queue names (``lora.a100``), so it is short, lower case and plain.
GPU_CLASS_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def gpu_class_from_name(gpu_name: str | None) -> str:
    """The class a GPU's name suggests: "NVIDIA H200" -> ``h200``; no GPU -> ``cpu``.

    The first word with a digit in it after the vendor's name (A100-SXM4-80GB: a100; H100,
    L4, T4, RTX 4090: 4090), or the last word when none has one; lower case, anything
    unusual dropped.
    """
    if not gpu_name:
        return "cpu"
    words = [w for w in re.split(r"[\s/_-]+", gpu_name.lower()) if w]
    words = [w for w in words if w not in ("nvidia", "geforce", "tesla", "quadro", "amd")]
    if not words:
        return "gpu"
    chosen = next((w for w in words if any(c.isdigit() for c in w)), words[-1])
    cleaned = re.sub(r"[^a-z0-9_-]", "", chosen)[:32].strip("-_")
    return cleaned if GPU_CLASS_PATTERN.fullmatch(cleaned or "") else "gpu"
