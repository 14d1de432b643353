"""Settings from ``FTQUEUE_*`` environment variables, read once on first use."""

from __future__ import annotations

import functools
import getpass
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
    #: FTQUEUE_ARTIFACTS_DIR: adapters are written below it; shared by all workers. With an
    #: object store URL (``s3://bucket/prefix``) it is the local staging directory
    #: (FTQUEUE_HOME/staging) and ``artifacts_url`` is the root.
    artifacts_dir: Path
    #: FTQUEUE_CACHE_DIR: tokenized datasets, reused across jobs, and the datasets submit
    #: has checked (dataset-checks/), so that the same data is not checked again.
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
    #: FTQUEUE_MAX_ROW_CHARS: the longest text one row of a dataset or predict input may
    #: hold, checked at submit. A model reads a few hundred tokens of it, but the tokenizer
    #: splits the whole text first: a row of hundreds of megabytes aborts the worker.
    max_row_chars: int = 100_000
    #: FTQUEUE_MAX_INPUT_BYTES: the largest dataset or predict input file, checked at submit.
    max_input_bytes: int = 2 * 1024**3
    #: FTQUEUE_GPU_LOCK_DIR: where workers claim GPUs, one lock file each; host-wide, so that
    #: every user's workers see the same claims (default: the system's temporary directory).
    gpu_lock_dir: Path | None = None
    #: FTQUEUE_FIXED_SHAPES: train on a few fixed (batch, width) shapes, the last batch filled
    #: with zero-weight rows (unset: on a GPU only; the losses are the same either way).
    fixed_shapes: bool | None = None
    #: FTQUEUE_COMPILE_MODE: compile the training step of fixed-shape training, once per
    #: worker process: off, or a torch.compile mode (default, reduce-overhead,
    #: max-autotune-no-cudagraphs, max-autotune) or backend (aot_eager, eager: for checks).
    compile_mode: str = "off"
    #: FTQUEUE_USER: who submits, recorded on each job (default: the login name).
    user: str = "unknown"
    #: FTQUEUE_MAX_RUNNING_PER_USER: the most jobs one submitter may have running at once,
    #: checked by the worker that claims a job (unset: no cap).
    max_running_per_user: int | None = None
    #: FTQUEUE_CAP_RETRY_SECONDS: how long a job held back by that cap waits before a worker
    #: looks at it again.
    cap_retry_seconds: float = 10.0
    #: FTQUEUE_ARTIFACTS_DIR given as ``s3://bucket/prefix``: the root job rows are relative to.
    artifacts_url: str | None = None
    #: FTQUEUE_S3_ENDPOINT_URL: an S3-compatible server (MinIO, Ceph); unset: AWS's, or
    #: AWS_ENDPOINT_URL. Credentials come from the usual AWS variables and files.
    s3_endpoint_url: str | None = None

    @property
    def artifacts_root(self) -> str:
        """The root job rows' output locations are relative to: a URL or a local directory."""
        return self.artifacts_url or str(self.artifacts_dir)

    @property
    def artifacts_cache_dir(self) -> Path:
        """Where readers keep local copies of outputs downloaded from an object store."""
        return self.home / "artifacts-cache"

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


#: The parts the two service URLs are built from when FTQUEUE_DATABASE_URL or FTQUEUE_BROKER_URL
#: is not given (docker-compose.yml, deploy/kubernetes): each password stays a value of its
#: own, any characters, URL-encoded here where it enters the URL.
URL_PART_VARS = (
    "FTQUEUE_POSTGRES_PASSWORD",
    "FTQUEUE_POSTGRES_USER",
    "FTQUEUE_POSTGRES_DB",
    "FTQUEUE_POSTGRES_ADDR",
    "FTQUEUE_REDIS_PASSWORD",
    "FTQUEUE_REDIS_ADDR",
)
#: How the example files mark a value still to be set; such a password is refused.
PLACEHOLDER = "change-me"


def _password(env: Mapping[str, str], name: str) -> str | None:
    """The password in ``name``, None when unset; refused when empty or a placeholder."""
    raw = env.get(name)
    if raw is None:
        return None
    if raw.strip() == "" or raw.strip().lower().startswith(PLACEHOLDER):
        # Not the value itself: it may be a real password that merely starts that way.
        why = "is empty" if raw.strip() == "" else f"starts with the placeholder {PLACEHOLDER!r}"
        raise FtqueueError(
            f"{name} {why}: set a real password (e.g. from `openssl rand -hex 24`) in .env "
            "or the Secret it comes from"
        )
    return raw


def _built_urls(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """FTQUEUE_DATABASE_URL and FTQUEUE_BROKER_URL made from their parts, where given."""
    from urllib.parse import quote as url_quote

    database = broker = None
    pg_password = _password(env, "FTQUEUE_POSTGRES_PASSWORD")
    if pg_password is not None and not env.get("FTQUEUE_DATABASE_URL"):
        user = url_quote(env.get("FTQUEUE_POSTGRES_USER") or "ftqueue", safe="")
        name = url_quote(env.get("FTQUEUE_POSTGRES_DB") or "ftqueue", safe="")
        addr = env.get("FTQUEUE_POSTGRES_ADDR") or "localhost:5432"
        database = f"postgresql+psycopg://{user}:{url_quote(pg_password, safe='')}@{addr}/{name}"
    redis_password = _password(env, "FTQUEUE_REDIS_PASSWORD")
    if redis_password is not None and not env.get("FTQUEUE_BROKER_URL"):
        addr = env.get("FTQUEUE_REDIS_ADDR") or "localhost:6379"
        broker = f"redis://:{url_quote(redis_password, safe='')}@{addr}/0"
    return database, broker


COMPILE_MODES = (
    "off",
    "default",
    "reduce-overhead",
    "max-autotune-no-cudagraphs",
    "max-autotune",
    "aot_eager",
    "eager",
)


def _compile_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in COMPILE_MODES:
        raise FtqueueError(
            f"FTQUEUE_COMPILE_MODE={quote(raw)} is no compile mode: use one of "
            f"{', '.join(COMPILE_MODES)}."
        )
    return value


def _artifacts_url(raw: str) -> str | None:
    """The object store root FTQUEUE_ARTIFACTS_DIR names, or None for a local directory."""
    if "://" not in raw:
        return None
    scheme, _, rest = raw.partition("://")
    bucket = rest.split("/")[0]
    if scheme.lower() not in ("s3", "s3a") or not bucket or any(c in raw for c in "\x00\n\r"):
        raise FtqueueError(
            f"FTQUEUE_ARTIFACTS_DIR={quote(raw)} is neither a local directory nor an S3 URL: "
            "give a path, or s3://BUCKET/PREFIX"
        )
    return "s3://" + rest.strip("/")


#: What a user name may be: it is stored in jobs.submitted_by and printed in tables.
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")


def _user(raw: str) -> str:
    """FTQUEUE_USER, or the login name; refused in one line when it is no plain name."""
    if not raw:
        try:
            raw = getpass.getuser()
        except Exception:  # no login name (a container's bare uid): still a valid setting
            return "unknown"
        return raw if _USER.fullmatch(raw) else "unknown"
    if not _USER.fullmatch(raw):
        raise FtqueueError(
            f"FTQUEUE_USER={quote(raw)} is no user name: use up to 64 letters, digits or "
            "_ . @ + -, starting with a letter, digit or _"
        )
    return raw


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise FtqueueError(f"{name}={quote(raw)} must be a number of seconds from 0.1 to 3600")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = Path(env.get("FTQUEUE_HOME") or Path.home() / ".ftqueue").expanduser()
    built_database, built_broker = _built_urls(env)
    database_url = _database_url(
        env.get("FTQUEUE_DATABASE_URL") or built_database or f"sqlite:///{home / 'ftqueue.db'}"
    )
    artifacts_url = _artifacts_url(env.get("FTQUEUE_ARTIFACTS_DIR") or "")
    return Settings(
        home=home,
        database_url=database_url,
        broker_url=env.get("FTQUEUE_BROKER_URL") or built_broker or "redis://localhost:6379/0",
        artifacts_dir=(
            home / "staging"
            if artifacts_url
            else Path(env.get("FTQUEUE_ARTIFACTS_DIR") or home / "artifacts").expanduser()
        ),
        artifacts_url=artifacts_url,
        s3_endpoint_url=env.get("FTQUEUE_S3_ENDPOINT_URL") or None,
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
        max_row_chars=_int(env, "FTQUEUE_MAX_ROW_CHARS", 100_000),
        max_input_bytes=_int(env, "FTQUEUE_MAX_INPUT_BYTES", 2 * 1024**3),
        gpu_lock_dir=Path(env["FTQUEUE_GPU_LOCK_DIR"]) if env.get("FTQUEUE_GPU_LOCK_DIR") else None,
        fixed_shapes=(
            _flag(env, "FTQUEUE_FIXED_SHAPES", False) if env.get("FTQUEUE_FIXED_SHAPES") else None
        ),
        compile_mode=_compile_mode(env.get("FTQUEUE_COMPILE_MODE") or "off"),
        user=_user(env.get("FTQUEUE_USER") or ""),
        max_running_per_user=(
            _int(env, "FTQUEUE_MAX_RUNNING_PER_USER", 1)
            if env.get("FTQUEUE_MAX_RUNNING_PER_USER")
            else None
        ),
        cap_retry_seconds=_seconds(env, "FTQUEUE_CAP_RETRY_SECONDS", 10.0),
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
# The fields whose variable is not their name in capitals.
ENV_VARS["worker_refresh_seconds"] = "FTQUEUE_WORKER_REFRESH"
ENV_VARS["artifacts_url"] = "FTQUEUE_ARTIFACTS_DIR"
