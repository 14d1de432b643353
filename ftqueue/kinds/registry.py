"""The registry of job kinds: the one place that knows which kinds exist and what each needs.

A kind declares itself once, in its own module under ``kinds/``: its name, its spec class,
the function that performs it, its role in reports, whether it publishes a directory (and so
needs a staging directory), its queue, and the checks `submit` runs before queueing it. The
queue, the Celery tasks, `submit`, `list` and `report` ask this registry instead of naming
kinds. Torch-free: a kind's ``perform`` imports the training stack only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from ftqueue.core.objective import RungPoints
from ftqueue.core.outcome import Measurement, Outcome, ProgressCallback
from ftqueue.errors import SpecError
from ftqueue.specs import JobSpec

S = TypeVar("S", bound=JobSpec)

#: The spec field through which an evaluation or prediction names the run whose adapter it uses.
ADAPTER_FIELD = "adapter_job"


class Role(StrEnum):
    """What a kind's jobs are in `ftqueue report`."""

    #: Trains a configuration and publishes its adapter: a LoRA run.
    RUN = "run"
    #: Measures a model: the base line when its spec names no adapter (``adapter_job`` is
    #: None), an evaluation of a run's adapter otherwise.
    EVALUATION = "evaluation"
    #: Not part of the comparison (predictions).
    OTHER = "other"


@dataclass(frozen=True)
class JobContext:
    """What the queue hands a kind's ``perform``: where to write, and how to report."""

    job_id: int
    attempt: int
    #: A private, empty directory for what the job publishes (None for kinds that publish
    #: nothing); renamed into place only when the attempt's result is recorded.
    staging: Path | None
    cache_dir: Path
    on_progress: ProgressCallback
    #: Called after each validation but the last epoch's, with the rung's position (None at
    #: an epoch end that is no rung) and the measurement; False means the job's sweep pruned
    #: it there: stop, keep what was measured, publish what was trained.
    keep_going: Callable[[float | None, Measurement], bool] = lambda position, measured: True
    #: Where the job's sweep judges it (None: nowhere): the trainer validates there.
    rungs: RungPoints | None = None


@dataclass(frozen=True)
class JobKind(Generic[S]):
    """One kind of job, as every part of ftqueue sees it."""

    name: str
    spec_type: type[S]
    perform: Callable[[S, JobContext], Outcome]
    role: Role
    #: The directory under FTQUEUE_ARTIFACTS_DIR its jobs publish into (as <dir>/job-<id>),
    #: or None for kinds that publish nothing.
    artifacts: str | None = None
    #: What `ftqueue show` calls the published directory (an adapter, predictions).
    output_label: str = "output"
    #: The files inside the published directory that `ftqueue show` points at (none: the
    #: directory itself).
    output_files: tuple[str, ...] = ()
    #: Checks at submit time that need more than the spec: the database, files, the model.
    check: Callable[[S], None] | None = None
    #: The spec fields ``check`` reads, when it reads no others: specs of one submit that
    #: agree on them are checked once (a grid's 10,000 seeds, one model). None: every spec.
    check_reads: tuple[str, ...] | None = None
    #: The Celery queue; defaults to the kind's name.
    queue: str = ""

    def __post_init__(self) -> None:
        if not self.queue:
            object.__setattr__(self, "queue", self.name)
        if self.spec_type.kind != self.name:
            raise ValueError(f"{self.spec_type.__name__}.kind must be {self.name!r}")

    @property
    def task_name(self) -> str:
        """The explicit Celery task name, the same on every producer and worker."""
        return f"ftqueue.{self.name}"

    @property
    def publishes(self) -> bool:
        return self.artifacts is not None

    def spec(self, data: dict[str, Any]) -> S:
        """The job's spec from its stored JSON."""
        return self.spec_type.from_dict(data)


_KINDS: dict[str, JobKind[Any]] = {}


def register(kind: JobKind[S]) -> JobKind[S]:
    """Add a kind; its name must be new."""
    if kind.name in _KINDS:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def lookup(name: str) -> JobKind[Any]:
    """The kind called ``name``, or SpecError listing the known ones."""
    try:
        return _KINDS[name]
    except KeyError:
        raise SpecError(
            f"unknown job kind {name!r}: use one of {', '.join(_KINDS)}", param="--kind"
        ) from None


def get(name: str) -> JobKind[Any] | None:
    """The kind called ``name``, or None (rows may name a kind this version does not know)."""
    return _KINDS.get(name)


def names() -> tuple[str, ...]:
    return tuple(_KINDS)


def all_kinds() -> tuple[JobKind[Any], ...]:
    return tuple(_KINDS.values())


def queues() -> tuple[str, ...]:
    """Every kind's queue, once each, in registration order."""
    return tuple(dict.fromkeys(kind.queue for kind in _KINDS.values()))


def with_role(role: Role) -> tuple[str, ...]:
    """Names of the kinds with this role in reports."""
    return tuple(kind.name for kind in _KINDS.values() if kind.role == role)


def unregister(name: str) -> None:
    """Remove a kind (for tests that register one of their own)."""
    _KINDS.pop(name, None)
