"""Each job as a run of an experiment tracker (MLflow), for people who keep their runs there.

Workers with ``FTQUEUE_MLFLOW_TRACKING_URI`` set open one MLflow run per attempt: the spec as
params, the validation accuracy at the end of each epoch, every recorded metric per split and
epoch (the epoch is MLflow's step) and the job's stats at the end, the job id, kind, sweep,
tags and output path as tags. mlflow is an optional extra (``pip install ftqueue[mlflow]``),
imported here only when a job runs with a tracking URI. The tracker is a by-stander: when it
is missing or unreachable the job runs and records as usual, and the worker logs one warning.

Its cost is bounded: each MLflow call waits at most MLFLOW_HTTP_REQUEST_TIMEOUT seconds (5
unless set) with no retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 0 unless set), and a circuit
breaker per tracking URI, shared by the jobs of a worker process, skips tracking for
BREAKER_COOLDOWN seconds after BREAKER_THRESHOLD jobs in a row could not reach it (said once),
then tries one job again. A local tracking URI that cannot be written is seen before mlflow is
imported. The MLFLOW_* variables are set only around each call, then restored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ftqueue.core.breaker import CircuitBreaker
from ftqueue.core.outcome import Outcome, Progress
from ftqueue.core.states import AttemptEnd
from ftqueue.settings import get_settings
from ftqueue.store import db, reads

log = logging.getLogger(__name__)

#: MLflow's longest param value; longer ones (paths, module lists) are cut.
MAX_PARAM_LENGTH = 6000
#: MLflow's most params, and metrics, in one log_batch call.
PARAMS_PER_CALL = 100
METRICS_PER_CALL = 1000

#: Each MLflow call's bounds, unless the environment sets them: MLflow's own defaults (120 s,
#: 7 retries with back-off) let a server that accepts and never answers hold a job for minutes.
CALL_ENV = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    # MLflow prints a link on stdout when a run ends: stdout belongs to the command (--json).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
#: Jobs in a row whose tracking failed before a worker process stops trying for a while.
BREAKER_THRESHOLD = 2
#: Seconds tracking is skipped once the breaker opens; then one job tries again.
BREAKER_COOLDOWN = 300.0

_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()
_ENV_LOCK = threading.RLock()


def breaker(uri: str) -> CircuitBreaker:
    """The process's breaker for this tracking URI."""
    with _BREAKERS_LOCK:
        if uri not in _BREAKERS:
            _BREAKERS[uri] = CircuitBreaker(threshold=BREAKER_THRESHOLD, cooldown=BREAKER_COOLDOWN)
        return _BREAKERS[uri]


def forget_breakers() -> None:
    """Start every tracking URI afresh (a test, or a worker told the tracker is back)."""
    with _BREAKERS_LOCK:
        _BREAKERS.clear()


@contextlib.contextmanager
def bounded_calls() -> Iterator[None]:
    """CALL_ENV set where the environment leaves it unset, for the calls in the block only."""
    with _ENV_LOCK:
        added = [name for name in CALL_ENV if name not in os.environ]
        for name in added:
            os.environ[name] = CALL_ENV[name]
        try:
            yield
        finally:
            for name in added:
                os.environ.pop(name, None)


def local_store_problem(uri: str) -> str | None:
    """Why MLflow could not write a local tracking store (a SQLite file, a directory), or
    None: seen in microseconds, where MLflow would retry for a minute and log its migrations."""
    parts = urlsplit(uri)
    if uri == "databricks":
        return None
    if parts.scheme == "sqlite":
        name = unquote(parts.path)[1:] if parts.path.startswith("/") else unquote(parts.path)
        if not name or name == ":memory:":
            return None
        path = Path(name).absolute()
        target, want = (path, os.W_OK) if path.exists() else (path.parent, os.W_OK | os.X_OK)
    elif parts.scheme in ("", "file"):
        path = Path(unquote(parts.path) if parts.scheme else uri).absolute()
        target, want = path, os.W_OK | os.X_OK
        while not target.exists() and target != target.parent:
            target = target.parent
    else:
        return None
    if path.exists() and parts.scheme == "sqlite" and not path.is_file():
        return f"{path} is not a file"
    if not target.exists():
        return f"{target} does not exist"
    if target != path and not target.is_dir():
        return f"{target} is not a directory"
    # access(2) also says no on a read-only filesystem, even to root.
    if not os.access(target, want):
        return f"{target} is not writable by this user"
    return None


#: How an attempt's end reads in MLflow.
RUN_STATUS = {
    AttemptEnd.SUCCEEDED: "FINISHED",
    AttemptEnd.PRUNED: "FINISHED",  # stopped early by its sweep, as planned
    AttemptEnd.FAILED: "FAILED",
    AttemptEnd.CANCELLED: "KILLED",
    AttemptEnd.SUPERSEDED: "KILLED",
}


def flatten(spec: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``data.dataset``-style keys and string values of a nested spec (None left out)."""
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, ",".join(map(str, value))
        elif value is not None:
            yield name, str(value)[:MAX_PARAM_LENGTH]


def _numeric(stats: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    for key, value in stats.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield key, float(value)


class MlflowRun:
    """One attempt of a job as one MLflow run; every call swallows and logs tracker errors."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        job_id: int,
        params: frozenset[str] = frozenset(),
        uri: str = "",
    ) -> None:
        self.client = client
        self.uri = uri
        self.run_id = run_id
        self.job_id = job_id
        #: The params logged at the start (MLflow keeps a param's first value for good).
        self.params = params
        self._live: set[tuple[str, int]] = set()
        self._broken = False

    def _try(self, what: str, action: Any) -> None:
        if self._broken:
            return
        try:
            with bounded_calls():
                action()
        except Exception as exc:
            # One warning per job: a tracker that went away should not flood the worker log.
            self._broken = True
            log.warning("job %s: MLflow %s failed, not logging to it any more: %s",
                        self.job_id, what, _one_line(exc))  # fmt: skip
            if self.uri and breaker(self.uri).failure():
                _say_paused(self.job_id, self.uri)

    def epoch(self, progress: Progress) -> None:
        """An epoch ended: its validation accuracy and the latest training loss, live."""
        if progress.val_accuracy is None or progress.val_epoch is None:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), progress.val_epoch
        metrics = [Metric("validation_accuracy", progress.val_accuracy, now, step)]
        if progress.loss is not None:
            metrics.append(Metric("train_loss", progress.loss, now, step))
        self._live.add(("validation_accuracy", step))
        self._try("logging", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def finish(
        self,
        ended: AttemptEnd,
        outcome: Outcome | None = None,
        *,
        output_path: str | None = None,
        error: str | None = None,
    ) -> None:
        """The recorded metrics and stats, where the output went, and how the attempt ended."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        # Values the spec left to the device (lr, batch size, ...), as the job chose them.
        recipe = (outcome.stats.get("recipe") if outcome is not None else None) or {}
        chosen = [Param(k, v) for k, v in flatten(recipe) if k not in self.params]
        if chosen:
            self._try("logging", lambda: self.client.log_batch(self.run_id, params=chosen))
        metrics: list[Any] = []
        tags = [RunTag("ftqueue.outcome", str(ended))]
        if outcome is not None:
            for m in outcome.measurements:
                for name in ("accuracy", "loss", "macro_f1"):
                    key = f"{m.split}_{name}"
                    if (key, m.epoch) not in self._live:
                        metrics.append(Metric(key, float(getattr(m, name)), now, m.epoch))
            metrics += [Metric(k, v, now, 0) for k, v in _numeric(outcome.stats)]
        if output_path:
            tags.append(RunTag("ftqueue.output_path", output_path))
        if error:
            tags.append(RunTag("ftqueue.error", error[:MAX_PARAM_LENGTH]))
        for i in range(0, max(len(metrics), 1), METRICS_PER_CALL):
            chunk, with_tags = metrics[i : i + METRICS_PER_CALL], tags if i == 0 else []
            self._try(
                "logging",
                lambda c=chunk, t=with_tags: self.client.log_batch(self.run_id, metrics=c, tags=t),
            )
        status = RUN_STATUS.get(ended, "KILLED")
        self._try("ending the run", lambda: self.client.set_terminated(self.run_id, status))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _say_paused(job_id: int, uri: str) -> None:
    log.warning(
        "job %s: MLflow at %s failed %d jobs in a row: this worker process logs no jobs to it "
        "for %d s, then tries again", job_id, uri, BREAKER_THRESHOLD, BREAKER_COOLDOWN,
    )  # fmt: skip


def start(job_id: int, *, attempt: int, worker: str, spec: Mapping[str, Any]) -> MlflowRun | None:
    """Open this attempt's MLflow run, or None when no tracking URI is set (or it failed, or
    the tracker's breaker is open)."""
    settings = get_settings()
    uri = settings.mlflow_tracking_uri
    if not uri:
        return None
    guard = breaker(uri)
    if not guard.allow():
        log.debug("job %s: not logged to MLflow at %s: paused after failures", job_id, uri)
        return None
    problem = local_store_problem(uri)
    if problem is not None:
        if guard.trip():
            log.warning(
                "job %s: not logged to MLflow: FTQUEUE_MLFLOW_TRACKING_URI %s cannot be written "
                "(%s); this worker process tries again in %d s", job_id, uri, problem,
                BREAKER_COOLDOWN,
            )  # fmt: skip
        return None
    try:
        with bounded_calls():
            run = _start(uri, settings.mlflow_experiment, job_id,
                         attempt=attempt, worker=worker, spec=spec)  # fmt: skip
    except ImportError:
        guard.trip()
        log.warning(
            "job %s: FTQUEUE_MLFLOW_TRACKING_URI is set but mlflow is not installed: "
            "pip install 'ftqueue[mlflow]' on the workers", job_id,
        )  # fmt: skip
        return None
    except Exception as exc:
        _EXPERIMENTS.clear()  # an experiment deleted meanwhile is looked up again next time
        log.warning("job %s: not logged to MLflow at %s: %s", job_id, uri, _one_line(exc))
        if guard.failure():
            _say_paused(job_id, uri)
        return None
    if guard.success():
        log.info("job %s: MLflow at %s answers again: logging jobs to it", job_id, uri)
    return run


#: Experiment ids by (tracking URI, name): a worker looks each up once.
_EXPERIMENTS: dict[tuple[str, str], str] = {}


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # another worker created it first
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def _end_earlier_attempts(client: Any, experiment_id: str, job_id: int) -> None:
    """Runs of earlier attempts left RUNNING by a worker that died: they ended, KILLED."""
    query = f"tags.`ftqueue.job_id` = '{job_id}' and attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment_id], filter_string=query):
        client.set_tag(run.info.run_id, "ftqueue.outcome", "worker lost")
        client.set_terminated(run.info.run_id, "KILLED")


def _start(
    uri: str, experiment: str, job_id: int, *, attempt: int, worker: str, spec: Mapping[str, Any]
) -> MlflowRun:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    with db.session_scope() as session:
        job = reads.get_job(session, job_id)
        labels = {
            "ftqueue.job_id": str(job_id),
            "ftqueue.kind": job.kind,
            "ftqueue.attempt": str(attempt),
            "ftqueue.worker": worker,
            "ftqueue.model": job.model,
            "ftqueue.dataset": job.dataset,
            "ftqueue.sweep_id": job.sweep_id or "",
            "ftqueue.tags": ",".join(job.tag_names),
        }
        name = job.name or f"job-{job_id}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _EXPERIMENTS.get((uri, experiment)) or _experiment_id(client, experiment)
    _EXPERIMENTS[uri, experiment] = experiment_id
    if attempt > 1:
        _end_earlier_attempts(client, experiment_id, job_id)
    run = client.create_run(experiment_id, run_name=name, tags=labels)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in flatten(spec)]
    for i in range(0, len(params), PARAMS_PER_CALL):
        client.log_batch(run_id, params=params[i : i + PARAMS_PER_CALL])
    log.info("job %s: MLflow run %s in experiment %r", job_id, run_id, experiment)
    return MlflowRun(client, run_id, job_id, frozenset(p.key for p in params), uri)
