"""The results schema as ORM classes; the Alembic revisions in ftqueue/migrations change it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from ftqueue.core.states import STATUSES, JobStatus
from ftqueue.specs import config_hash

# Stable constraint names keep migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _config_hash_default(context: Any) -> str:
    return config_hash(context.get_current_parameters()["spec"])


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC on every backend (SQLite drops the zone; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON}


class Job(Base):
    """One job of any kind: its spec, where it is in its life, and what it cost.

    ``kind`` is checked against the registry of kinds (ftqueue.kinds) when a job is created,
    not by the schema, so that adding a kind needs no migration.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_model_dataset_kind", "model", "dataset", "kind"),
        Index("ix_jobs_spec_hash_status", "spec_hash", "status"),
        # `list` pages newest first within a status or a sweep: (filter, id) serves both
        # the filter and the order, instead of a walk back through every later job.
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_sweep_id_id", "sweep_id", "id"),
        Index("ix_jobs_config_hash", "config_hash"),
        # The per-user cap counts a user's running jobs inside every claim.
        Index("ix_jobs_submitted_by_status", "submitted_by", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(
        String(16), default=JobStatus.QUEUED.value, server_default=JobStatus.QUEUED.value
    )
    #: ``jsonb`` on PostgreSQL (revision 0005b), so ad-hoc SQL can index and compare it.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    spec_hash: Mapped[str] = mapped_column(String(64))
    #: Groups repeats (seeds) of one configuration in reports without parsing JSON in SQL.
    config_hash: Mapped[str] = mapped_column(String(64), default=_config_hash_default)
    model: Mapped[str] = mapped_column(String(512))
    dataset: Mapped[str] = mapped_column(String(1024))
    sweep_id: Mapped[str | None] = mapped_column(String(64))
    #: The trial's number in its sweep (the Optuna trial's number for ``optuna`` and ``sobol``).
    trial: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(128))
    #: The GPU class the job must run on (``a100``: only workers of that class take it);
    #: None: any worker (revision 0022).
    gpu_class: Mapped[str | None] = mapped_column(String(32))
    #: Celery's priority on Redis: 0 (high) is taken first, 3 normal, 6 low (core/states.py).
    priority: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    #: Who submitted it (FTQUEUE_USER, by default the login name); None before revision 0022.
    submitted_by: Mapped[str | None] = mapped_column(String(64))

    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    worker: Mapped[str | None] = mapped_column(String(255))
    task_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())

    progress_phase: Mapped[str | None] = mapped_column(String(16))
    progress_epoch: Mapped[int | None] = mapped_column(Integer)
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    progress_loss: Mapped[float | None] = mapped_column(Float)
    #: Validation accuracy after the last finished epoch, and that epoch, for followers.
    progress_val_accuracy: Mapped[float | None] = mapped_column(Float)
    progress_val_epoch: Mapped[int | None] = mapped_column(Integer)

    error_type: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    #: The job's published directory (an adapter, predictions), once it succeeded.
    output_path: Mapped[str | None] = mapped_column(Text)
    #: Where under the artifacts directory the job's files are published (as <dir>/job-<id>).
    output_dir: Mapped[str | None] = mapped_column(String(512))

    # What the run cost, as columns so reports can sort and average them in SQL.
    train_seconds: Mapped[float | None] = mapped_column(Float)
    samples_per_second: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    trainable_params: Mapped[int | None] = mapped_column(Integer)
    total_params: Mapped[int | None] = mapped_column(Integer)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The hyper-parameters the job trained with: its spec's, with those it left to the
    #: device filled in (revision 0010). None for jobs that train nothing or have not ended.
    trained_with: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    #: The epoch whose adapter was kept and whose test accuracy is reported (best or last).
    selected_epoch: Mapped[int | None] = mapped_column(Integer)

    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    #: When the job last entered the queue (submitted or re-queued): lost-message detection.
    queued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    lease_expires_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    tags: Mapped[list[JobTag]] = relationship(
        back_populates="job", cascade="all, delete-orphan", lazy="selectin", order_by="JobTag.tag"
    )
    results: Mapped[list[Result]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="(Result.split, Result.epoch)"
    )
    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobEvent.id"
    )

    @property
    def tag_names(self) -> list[str]:
        return [t.tag for t in self.tags]

    @property
    def trainable_share(self) -> float | None:
        if not self.trainable_params or not self.total_params:
            return None
        return self.trainable_params / self.total_params


def held_by_attempt(job_id: int, attempt: int) -> ColumnElement[bool]:
    """The fence: an attempt holds its job while the row runs under its attempt number."""
    return and_(Job.id == job_id, Job.attempts == attempt, Job.status == JobStatus.RUNNING)


class JobTag(Base):
    """A free-form label on a job, for filtering lists and reports."""

    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_tag", "tag"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)

    job: Mapped[Job] = relationship(back_populates="tags")


class Result(Base):
    """One measurement: a job's accuracy, macro-F1 and loss on one split after one epoch."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("job_id", "split", "epoch"),
        Index("ix_results_split_job_id", "split", "job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Float)
    macro_f1: Mapped[float] = mapped_column(Float)
    n_examples: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())

    job: Mapped[Job] = relationship(back_populates="results")


class JobEvent(Base):
    """A change in a job's life (queued, claimed, retried, finished ...), for `ftqueue show`."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class Sweep(Base):
    """A search over a space of specs: how trials are drawn, how many, and when to stop one.

    Trials are created ``max_parallel`` at a time, by the submitting command and then by
    whichever worker ends a trial; ``created`` is the next trial's number, taken under the
    row's lock so two workers never make the same trial.
    """

    __tablename__ = "sweeps"
    __table_args__ = (
        CheckConstraint(_in("status", ("active", "cancelled", "broken")), name="status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    #: The checked sweep file, with the base spec every trial starts from (pinned at submit).
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    max_jobs: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int] = mapped_column(Integer)
    created: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: ASHA: keep the top 1/eta at each rung (None: no early stopping).
    eta: Mapped[int | None] = mapped_column(Integer)
    rungs: Mapped[list[float] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    #: When its last trial ended with none left to make (or it was cancelled): set once, by a
    #: conditional UPDATE, so exactly one process sees the sweep end and notifies.
    ended_at: Mapped[dt.datetime | None]
    #: Why a ``broken`` sweep makes no more trials (the reaper could not fill it).
    problem: Mapped[str | None] = mapped_column(Text)
    #: The eager process running the sweep (FTQUEUE_EAGER=1) and its lease, renewed while it
    #: lives; a lapsed lease means the process died and the sweep waits for ``--resume``.
    holder: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[dt.datetime | None]


class RungDecision(Base):
    """One trial at one rung of its sweep: its validation value there and the verdict.

    The arrival is written once per (trial, rung) under the sweep row's lock; the verdict
    (``keep``, ``rank``, ``out_of``, ``decided_at``) once, when ``eta`` trials have arrived
    (ftqueue/sweeps/asha.py). A later attempt of the same job reads them instead.
    """

    __tablename__ = "sweep_rungs"
    __table_args__ = (Index("ix_sweep_rungs_sweep_id_rung", "sweep_id", "rung"),)

    sweep_id: Mapped[str] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    #: Where: epochs (fractions allowed) or optimizer steps, the sweep's ``rung_unit``.
    rung: Mapped[float] = mapped_column(Float, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    #: The sweep's validation metric at the rung.
    value: Mapped[float] = mapped_column(Float)
    #: 1 for the first trial to reach the rung, 2 for the second, ...
    arrival: Mapped[int] = mapped_column(Integer)
    #: None while the verdict waits for ``eta`` arrivals.
    keep: Mapped[bool | None] = mapped_column()
    #: The trial's rank among the ``out_of`` trials that had reached the rung when it was judged.
    rank: Mapped[int | None] = mapped_column(Integer)
    out_of: Mapped[int | None] = mapped_column(Integer)
    decided_at: Mapped[dt.datetime | None]


class Worker(Base):
    """One live (or lately live) Celery worker process, kept fresh by the process itself.

    A row whose ``last_seen_at`` is older than a few refresh intervals belongs to a worker
    that is gone; workers still alive delete such rows a while later (store/workers.py).
    """

    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_last_seen_at", "last_seen_at"),)

    #: The Celery node name (``gpu0@host``), unique among live workers (worker/nodes.py).
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: The `ftqueue worker` process that started this one (None: started by hand).
    supervisor_pid: Mapped[int | None] = mapped_column(Integer)
    #: What CUDA_VISIBLE_DEVICES gives the process: an index or a GPU UUID (None: CPU).
    gpu: Mapped[str | None] = mapped_column(String(64))
    gpu_name: Mapped[str | None] = mapped_column(String(128))
    gpu_memory_mb: Mapped[int | None] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    #: The GPU class whose queues it consumes besides the shared ones (``h200``, ``cpu``).
    gpu_class: Mapped[str | None] = mapped_column(String(32))
    ftqueue_version: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(32))
    transformers_version: Mapped[str | None] = mapped_column(String(32))
    #: The job it ran at its last refresh (the jobs table says so at once: jobs.worker).
    job_id: Mapped[int | None] = mapped_column(Integer)
    #: How often the process refreshes its row: a reader tells live from gone by it.
    refresh_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AttemptLog(Base):
    """A batch of one attempt's log lines, or its traceback, readable from every machine.

    Batches of an attempt are numbered from 1 in ``seq``; the oldest are deleted once the
    attempt's log passes its bound, so a gap at the start says lines were dropped. A failed
    attempt's traceback is the one ``traceback`` row (``seq`` 0).
    """

    __tablename__ = "attempt_logs"
    __table_args__ = (CheckConstraint(_in("stream", ("log", "traceback")), name="stream"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    stream: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    text: Mapped[str] = mapped_column(Text)


class Notification(Base):
    """An event to tell FTQUEUE_NOTIFY about: the outbox.

    Written in the transaction that makes the event happen (a job's terminal transition, a
    sweep's end), so a redelivery or a second worker cannot write it twice; sent after commit
    by the first process that claims it, so it is sent at most once.
    """

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_claimed_at", "claimed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    sweep_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("sweeps.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    #: When a process took it to send (None: not yet); taken once, by a conditional UPDATE.
    claimed_at: Mapped[dt.datetime | None]
    #: Why sending failed, secrets redacted (None: sent, or not yet tried).
    error: Mapped[str | None] = mapped_column(Text)


class ReportSummary(Base):
    """Sums of the kept epoch's results of succeeded jobs, per model, dataset, kind, config and
    split: what the default report reads instead of every result (``ftqueue.store.summary``).

    ``adapter`` marks jobs whose spec names an adapter (``adapter_job``), whose ``config`` is
    the adapter's. Counts, sums and sums of squares of accuracy and loss; their lowest and
    highest; train seconds and trainable shares summed over the jobs that have one.
    """

    __tablename__ = "report_summary"

    model: Mapped[str] = mapped_column(String(512), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(1024), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    adapter: Mapped[bool] = mapped_column(primary_key=True)
    config: Mapped[str] = mapped_column(String(64), primary_key=True)
    split: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    acc_sum: Mapped[float] = mapped_column(Float)
    acc_squares: Mapped[float] = mapped_column(Float)
    acc_min: Mapped[float] = mapped_column(Float)
    acc_max: Mapped[float] = mapped_column(Float)
    loss_sum: Mapped[float] = mapped_column(Float)
    loss_squares: Mapped[float] = mapped_column(Float)
    loss_min: Mapped[float] = mapped_column(Float)
    loss_max: Mapped[float] = mapped_column(Float)
    seconds_sum: Mapped[float] = mapped_column(Float)
    seconds_n: Mapped[int] = mapped_column(Integer)
    share_sum: Mapped[float] = mapped_column(Float)
    share_n: Mapped[int] = mapped_column(Integer)
    first_job: Mapped[int] = mapped_column(Integer)
    examples_min: Mapped[int | None] = mapped_column(Integer)
