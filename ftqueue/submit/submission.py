"""Submitting jobs: validate everything, write the rows, commit, then publish their ids."""

from __future__ import annotations

import operator
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from ftqueue import kinds
from ftqueue.artifacts.paths import check_output_dir
from ftqueue.core import gcpause
from ftqueue.core.states import GPU_CLASS_PATTERN, JobStatus, Priority
from ftqueue.core.text import quote
from ftqueue.errors import NoClassWorker, PublishError, PublishInterrupted, SpecError
from ftqueue.inputs import hub, pinning
from ftqueue.kinds import synthetic
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.specs import (
    MODEL_ALIASES,
    NOT_CONFIG,
    DataSpec,
    JobSpec,
    canonical_json,
    config_hash,
    is_local_model,
)
from ftqueue.specs.base import varying_keys
from ftqueue.specs.texts import SpecTexts
from ftqueue.store import insert, reads
from ftqueue.store.schema import Job, Sweep
from ftqueue.submit import enqueue

#: Tags, names and sweep ids end up in file names, URLs and shell commands.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+=@-]{0,63}$")


def check_label(value: str, flag: str, *, width: int = 80) -> str:
    """A tag, name or sweep id: 1-64 of letters, digits and ``_.:+=@-``, no path parts.

    ``width`` bounds how much of a refused value the message quotes.
    """
    if not _LABEL.match(value) or ".." in value:
        raise SpecError(
            f"{flag} {quote(value, width)} is not allowed: use 1-64 letters, digits and "
            "_ . : + = @ - (no slashes, '..', spaces or control characters), starting with a "
            "letter or digit",
            param=flag,
        )
    return value


@dataclass
class Duplicate:
    """A submitted spec identical to an earlier job, or with the settings of a trial early
    stopping pruned, which is reported instead of re-run (``--force`` runs it)."""

    spec: JobSpec
    job_id: int
    status: str
    #: Why it is not run again beyond being identical (``pruned in sweep S at rung R``).
    detail: str | None = None


@dataclass
class Submission:
    created: list[Job] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    sweep_id: str | None = None
    #: What could not be checked (a hub id while the hub is unreachable), one line each.
    notes: list[str] = field(default_factory=list)

    @property
    def job_ids(self) -> list[int]:
        """The jobs this submission stands for: the new ones and the identical earlier ones."""
        return sorted({job.id for job in self.created} | {d.job_id for d in self.duplicates})

    @property
    def to_follow(self) -> list[int]:
        """Jobs whose end is still to come: the new ones and identical ones still running."""
        ids = [job.id for job in self.created]
        ids += [d.job_id for d in self.duplicates if JobStatus(d.status).pending]
        return sorted(set(ids))


class Checker:
    """Checks specs before anything is written, and pins what each one reads (see inputs).

    Each distinct model and labelled dataset is checked, fingerprinted and looked up on the
    hub once, however many specs of a grid share it; a kind whose input is something else
    (unlabelled text to predict) checks and pins it in its own ``check``.
    """

    def __init__(self) -> None:
        self.models: dict[tuple[str, int], tuple[str, str | None]] = {}
        self.data: dict[DataSpec, DataSpec] = {}
        self.named_data: dict[tuple[DataSpec, str | None], DataSpec] = {}
        self.notes: list[str] = []
        #: What the kinds' own checks passed, by the fields they read (JobKind.check_reads).
        self.checked: set[tuple[object, ...]] = set()
        #: The (model, dataset) names whose stored width was checked.
        self.stored: set[tuple[str, str]] = set()

    def __call__(self, spec: JobSpec) -> JobSpec:
        """The spec, checked and pinned; SpecError (or a sibling) saying what is wrong."""
        from ftqueue.inputs.labelled import check_dataset
        from ftqueue.specs import validate_against_model

        key = (spec.model, spec.max_length)
        if key not in self.models:
            if synthetic.is_synthetic(spec.model):
                synthetic.parse(spec.model)
            else:
                validate_against_model(spec)
                if spec.model not in MODEL_ALIASES and not is_local_model(spec.model):
                    self._note(hub.check(spec.model, "model"))
            self.models[key] = pinning.pin_model(spec.model)
        labelled = spec.labelled_data()
        pinned_data: DataSpec | None = None
        if labelled is not None:
            # Frozen with plain fields, so hashable: equal data specs share one check, and a
            # 10,000-job grid does not serialise its data spec 10,000 times to find that out.
            data_key = labelled
            if data_key not in self.data:
                pinned = pinning.pin_data(labelled)
                hub_id = pinning.hub_dataset(pinned)
                note = hub.check(hub_id, "dataset") if hub_id else None
                if note is None:
                    check_dataset(pinned, cache=get_settings().cache_dir / "dataset-checks")
                self._note(note)
                self.data[data_key] = pinned
            # Specs that differ only in a name for people share the checks, not the name.
            named = (data_key, labelled.dataset_name)
            if named not in self.named_data:
                self.named_data[named] = self.data[data_key].replace(
                    dataset_name=labelled.dataset_name
                )
            pinned_data = self.named_data[named]
        spec = pinning.pin(spec, model=self.models[key], data_spec=pinned_data)
        stored = (spec.model, spec.source())
        if stored not in self.stored:
            _check_stored_lengths(spec)
            self.stored.add(stored)
        kind = kinds.lookup(spec.kind)
        if kind.check is not None:
            if kind.check_reads is None:
                kind.check(spec)
            else:
                # What the check reads decides it: specs that agree there pass or fail alike.
                reads = (spec.kind, *(getattr(spec, name) for name in kind.check_reads))
                if reads not in self.checked:
                    kind.check(spec)
                    self.checked.add(reads)
        return spec

    def _note(self, note: str | None) -> None:
        if note is not None and note not in self.notes:
            self.notes.append(note)


def _check_stored_lengths(spec: JobSpec) -> None:
    """The job row keeps the model and dataset names in columns of a fixed width."""
    for value, column, flag in (
        (spec.model, Job.__table__.c.model, "--model"),
        (spec.source(), Job.__table__.c.dataset, "--dataset"),
    ):
        width = getattr(column.type, "length", None)
        if width is not None and len(value) > width:
            raise SpecError(
                f"{flag} {quote(value)} is {len(value):,} characters as an absolute path; "
                f"the results database keeps {width}: use a shorter path",
                param=flag,
            )


def check_gpu_class(value: str | None, flag: str) -> str | None:
    """A GPU class as given (None: any worker); SpecError naming ``flag`` when malformed."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not GPU_CLASS_PATTERN.fullmatch(value):
        raise SpecError(
            f"{flag} {quote(str(value), 40)} is no GPU class: use the class a worker was "
            "started with (`ftqueue workers` shows them), such as a100 or h200"
        )
    return value


def check_priority(value: Any, flag: str) -> Priority:
    """``high``, ``normal`` or ``low``; SpecError naming ``flag`` otherwise."""
    try:
        return Priority(value)
    except ValueError:
        raise SpecError(
            f"{flag} {quote(str(value), 40)} is no priority: use high, normal or low"
        ) from None


def require_class_worker(gpu_class: str, job_kinds: Iterable[str]) -> None:
    """NoClassWorker unless a live worker takes the class's queue of each of these kinds."""
    from ftqueue.store import workers

    queues = [f"{kinds.lookup(kind).queue}.{gpu_class}" for kind in sorted(job_kinds)]
    counts = workers.live_consumers(queues)
    idle = [q for q in queues if not counts.get(q)]
    if idle:
        raise NoClassWorker(
            f"no live worker of GPU class {gpu_class} takes {', '.join(idle)}: start one with "
            f"`ftqueue worker --class {gpu_class}`, or leave out --strict to queue the "
            "jobs for when one starts"
        )


def validate(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """Check specs before anything is written; returns them pinned (see ``Checker``)."""
    checker = Checker()
    return [checker(spec) for spec in specs]


@gcpause.paused()
def submit(
    specs: Iterable[JobSpec],
    *,
    tags: Sequence[str] = (),
    name: str | None = None,
    sweep: str | None = None,
    force: bool = False,
    output_dir: str | None = None,
    gpu_class: str | None = None,
    priority: str = "normal",
    strict: bool = False,
) -> Submission:
    """Queue one job per spec (identical specs already done or pending are not run again).

    ``gpu_class`` sends the jobs to that class's queues, which only workers of the class take
    (``strict``: refused, before anything is written, when no live worker serves it);
    ``priority`` (high, normal, low) puts them ahead of or behind the other queued jobs.

    ``specs`` is read once, each spec checked as it comes, and refused past FTQUEUE_MAX_GRID.
    Rows are committed (in one transaction) before any message is published, so a worker
    never receives an id it cannot find; the rows whose messages a failed publish did not
    send stay queued, for the reaper's lost-message scan to publish.
    """
    settings = get_settings()
    for tag in tags:
        check_label(tag, "--tag")
    if name is not None:
        check_label(name, "--name")
    if sweep is not None:
        check_label(sweep, "--sweep")
    if output_dir is not None:
        output_dir = check_output_dir(output_dir, settings.artifacts_dir)
    gpu_class = check_gpu_class(gpu_class, "--gpu-class")
    level = check_priority(priority, "--priority").level
    checker = Checker()
    # The distinct specs by hash, each with its dict, configuration hash and stored JSON made
    # once: a 10,000-job grid spent a second making them again for the row and the lookups.
    unique: dict[str, _Unique] = {}
    # Each spec's hash and stored JSON, spliced into a template of the grid's first spec.
    texts = SpecTexts()
    configs: dict[tuple[object, ...], str] = {}
    count = 0
    for spec in specs:
        count += 1
        if count > settings.max_grid:
            raise SpecError(
                f"more than {settings.max_grid:,} jobs in one submit: submit fewer, or raise "
                "FTQUEUE_MAX_GRID"
            )
        pinned = checker(spec)
        as_dict = pinned.to_dict()
        spec_hash, stored = texts(pinned, as_dict)
        if spec_hash not in unique:
            config = _config_hash(pinned, as_dict, configs)
            unique[spec_hash] = _Unique(pinned, as_dict, config, stored)
    enqueue.ready()
    if strict and gpu_class is not None and not settings.eager:
        require_class_worker(gpu_class, {made.spec.kind for made in unique.values()})

    sweep_id = sweep or (uuid.uuid4().hex[:8] if count > 1 else None)
    submission = Submission(sweep_id=sweep_id, notes=checker.notes)
    # A job whose eager process died would otherwise stand in for this spec forever.
    eager.settle()

    def new_jobs(session: Session) -> list[insert.NewJob]:
        earlier = {} if force else reads.find_same_spec(session, unique)
        configs_left = [made.config for h, made in unique.items() if h not in earlier]
        pruned = {} if force else reads.find_pruned(session, configs_left)
        new: list[insert.NewJob] = []
        # A grid's jobs are the trials of a new grid sweep, numbered in order (see below).
        grid = submission.sweep_id is not None and _new_sweep(session, submission.sweep_id)
        for spec_hash, (spec, as_dict, config, stored) in unique.items():
            if spec_hash in earlier:
                job = earlier[spec_hash]
                submission.duplicates.append(Duplicate(spec, job.id, job.status))
                continue
            if (was := pruned.get(config)) is not None:
                detail = f"pruned in sweep {was.sweep_id} at rung {was.rung}"
                submission.duplicates.append(Duplicate(spec, was.job_id, "pruned", detail))
                continue
            new.append(
                insert.NewJob(
                    kind=spec.kind,
                    spec=as_dict,
                    spec_text=stored,
                    spec_hash=spec_hash,
                    config_hash=config,
                    model=spec.model,
                    dataset=spec.source(),
                    tags=tags,
                    name=name,
                    sweep_id=submission.sweep_id,
                    output_dir=output_dir if kinds.lookup(spec.kind).publishes else None,
                    trial=len(new) if grid else None,
                    gpu_class=gpu_class,
                    priority=level,
                    submitted_by=settings.user,
                )
            )
        if grid and submission.sweep_id is not None and new:
            _add_grid_sweep(session, submission.sweep_id, new, tags)
        return new

    try:
        submission.created = enqueue.jobs(new_jobs)
    except PublishError as exc:
        raise _unsent(exc, len(unique) - len(submission.duplicates)) from None
    except PublishInterrupted as exc:
        raise _interrupted(exc) from None
    return submission


class _Unique(NamedTuple):
    """A distinct spec of a submit, with what its row needs, each made once."""

    spec: JobSpec
    as_dict: dict[str, Any]
    config: str
    stored: str


def _config_hash(
    spec: JobSpec, as_dict: dict[str, Any], made: dict[tuple[object, ...], str]
) -> str:
    """``config_hash(as_dict)``, made once for the specs of a grid that differ only in their
    seed or split. ``made`` is keyed by the spec's type and every other field: equal specs
    have equal dicts (their fields are normalised when set), so equal keys, equal hashes."""
    key = (type(spec), *_config_fields(spec)(spec.__dict__))
    try:
        return made[key]
    except KeyError:
        made[key] = found = config_hash(as_dict)
        return found
    except TypeError:  # a field that cannot be a key
        return config_hash(as_dict)


_CONFIG_FIELDS: dict[type, Callable[[dict[str, Any]], tuple[Any, ...]]] = {}


def _config_fields(spec: JobSpec) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Reads a spec's fields other than seed and split from its ``__dict__``, as a tuple, in
    one C call a spec."""
    getter = _CONFIG_FIELDS.get(type(spec))
    if getter is None:
        kept = [name for name in spec.__dict__ if name not in NOT_CONFIG]
        one = operator.itemgetter(*kept)
        getter = (lambda d: (one(d),)) if len(kept) == 1 else one
        _CONFIG_FIELDS[type(spec)] = getter
    return getter


def _new_sweep(session: Session, sweep_id: str) -> bool:
    """Whether no sweep row and no job has this sweep id yet: a grid then becomes a sweep.

    Jobs added to a sweep id that has a row already, or jobs from before sweep rows, are
    left as they are.
    """
    return session.get(Sweep, sweep_id) is None and not session.scalar(
        select(Job.id).where(Job.sweep_id == sweep_id).limit(1)
    )


def _add_grid_sweep(
    session: Session, sweep_id: str, new: list[insert.NewJob], tags: Sequence[str]
) -> None:
    """The row of the grid sweep whose trials a grid's jobs are, written with them, so that
    `report --sweep`, `--follow` and `--resume` work on it."""
    specs = [job.spec for job in new]
    keys = varying_keys(specs, skip=("kind",))
    space = []
    for key in keys:
        # Distinct values in first-seen order, told apart by their JSON (values may be lists
        # or dicts): a list scan per value was quadratic, half a second for 10,000 seeds.
        distinct: dict[Any, Any] = {}
        for spec in specs:
            value = spec.get(key)
            # Scalars by type and value (1 and 1.0 and True stay apart, as in JSON).
            seen = (type(value), value) if isinstance(value, str | int | float) else None
            distinct.setdefault(seen or canonical_json(value), value)
        values = list(distinct.values())
        space.append(
            {"name": key, "values": values, "low": None, "high": None, "log": False}
            | {"integer": False}
        )
    # The shape of ftqueue.sweeps.plan.SweepPlan.to_dict(), which reads it back.
    definition = {
        "kind": new[0].kind,
        "name": sweep_id,
        "base": {k: v for k, v in specs[0].items() if k not in keys and k != "kind"},
        "space": space,
        "method": "grid",
        "seed": 0,
        "max_jobs": len(new),
        "max_parallel": len(new),
        "eta": None,
        "rungs": [],
        "tags": list(tags),
        # Trials a resume or an extension adds go where, and as whose, these went.
        "gpu_class": new[0].gpu_class,
        "priority": Priority.of_level(new[0].priority).value,
        "user": new[0].submitted_by,
    }
    session.add(
        Sweep(
            id=sweep_id,
            kind=new[0].kind,
            method="grid",
            definition=definition,
            max_jobs=len(new),
            max_parallel=len(new),
            created=len(new),
            status="active",
        )
    )


def _unsent(exc: PublishError, created: int) -> PublishError:
    """The error of a failed publish, saying what becomes of the messages not sent."""
    left = created - len(exc.sent)
    # The rows stay: withdrawing them could race a worker that already received one of an
    # uncertain batch, and the reaper's lost-message scan exists for exactly this.
    return PublishError(
        f"{exc.message}; the other {left:,} stay queued and a worker's reaper publishes "
        f"them once Redis is back (after {_grace_text()}): do not submit them again",
        sent=exc.sent,
    )


def _interrupted(exc: PublishInterrupted) -> PublishInterrupted:
    """Ctrl-C while publishing: how many jobs are committed, how many were published, and
    that the rest need nothing from the user."""
    created, sent = len(exc.created), len(exc.sent)
    ids = f"{exc.created[0]}-{exc.created[-1]}" if created > 1 else str(exc.created[0])
    return PublishInterrupted(
        f"Interrupted: {created:,} jobs were committed (ids {ids}) and {sent:,} of their "
        f"messages published; the other {created - sent:,} stay queued and a worker's reaper "
        f"publishes them (after {_grace_text()}): do not submit them again",
        created=exc.created,
        sent=exc.sent,
    )


def _grace_text() -> str:
    from ftqueue.queue.broker import lost_message_grace

    return f"{lost_message_grace():.0f}s"
