"""Submitting jobs: validate everything, write the rows, commit, then publish their ids."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from ftqueue import kinds
from ftqueue.artifacts.paths import check_output_dir
from ftqueue.core.states import JobStatus
from ftqueue.core.text import quote
from ftqueue.errors import PublishError, SpecError
from ftqueue.inputs import hub, pinning
from ftqueue.kinds import synthetic
from ftqueue.queue import eager
from ftqueue.settings import get_settings
from ftqueue.specs import MODEL_ALIASES, DataSpec, JobSpec, is_local_model
from ftqueue.store import insert, reads
from ftqueue.store.schema import Job
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
    """A submitted spec identical to an earlier job, which is reported instead of re-run."""

    spec: JobSpec
    job_id: int
    status: str


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
        self.notes: list[str] = []

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
                    check_dataset(pinned)
                self._note(note)
                self.data[data_key] = pinned
            # Specs that differ only in a name for people share the checks, not the name.
            pinned_data = dataclasses.replace(
                self.data[data_key], dataset_name=labelled.dataset_name
            )
        spec = pinning.pin(spec, model=self.models[key], data_spec=pinned_data)
        _check_stored_lengths(spec)
        check = kinds.lookup(spec.kind).check
        if check is not None:
            check(spec)
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


def validate(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """Check specs before anything is written; returns them pinned (see ``Checker``)."""
    checker = Checker()
    return [checker(spec) for spec in specs]


def submit(
    specs: Iterable[JobSpec],
    *,
    tags: Sequence[str] = (),
    name: str | None = None,
    sweep: str | None = None,
    force: bool = False,
    output_dir: str | None = None,
) -> Submission:
    """Queue one job per spec (identical specs already done or pending are not run again).

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
    checker = Checker()
    unique: dict[str, JobSpec] = {}
    count = 0
    for spec in specs:
        count += 1
        if count > settings.max_grid:
            raise SpecError(
                f"more than {settings.max_grid:,} jobs in one submit: submit fewer, or raise "
                "FTQUEUE_MAX_GRID"
            )
        pinned = checker(spec)
        unique.setdefault(pinned.spec_hash(), pinned)
    enqueue.ready()

    sweep_id = sweep or (uuid.uuid4().hex[:8] if count > 1 else None)
    submission = Submission(sweep_id=sweep_id, notes=checker.notes)
    # A job whose eager process died would otherwise stand in for this spec forever.
    eager.settle()

    def new_jobs(session: Session) -> list[insert.NewJob]:
        earlier = {} if force else reads.find_same_spec(session, unique)
        new = []
        for spec_hash, spec in unique.items():
            if spec_hash in earlier:
                job = earlier[spec_hash]
                submission.duplicates.append(Duplicate(spec, job.id, job.status))
                continue
            new.append(
                insert.NewJob(
                    kind=spec.kind,
                    spec=spec.to_dict(),
                    spec_hash=spec_hash,
                    model=spec.model,
                    dataset=spec.source(),
                    tags=tags,
                    name=name,
                    sweep_id=submission.sweep_id,
                    output_dir=output_dir if kinds.lookup(spec.kind).publishes else None,
                )
            )
        return new

    try:
        submission.created = enqueue.jobs(new_jobs)
    except PublishError as exc:
        raise _unsent(exc, len(unique) - len(submission.duplicates)) from None
    return submission


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


def _grace_text() -> str:
    from ftqueue.queue.broker import lost_message_grace

    return f"{lost_message_grace():.0f}s"
