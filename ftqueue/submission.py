"""Submitting jobs: validate everything, write the rows, commit, then publish their ids."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from ftqueue import db, kinds, lifecycle, store, synthetic
from ftqueue.errors import PublishError, SpecError
from ftqueue.models import Job
from ftqueue.paths import check_output_dir
from ftqueue.settings import get_settings
from ftqueue.specs import JobSpec
from ftqueue.states import JobStatus

#: Tags, names and sweep ids end up in file names, URLs and shell commands.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+=@-]{0,63}$")


def check_label(value: str, flag: str) -> str:
    """A tag, name or sweep id: 1-64 of letters, digits and ``_.:+=@-``, no path parts."""
    if not _LABEL.match(value) or ".." in value:
        raise SpecError(
            f"{flag} {value!r} is not allowed: use 1-64 letters, digits and _ . : + = @ - "
            "(no slashes, '..', spaces or control characters), starting with a letter or digit",
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

    @property
    def to_follow(self) -> list[int]:
        """Jobs whose end is still to come: the new ones and identical ones still running."""
        ids = [job.id for job in self.created]
        ids += [d.job_id for d in self.duplicates if JobStatus(d.status).pending]
        return sorted(set(ids))


def validate(specs: Sequence[JobSpec]) -> None:
    """Check models, labelled data and each kind's own needs before anything is written.

    Each distinct model and labelled dataset is checked once, however many specs share it; a
    kind whose input is something else checks it in its ``check``.
    """
    from ftqueue import data
    from ftqueue.specs import validate_against_model

    seen_models: set[tuple[str, int]] = set()
    seen_data: set[str] = set()
    for spec in specs:
        if synthetic.is_synthetic(spec.model):
            synthetic.parse(spec.model)
        elif (spec.model, spec.max_length) not in seen_models:
            validate_against_model(spec)
            seen_models.add((spec.model, spec.max_length))
        labelled = spec.labelled_data()
        if labelled is not None and labelled.canonical_json() not in seen_data:
            data.check_dataset(labelled)
            seen_data.add(labelled.canonical_json())
        check = kinds.get(spec.kind).check
        if check is not None:
            check(spec)


def submit(
    specs: Sequence[JobSpec],
    *,
    tags: Sequence[str] = (),
    name: str | None = None,
    sweep: str | None = None,
    force: bool = False,
    output_dir: str | None = None,
) -> Submission:
    """Queue one job per spec (identical specs already done or pending are not run again).

    Rows are committed before any message is published, so a worker never receives an id it
    cannot find; a publish that fails withdraws the rows it did not send.
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
    validate(specs)
    db.ensure_ready()
    if not settings.eager:
        from ftqueue import broker

        broker.check_broker()

    submission = Submission(sweep_id=sweep or (uuid.uuid4().hex[:8] if len(specs) > 1 else None))
    unique: dict[str, JobSpec] = {}
    for spec in specs:
        unique.setdefault(spec.spec_hash(), spec)
    with db.session_scope(write=True) as session:
        earlier = {} if force else store.find_same_spec(session, unique)
        new = []
        for spec_hash, spec in unique.items():
            if spec_hash in earlier:
                job = earlier[spec_hash]
                submission.duplicates.append(Duplicate(spec, job.id, job.status))
                continue
            new.append(
                lifecycle.NewJob(
                    kind=spec.kind,
                    spec=spec.to_dict(),
                    spec_hash=spec_hash,
                    model=spec.model,
                    dataset=spec.source(),
                    tags=tags,
                    name=name,
                    sweep_id=submission.sweep_id,
                    output_dir=output_dir if kinds.get(spec.kind).publishes else None,
                )
            )
        submission.created = lifecycle.create_jobs(session, new, max_attempts=settings.max_attempts)
    if submission.created and not settings.eager:
        _publish(submission.created)
    return submission


def _publish(jobs: list[Job]) -> None:
    from ftqueue import broker

    try:
        broker.publish(jobs)
    except PublishError as exc:
        lifecycle.delete_unpublished([job.id for job in jobs if job.id not in set(exc.sent)])
        raise


def run_eagerly(jobs: Sequence[Job]) -> None:
    """Run jobs in this process through the same Celery tasks a worker would (FTQUEUE_EAGER=1)."""
    from ftqueue.tasks import TASKS

    for job in jobs:
        TASKS[job.kind].apply_async((job.id,), task_id=job.task_id)
