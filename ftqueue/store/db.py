"""Engines and sessions for the results database, and the Alembic commands that shape it."""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.resources
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from ftqueue.errors import DatabaseError, DatabaseReplaced, RevisionError, first_line
from ftqueue.settings import get_settings

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 60
#: How long `db upgrade` waits for another one running on the same database.
MIGRATION_LOCK_TIMEOUT_S = 600
#: The PostgreSQL advisory lock key held while migrating (any constant; "ftqueue" in ASCII).
_PG_MIGRATION_LOCK = 0x6674717565756500


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


def read_only_error(exc: BaseException | None) -> bool:
    """Whether a driver error says the database refuses writes (a read-only file or server)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == 8  # SQLITE_READONLY and its extended codes
    return getattr(exc, "sqlstate", None) == "25006"  # PostgreSQL read_only_sql_transaction


def _watch_errors(engine: Engine) -> None:
    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        # A connection opened while the database was read-only stays read-only after it is
        # writable again (SQLite opens the file read-only; a PostgreSQL session keeps its
        # default_transaction_read_only): count it as a disconnect, so that the pool drops
        # it and every older connection, and the next use opens afresh.
        if read_only_error(context.original_exception):
            context.is_disconnect = True


# --- the file behind a SQLite URL ------------------------------------------------------------

#: (device, inode) of the file each SQLite URL opened first in this process.
_FILES: dict[str, tuple[int, int]] = {}
#: URLs whose file was found deleted or replaced: unusable until this process starts again.
_REPLACED: dict[str, str] = {}


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_sqlite_file(url: str | None = None) -> None:
    """Raise DatabaseReplaced when a SQLite URL's file is no longer the one this process opened.

    A connection to a deleted or replaced file goes on writing into the old inode, where
    nobody reads it; and a new file has other jobs under the same ids, so this process's
    claims mean nothing there. Other backends, and files not yet opened, pass.
    """
    target = url or database_url()
    if target in _REPLACED:
        raise DatabaseReplaced(_REPLACED[target])
    known = _FILES.get(target)
    path = sqlite_path(target)
    if known is None or path is None:
        return
    current = _file_identity(path)
    if current != known:
        what = "deleted" if current is None else "replaced by another file"
        _REPLACED[target] = (
            f"the database file {path} was {what} while this process had it open; "
            "restart the process to use the new file (a worker restarts by itself)"
        )
        raise DatabaseReplaced(_REPLACED[target])


def _tune_sqlite(engine: Engine, url: str) -> None:
    path = sqlite_path(url)

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
        if path is not None:
            identity = _file_identity(path)
            if identity is not None:
                _FILES.setdefault(url, identity)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is
        # locked" when another writer got in between; taking the write lock up front makes it
        # wait on the busy timeout instead.
        write = conn.get_execution_options().get("ftqueue_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class _ForkGate:
    """Holds ``os.fork()`` back while a thread of this process has a SQLite connection open.

    SQLite keeps each file's lock bookkeeping in process memory, shared by every connection
    to the file, and that memory is copied by fork(). A child forked while a parent thread
    held the write lock believes for ever that another connection of its own holds it: each
    write it tries waits out the busy timeout and fails with "database is locked". A process
    that forks with threads (a prefork worker's main process) therefore opens SQLite
    connections one at a time through this gate (``_GatedPool``), and a fork waits here until
    none is open, so that the child starts with no SQLite state at all.
    """

    #: A connection held longer than this does not hold a fork back for ever.
    WAIT_S = 2 * SQLITE_BUSY_TIMEOUT_S

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._holders: dict[int, int] = {}
        self._forking = False

    def enter(self) -> None:
        me = threading.get_ident()
        with self._cond:
            while self._forking and not self._holders.get(me):
                self._cond.wait()
            self._holders[me] = self._holders.get(me, 0) + 1

    def leave(self) -> None:
        me = threading.get_ident()
        with self._cond:
            left = self._holders.get(me, 0) - 1
            if left > 0:
                self._holders[me] = left
            else:
                self._holders.pop(me, None)
            self._cond.notify_all()

    def others_open(self) -> int:
        me = threading.get_ident()
        return sum(n for ident, n in self._holders.items() if ident != me)

    def before_fork(self) -> None:
        # Returns holding the condition's lock, so that no connection opens during the fork.
        self._cond.acquire()
        self._forking = True
        if not self._cond.wait_for(lambda: self.others_open() == 0, timeout=self.WAIT_S):
            log.warning(
                "forking with %d SQLite connection(s) still open after %ds; the new process "
                "may find the database locked",
                self.others_open(),
                self.WAIT_S,
            )

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the parent's threads do not exist here


_FORK_GATE = _ForkGate()
os.register_at_fork(
    before=_FORK_GATE.before_fork,
    after_in_parent=_FORK_GATE.after_fork_in_parent,
    after_in_child=_FORK_GATE.after_fork_in_child,
)


class _GatedPool(NullPool):
    """A new SQLite connection per checkout, closed at checkin, each open through the gate."""

    def _do_get(self) -> ConnectionPoolEntry:
        _FORK_GATE.enter()
        try:
            return super()._do_get()
        except BaseException:
            _FORK_GATE.leave()
            raise

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            _FORK_GATE.leave()


_ENGINES: dict[str, Engine] = {}
_SESSIONMAKERS: dict[tuple[str, bool], sessionmaker[Session]] = {}
_LOCK = threading.Lock()
#: Whether this process forks while its threads use the database (see `_ForkGate`).
_FORKING: list[bool] = [False]
#: Pools a forked child inherited: kept, never closed, since their connections are the
#: parent's (closing a PostgreSQL one would end the parent's session on the server).
_INHERITED: list[Any] = []


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # another parent thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
            if _FORKING[0] and sqlite_path(url) is not None:
                kwargs["poolclass"] = _GatedPool
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
        _tune_sqlite(engine, url)
    _watch_errors(engine)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: the configured database), built once per URL."""
    target = url or database_url()
    with _LOCK:
        if target not in _ENGINES:
            _ENGINES[target] = _create_engine(target)
        return _ENGINES[target]


def dispose_engines() -> None:
    """Close every pooled connection and forget the engines (between tests)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _forget_engines()


def _forget_engines() -> None:
    _ENGINES.clear()
    _SESSIONMAKERS.clear()
    _FILES.clear()
    _REPLACED.clear()


def forking_with_threads(on: bool = True) -> None:
    """Make this process safe to fork while its threads use SQLite (see `_ForkGate`).

    Called by a prefork worker's main process before its pool starts: its engines are
    rebuilt to open each SQLite connection through the gate, and only while it is used.
    """
    _FORKING[0] = on
    dispose_engines()


def after_fork() -> None:
    """In a forked child: new engines, and the parent's pooled connections left untouched."""
    with _LOCK:
        for engine in _ENGINES.values():
            _INHERITED.append(engine.pool)
            engine.dispose(close=False)
        _forget_engines()


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
    check_sqlite_file(target)
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


def ping(url: str | None = None) -> None:
    """Open a connection now (so that a SQLite file's identity is known from here on)."""
    with session_scope(url=url) as session:
        session.execute(text("SELECT 1"))


def describe_operational_error(url: str, exc: BaseException) -> str:
    driver_error = getattr(exc, "orig", None) or exc
    detail = first_line(driver_error)
    where = safe_url(url)
    if "no such table" in detail or ("does not exist" in detail and "relation" in detail):
        return f"the database at {where} is not migrated: run `ftqueue db upgrade`."
    if read_only_error(driver_error):
        return (
            f"the database at {where} is read-only ({detail}): make it writable (file "
            "permissions; a primary server, not a replica) and try again."
        )
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
    except sa_exc.DBAPIError as exc:
        if not (exc.connection_invalidated or read_only_error(exc.orig)):
            raise
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


_REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


@functools.cache
def head_revision() -> str:
    """The newest revision of the migrations shipped with this ftqueue.

    Read from the revision files' ``revision`` and ``down_revision`` lines: Alembic's own
    reading of the scripts costs a command such as `submit` a tenth of a second of imports.
    Where the lines do not make one chain with one head, Alembic decides.
    """
    versions = importlib.resources.files("ftqueue.migrations") / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    for entry in versions.iterdir():
        if not entry.name.endswith(".py") or entry.name.startswith("_"):
            continue
        found = {m[1]: m[2] for m in _REVISION_LINE.finditer(entry.read_text())}
        try:
            revision = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found.get("down_revision", "None"))
        except (KeyError, ValueError, SyntaxError):
            return _alembic_head()
        revisions.add(revision)
        parents.update([down] if isinstance(down, str) else down or ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else _alembic_head()


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    target = url or database_url()
    path = sqlite_path(target)
    if path is not None and not path.exists():
        return None
    with translate_errors(target), get_engine(target).connect() as conn:
        # What Alembic's MigrationContext reads, without importing Alembic.
        if not conn.dialect.has_table(conn, "alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(rows) > 1:
            raise DatabaseError(
                f"the database at {safe_url(target)} is at several revisions at once "
                f"({', '.join(sorted(rows))}): run `ftqueue db upgrade`."
            )
        return rows[0] if rows else None


@contextlib.contextmanager
def _migration_lock(url: str) -> Iterator[Any]:
    """A connection on which no other `ftqueue db upgrade/downgrade` is migrating meanwhile.

    Two upgrades of a fresh database at once would both create the tables; the second one
    waits here instead, then finds the schema at its target and does nothing. SQLite: a lock
    file beside the database, taken before the first connection. PostgreSQL: an advisory lock
    held by the migrating transaction.
    """
    from filelock import FileLock, Timeout

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    file_lock: Any = contextlib.nullcontext()
    if path is not None:
        file_lock = FileLock(f"{path}.lock", timeout=MIGRATION_LOCK_TIMEOUT_S)
    try:
        with file_lock, translate_errors(url), get_engine(url).connect() as conn:
            if conn.dialect.name == "postgresql":
                # Transaction-scoped: released by the commit below, or by any rollback.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                yield conn
            else:
                with _sqlite_foreign_keys_off(conn):
                    yield conn
            conn.commit()
    except Timeout:
        raise DatabaseError(
            f"another `ftqueue db` command has held {path}.lock for {MIGRATION_LOCK_TIMEOUT_S}s; "
            "wait for it to finish, or remove the lock file if no such command is running."
        ) from None


@contextlib.contextmanager
def _sqlite_foreign_keys_off(conn: Any) -> Iterator[None]:
    """SQLite's procedure for altering tables: foreign keys off, then checked before commit.

    SQLite alters a table by copying it (Alembic's batch mode) and dropping the old one; with
    foreign keys on, that drop cascades into every row that refers to it (all results, events
    and tags of the jobs table). The pragma is a no-op inside a transaction, so it goes to the
    driver connection, which is in autocommit mode, before the migration's transaction begins.
    """
    driver = conn.connection.driver_connection
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise DatabaseError(
                f"the migration left {len(broken)} rows whose foreign keys point nowhere "
                f"(first: {tuple(broken[0])}); nothing was changed."
            )
        conn.commit()  # before the pragma below, which would be ignored inside a transaction
    except BaseException:
        conn.rollback()
        raise
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _run_alembic(url: str, command_name: str, revision: str) -> str | None:
    """Run an Alembic command under the migration lock; returns the revision it started from."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.util.exc import CommandError

    cfg = _alembic_config(url)
    with _migration_lock(url) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        try:
            getattr(command, command_name)(cfg, revision)
        except CommandError as exc:
            raise RevisionError(f"{exc}; `ftqueue db current` shows the revision.") from None
    return before


def upgrade(url: str | None = None, revision: str = "head") -> str | None:
    """Bring the schema up to ``revision`` (a no-op when it is there); returns where it was."""
    return _run_alembic(url or database_url(), "upgrade", revision)


def downgrade(url: str | None = None, revision: str = "-1") -> str | None:
    return _run_alembic(url or database_url(), "downgrade", revision)


def downgrade_loss(url: str, revision: str) -> tuple[int, int] | None:
    """(jobs, results) that downgrading to ``revision`` would drop with every table, or None.

    Only a downgrade below the first revision drops the tables; any other keeps the data.
    """
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    current = current_revision(url)
    if current is None:
        return None
    script = ScriptDirectory.from_config(_alembic_config(url))
    try:
        steps = [r.revision for r in script.iterate_revisions(current, "base")]
        if revision.startswith("-") and revision[1:].isdigit():
            keeps = int(revision[1:]) < len(steps)
        else:
            keeps = revision != "base" and script.get_revision(revision) is not None
    except CommandError as exc:
        raise RevisionError(f"{exc}; `ftqueue db current` shows the revision.") from None
    if keeps:
        return None
    with translate_errors(url), get_engine(url).connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        results = conn.execute(text("SELECT count(*) FROM results")).scalar_one()
    return int(jobs), int(results)


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
