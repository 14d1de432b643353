"""Engines and sessions for the results database, and the Alembic commands that shape it."""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ftqueue.errors import DatabaseError, first_line
from ftqueue.settings import get_settings

SQLITE_BUSY_TIMEOUT_S = 60


def database_url() -> str:
    return get_settings().database_url


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is
        # locked" when another writer got in between; taking the write lock up front makes it
        # wait on the busy timeout instead.
        write = conn.get_execution_options().get("ftqueue_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


_ENGINES: dict[str, Engine] = {}
_SESSIONMAKERS: dict[tuple[str, bool], sessionmaker[Session]] = {}
_LOCK = threading.Lock()


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
            if parsed.get_backend_name() == "postgresql":
                kwargs["connect_args"] = {"connect_timeout": 10}
        engine = create_engine(url, **kwargs)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as exc:
        raise DatabaseError(
            f"FTQUEUE_DATABASE_URL={safe_url(url)!r} is not a usable SQLAlchemy URL ({exc}); "
            "use e.g. sqlite:////path/ftqueue.db or postgresql+psycopg://user@host/db."
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _tune_sqlite(engine)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: the configured database), built once per URL."""
    target = url or database_url()
    with _LOCK:
        if target not in _ENGINES:
            _ENGINES[target] = _create_engine(target)
        return _ENGINES[target]


def dispose_engines() -> None:
    """Close every pooled connection and forget the engines (after a fork, between tests)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
        _SESSIONMAKERS.clear()


def _sessionmaker(url: str, write: bool) -> sessionmaker[Session]:
    key = (url, write)
    maker = _SESSIONMAKERS.get(key)
    if maker is None:
        engine = get_engine(url)
        bind = engine.execution_options(ftqueue_write=True) if write else engine
        maker = _SESSIONMAKERS[key] = sessionmaker(bind=bind, expire_on_commit=False)
    return maker


@contextlib.contextmanager
def session_scope(*, write: bool = False, url: str | None = None) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error.

    ``write=True`` takes SQLite's write lock at BEGIN, for transactions that read then write.
    """
    target = url or database_url()
    with translate_errors(target):
        session = _sessionmaker(target, write)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def describe_operational_error(url: str, exc: BaseException) -> str:
    detail = first_line(getattr(exc, "orig", None) or exc)
    where = safe_url(url)
    if "no such table" in detail or ("does not exist" in detail and "relation" in detail):
        return f"the database at {where} is not migrated: run `ftqueue db upgrade`."
    return (
        f"cannot use the database at {where}: {detail}. Check that the server is running and "
        "FTQUEUE_DATABASE_URL is right."
    )


@contextlib.contextmanager
def translate_errors(url: str | None = None) -> Iterator[None]:
    """Turn driver errors about reachability and missing tables into one-line DatabaseErrors."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.InterfaceError) as exc:
        raise DatabaseError(describe_operational_error(url or database_url(), exc)) from exc


# --- Alembic -------------------------------------------------------------------------------


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    script_location = importlib.resources.files("ftqueue.migrations")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    # configparser treats % specially; URLs with %-escaped passwords need doubling.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    target = url or database_url()
    path = sqlite_path(target)
    if path is not None and not path.exists():
        return None
    with translate_errors(target), get_engine(target).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _run_alembic(url: str, command_name: str, revision: str) -> None:
    from alembic import command

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = _alembic_config(url)
    with translate_errors(url), get_engine(url).connect() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, command_name)(cfg, revision)
        conn.commit()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the schema up to ``revision``; a no-op when it is already there."""
    _run_alembic(url or database_url(), "upgrade", revision)


def downgrade(url: str | None = None, revision: str = "-1") -> None:
    _run_alembic(url or database_url(), "downgrade", revision)


def ensure_ready(url: str | None = None) -> None:
    """Fail with one line unless the database is reachable and at the head revision."""
    target = url or database_url()
    current = current_revision(target)
    if current is None:
        raise DatabaseError(
            f"the database at {safe_url(target)} is not migrated: run `ftqueue db upgrade`."
        )
    head = head_revision()
    if current != head:
        raise DatabaseError(
            f"the database at {safe_url(target)} is at revision {current}, this ftqueue needs "
            f"{head}: run `ftqueue db upgrade`."
        )
