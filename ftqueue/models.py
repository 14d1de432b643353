"""The results schema as ORM classes; Alembic revisions in migrations/ create and change it."""

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
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ftqueue.specs import config_hash
from ftqueue.states import STATUSES, JobStatus

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
        Index("ix_jobs_sweep_id", "sweep_id"),
        Index("ix_jobs_config_hash", "config_hash"),
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
    name: Mapped[str | None] = mapped_column(String(128))

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
