"""A prefork worker's main process forks pool processes while its own threads use the database.

SQLite's lock bookkeeping lives in process memory and is copied by fork(): a child forked
while a parent thread held the write lock can never write ("database is locked" after the
busy timeout, on every try). These tests fork for real, with a parent thread inside a write
transaction at the moment of the fork, and check what the child can do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from ftqueue.store import db


@pytest.fixture
def forking_process() -> Iterator[None]:
    db.forking_with_threads()
    yield
    db.forking_with_threads(False)


def _fork_while_a_thread_writes(url: str) -> tuple[int, float, float]:
    """Fork while another thread holds the write lock for 0.5 s; the child then writes.

    Returns the child's exit status, how long the fork call took and how long the thread
    held its transaction after the fork began.
    """
    holding, committed_at = threading.Event(), [0.0]

    def writer() -> None:
        with db.session_scope(write=True, url=url) as session:
            session.execute(text("SELECT count(*) FROM jobs"))
            holding.set()
            time.sleep(0.5)
        committed_at[0] = time.monotonic()

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    path = db.sqlite_path(url)
    assert path is not None
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: a plain connection of its own, with a short busy timeout
        code = 1
        try:
            conn = sqlite3.connect(path, timeout=3, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE jobs SET priority = priority")
            conn.execute("COMMIT")
            code = 0
        finally:
            os._exit(code)
    forked = time.monotonic() - started
    thread.join()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), forked, committed_at[0] - started


def test_a_fork_waits_for_a_threads_sqlite_transaction_and_the_child_can_write(
    sqlite_url: str, forking_process: None
) -> None:
    code, forked, held = _fork_while_a_thread_writes(sqlite_url)
    assert code == 0, "the child could not write"
    # The fork waited until the thread's transaction ended and its connection closed.
    assert forked >= held > 0.3


def test_without_the_gate_the_child_of_such_a_fork_cannot_write(sqlite_url: str) -> None:
    # The hazard the gate exists for, shown on the same SQLite the project runs on.
    code, forked, _ = _fork_while_a_thread_writes(sqlite_url)
    assert code != 0
    assert forked < 0.3


def test_a_forking_process_keeps_no_sqlite_connection_open_between_sessions(
    sqlite_url: str, forking_process: None
) -> None:
    with db.session_scope(write=True) as session:
        session.execute(text("UPDATE jobs SET priority = priority"))
        assert db._FORK_GATE.others_open() == 0  # this thread's own, and only while used
        assert sum(db._FORK_GATE._holders.values()) == 1
    assert sum(db._FORK_GATE._holders.values()) == 0


@pytest.mark.postgres
def test_a_child_leaves_the_parents_postgresql_connections_alone(pg_url: str) -> None:
    def backend() -> int:
        with db.session_scope() as session:
            return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())

    before = backend()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            db.after_fork()
            code = 0 if backend() != before else 2  # a connection of its own
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's pooled connection is the same server session: the child did not end it.
    assert backend() == before
