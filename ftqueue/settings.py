"""Settings from ``FTQUEUE_*`` environment variables, read once on first use."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ftqueue.core.states import DEFAULT_EVENTS, Event
from ftqueue.core.text import clip, quote
from ftqueue.errors import FtqueueError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the environment variable that sets each field."""

    #: FTQUEUE_HOME: where the default database, artifacts and caches live.
    home: Path
    #: FTQUEUE_DATABASE_URL: SQLAlchemy URL of the results database.
    database_url: str
    #: FTQUEUE_BROKER_URL: Celery broker URL (Redis).
    broker_url: str
    #: FTQUEUE_ARTIFACTS_DIR: adapters are written below it; shared by all workers.
    artifacts_dir: Path
    #: FTQUEUE_CACHE_DIR: tokenized datasets, reused across jobs.
    cache_dir: Path
    #: FTQUEUE_EAGER: run jobs in-process at submit time, with no broker.
    eager: bool
    #: FTQUEUE_TIME_LIMIT: hard limit of one job attempt, seconds.
    time_limit: int
    #: FTQUEUE_MAX_ATTEMPTS: attempts before a job whose worker keeps dying is failed.
    max_attempts: int
    #: FTQUEUE_LEASE_SECONDS: a running job whose heartbeat is older than this is re-queued.
    lease_seconds: int
    #: FTQUEUE_MAX_GRID: the most jobs one submit may expand into.
    max_grid: int = 10_000
    #: FTQUEUE_VISIBILITY_TIMEOUT: overrides the Redis redelivery timeout derived from the
    #: time limit. Lower than a job's run time, a running job's message is delivered again.
    visibility_timeout_override: int | None = None
    #: FTQUEUE_PROGRESS_EVERY: without a terminal, `--wait` and `--follow` print a running
    #: job's line at least this often (seconds), besides each phase and epoch.
    progress_every: int = 30
    #: FTQUEUE_MLFLOW_TRACKING_URI: where workers log each job as an MLflow run (unset: no MLflow).
    mlflow_tracking_uri: str | None = None
    #: FTQUEUE_MLFLOW_EXPERIMENT: the MLflow experiment those runs go into.
    mlflow_experiment: str = "ftqueue"
    #: FTQUEUE_WORKER_REFRESH: each worker refreshes its row of the workers table this often
    #: (seconds); one not seen for three intervals reads as gone.
    worker_refresh_seconds: int = 5
    #: FTQUEUE_NOTIFY: Apprise URLs told when a job fails for good or a sweep ends (none: off).
    notify: tuple[str, ...] = ()
    #: FTQUEUE_NOTIFY_ON: the events sent: failed and sweep-done, plus the ones it names.
    notify_on: frozenset[Event] = DEFAULT_EVENTS

    @property
    def soft_time_limit(self) -> int:
        """The soft limit leaves the job a minute (or a tenth) to fail cleanly."""
        return max(1, self.time_limit - min(60, max(1, self.time_limit // 10)))

    @property
    def visibility_timeout(self) -> int:
        """Redis redelivers unacked messages after this; it must exceed any job's run."""
        if self.visibility_timeout_override is not None:
            return self.visibility_timeout_override
        return self.time_limit + max(300, self.time_limit // 10)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FtqueueError(f"{name}={quote(raw)} is not a yes/no value: use 1 or 0.")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FtqueueError(f"{name}={quote(raw)} is not a whole number.") from None
    if value < minimum:
        raise FtqueueError(f"{name}={value} is too small: use {minimum} or more.")
    return value


def _database_url(raw: str) -> str:
    """The URL, if SQLAlchemy can parse it: a bad one is one line here, not a traceback later."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(raw)
    except (ArgumentError, ValueError):
        # The text may hold a password: show its scheme only.
        scheme = raw.split("://", 1)[0] if "://" in raw else clip(raw, 40)
        raise FtqueueError(
            f"FTQUEUE_DATABASE_URL ({scheme}...) is not a SQLAlchemy URL: use e.g. "
            "sqlite:////path/ftqueue.db or postgresql+psycopg://user:password@host/db"
        ) from None
    return raw


def _split(raw: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", raw) if item]


def _notify_urls(raw: str) -> tuple[str, ...]:
    """The Apprise URLs, each one parsed now: a bad one is refused before any job runs."""
    urls = _split(raw)
    if not urls:
        return ()
    import apprise

    # Apprise logs the URL it cannot parse, secrets and all: the one line below says it instead.
    quiet = logging.getLogger("apprise")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        bad = [url for url in urls if apprise.Apprise.instantiate(url) is None]
    finally:
        quiet.setLevel(level)
    if bad:
        # The text may hold a token or a password: show its scheme only.
        scheme = bad[0].split("://", 1)[0] + "://" if "://" in bad[0] else clip(bad[0], 12)
        raise FtqueueError(
            f"FTQUEUE_NOTIFY: {quote(scheme + '...')} is not a URL Apprise knows: give "
            "e.g. ntfy://TOPIC, json://HOST:PORT/PATH or slack://TOKEN_A/TOKEN_B/"
            "TOKEN_C, separated by commas (see https://github.com/caronc/apprise/wiki)"
        )
    return tuple(urls)


def _notify_on(raw: str) -> frozenset[Event]:
    names = {name.lower() for name in _split(raw)}
    known = {e.value for e in Event}
    unknown = sorted(names - known)
    if unknown:
        raise FtqueueError(
            f"FTQUEUE_NOTIFY_ON={quote(raw)}: {quote(unknown[0])} is no event: use any of "
            f"{', '.join(e.value for e in Event if e not in DEFAULT_EVENTS)} "
            f"({' and '.join(sorted(DEFAULT_EVENTS))} are always sent)"
        )
    return DEFAULT_EVENTS | {Event(name) for name in names}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = Path(env.get("FTQUEUE_HOME") or Path.home() / ".ftqueue").expanduser()
    database_url = _database_url(
        env.get("FTQUEUE_DATABASE_URL") or f"sqlite:///{home / 'ftqueue.db'}"
    )
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=env.get("FTQUEUE_BROKER_URL") or "redis://localhost:6379/0",
        artifacts_dir=Path(env.get("FTQUEUE_ARTIFACTS_DIR") or home / "artifacts").expanduser(),
        cache_dir=Path(env.get("FTQUEUE_CACHE_DIR") or home / "cache").expanduser(),
        eager=_flag(env, "FTQUEUE_EAGER", False),
        time_limit=_int(env, "FTQUEUE_TIME_LIMIT", 6 * 3600),
        max_attempts=_int(env, "FTQUEUE_MAX_ATTEMPTS", 3),
        lease_seconds=_int(env, "FTQUEUE_LEASE_SECONDS", 120, minimum=2),
        max_grid=_int(env, "FTQUEUE_MAX_GRID", 10_000),
        visibility_timeout_override=(
            _int(env, "FTQUEUE_VISIBILITY_TIMEOUT", 0)
            if env.get("FTQUEUE_VISIBILITY_TIMEOUT")
            else None
        ),
        progress_every=_int(env, "FTQUEUE_PROGRESS_EVERY", 30),
        mlflow_tracking_uri=env.get("FTQUEUE_MLFLOW_TRACKING_URI") or None,
        mlflow_experiment=env.get("FTQUEUE_MLFLOW_EXPERIMENT") or "ftqueue",
        worker_refresh_seconds=_int(env, "FTQUEUE_WORKER_REFRESH", 5),
        notify=_notify_urls(env.get("FTQUEUE_NOTIFY") or ""),
        notify_on=_notify_on(env.get("FTQUEUE_NOTIFY_ON") or ""),
    )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return load_settings()


_RESET_HOOKS: list[Callable[[], None]] = []


def on_reset(hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever settings are reset, to drop what was built from the old ones."""
    _RESET_HOOKS.append(hook)


def reset_settings() -> None:
    """Forget cached settings (and what was built from them); for tests and long-lived shells."""
    get_settings.cache_clear()
    for hook in _RESET_HOOKS:
        hook()


ENV_VARS = {f.name: f"FTQUEUE_{f.name.removesuffix('_override').upper()}" for f in fields(Settings)}
