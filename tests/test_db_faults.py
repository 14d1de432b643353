"""The database under a worker: read-only, unreachable, replaced; and schema changes that race.

Each test names what it checks. Workers are real processes; the faults are real: a PostgreSQL
database switched to read-only (what a failover to a replica looks like) or refusing
connections, a SQLite file made read-only or swapped for another.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, inspect, select, text

from ftqueue.cli import cli
from ftqueue.errors import DatabaseError
from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, insert, lifecycle
from ftqueue.store.schema import Job, JobEvent, Result
from ftqueue.submit.submission import submit
from tests.conftest import PG_SERVER, service_missing
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for

pytestmark = pytest.mark.slow


def spec(seconds: float, seed: int, steps: int = 4) -> LoraSpec:
    return LoraSpec(
        model=f"synthetic:seconds={seconds},steps={steps}",
        data=DataSpec(dataset="movie-snippets"),
        seed=seed,
        epochs=1,
    )


@pytest.fixture
def pool() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def result_sets(job_ids: list[int]) -> dict[int, list[tuple[str, int]]]:
    with db.session_scope() as session:
        rows = session.execute(
            select(Result.job_id, Result.split, Result.attempt).where(Result.job_id.in_(job_ids))
        ).all()
    found: dict[int, list[tuple[str, int]]] = {jid: [] for jid in job_ids}
    for jid, split, attempt in rows:
        found[jid].append((split, attempt))
    return {jid: sorted(sets) for jid, sets in found.items()}


# --- PostgreSQL read-only or refusing connections under a working worker --------------------


def _alter(name: str, *statements: str) -> None:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement.format(db=name)))
        # Sessions keep what they started with: end them, so the change reaches the worker.
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
    admin.dispose()


OUTAGES = {
    "read-only": (
        'ALTER DATABASE "{db}" SET default_transaction_read_only = on',
        'ALTER DATABASE "{db}" SET default_transaction_read_only = off',
    ),
    "unreachable": (
        'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false',
        'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true',
    ),
}


def queued_rows(specs: list[LoraSpec]) -> list[Job]:
    """Queued job rows whose messages are not published yet."""
    with db.session_scope(write=True) as session:
        return insert.create_jobs(
            session,
            [
                insert.NewJob(
                    kind="lora",
                    spec=s.to_dict(),
                    spec_hash=s.spec_hash(),
                    model=s.model,
                    dataset="movie-snippets",
                )
                for s in specs
            ],
            max_attempts=3,
        )


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_worker_stops_claiming_while_the_database_is_away_and_recovers(
    outage: str, pg_url: str, redis_url: str, pool: list[WorkerProcess], tmp_path: Path
) -> None:
    name = pg_url.rsplit("/", 1)[1]
    env = child_env(FTQUEUE_LEASE_SECONDS="3")
    # Two slots: one is inside a job when the database goes, the other is free to take more.
    worker = WorkerProcess("dbaway", env=env, log_dir=tmp_path, processes=2).start()
    pool.append(worker)
    worker.wait_ready()
    [running] = submit([spec(3, 1, steps=6)]).created
    waiting = queued_rows([spec(0.3, 2), spec(0.3, 3)])
    wait_for(lambda: statuses([running.id])[running.id] == "running", timeout=30, what="a job")

    start, end = OUTAGES[outage]
    db.dispose_engines()
    _alter(name, start)
    try:
        broker.publish(waiting)  # messages arrive while the database is away
        time.sleep(6)  # longer than the lease: the running job's lease lapses meanwhile
        # Not claiming: both messages are still in Redis (one taken, unacked), none lost.
        assert {job.task_id for job in waiting} <= broker.pending_task_ids()
        assert "not claiming until the database is back" in worker.log()
    finally:
        _alter(name, end)
        db.dispose_engines()

    ids = [running.id, *(j.id for j in waiting)]
    wait_for(lambda: all_terminal(ids), timeout=90, what="every job after the outage")
    with db.session_scope() as session:
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
    assert {j.status for j in jobs.values()} == {"succeeded"}, worker.log()[-3000:]
    assert [jobs[j.id].attempts for j in waiting] == [1, 1]  # no claim was burnt meanwhile
    # One result set each, by the attempt that holds the job (1, or 2 if the lapsed lease
    # was re-queued before the first attempt could record).
    for jid, sets in result_sets(ids).items():
        assert sets == [("test", jobs[jid].attempts), ("validation", jobs[jid].attempts)]
    log = worker.log()
    assert "exited with" not in log  # the worker processes lived through it
    assert log.count("not claiming until the database is back") == 1  # once, not per try
    # Each outage is logged once per action waiting on it, not once per try (a reaper in
    # each of the two worker processes: when it starts, maybe when its error changes, when
    # it is over). Ending the sessions can break a query in flight, which a new connection
    # then finishes at once: that action's line, and the read-only refusal of the job's next
    # write its own; trying again every 0.5-4 s would have logged four or more.
    assert log.count("heartbeat failed") <= 1 and log.count("database unavailable") <= 2
    assert log.count("reaper: ") <= 6 and log.count("reaper: working again") <= 2
    print(f"{outage}: running job ended on attempt {jobs[running.id].attempts}")


# --- SQLite: a read-only file, a replaced file --------------------------------------------


def _chattr(path: Path, flag: str) -> None:
    if shutil.which("chattr") is None:
        service_missing("chattr (to make a file read-only for root)", "not installed")
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        service_missing("chattr (root on a filesystem with the immutable flag)", done.stderr)


def test_a_connection_opened_while_sqlite_was_read_only_is_not_kept(
    sqlite_url: str, isolated_home: Path
) -> None:
    path = isolated_home / "test.db"
    [job] = submit([spec(1, 1)]).created
    db.dispose_engines()  # the next connection is opened while the file is read-only
    _chattr(path, "+i")
    try:
        with pytest.raises(DatabaseError, match="is read-only") as err:
            lifecycle.cancel([job.id])
        assert len(err.value.message.splitlines()) == 1
    finally:
        _chattr(path, "-i")
    # SQLite keeps a connection it opened read-only read-only for good; the pool must not.
    [outcome] = lifecycle.cancel([job.id])
    assert (outcome.before, outcome.after) == ("queued", "cancelled")


def test_a_sqlite_file_replaced_under_a_worker_is_seen_and_nothing_crosses_over(
    sqlite_url: str, redis_url: str, pool: list[WorkerProcess], tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    path = Path(db.sqlite_path(sqlite_url) or "")
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "3")
    reset_settings()
    worker = WorkerProcess("swap", env=child_env(), log_dir=tmp_path).start()
    pool.append(worker)
    worker.wait_ready()
    [old] = submit([spec(6, 1, steps=12)]).created
    wait_for(lambda: statuses([old.id])[old.id] == "running", timeout=30, what="the old job")

    db.dispose_engines()
    replaced_at = time.monotonic()
    for stale in path.parent.glob(path.name + "*"):  # the file, its WAL and shared memory
        stale.unlink()
    db.upgrade(sqlite_url)
    [new] = submit([spec(0.5, 2)]).created
    assert new.id == old.id  # the same id names another job in the new file

    wait_for(lambda: all_terminal([new.id]), timeout=90, what="the new file's job")
    print(f"file replaced: the new file's job ended {time.monotonic() - replaced_at:.1f}s later")
    with db.session_scope() as session:
        row = session.get(Job, new.id)
        assert row is not None and (row.status, row.attempts) == ("succeeded", 1)
        assert row.spec["seed"] == 2
        events = session.scalars(select(JobEvent.detail).where(JobEvent.job_id == new.id)).all()
    assert result_sets([new.id])[new.id] == [("test", 1), ("validation", 1)]
    assert len(events) == 3  # submitted, running, succeeded: nothing from the old attempt
    log = worker.log()
    assert log.count("stopping this worker") == 1
    assert "while this process had it open" in log and "exited with" in log  # and restarted


# --- schema changes -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, isolated_home: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{isolated_home / 'fresh' / 'ftqueue.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


def test_concurrent_upgrades_of_a_fresh_database_all_succeed(fresh_url: str) -> None:
    env = child_env(FTQUEUE_DATABASE_URL=fresh_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ftqueue", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    said = sorted(out.split(" ", 1)[1].strip() for out, _ in outputs)
    head = db.head_revision()
    assert said == [
        f"is already at revision {head}.",
        f"is already at revision {head}.",
        f"upgraded from empty to {head}.",
    ]
    assert db.current_revision(fresh_url) == head


def test_rebuilding_a_table_keeps_the_rows_that_refer_to_it(any_db_url: str) -> None:
    # Revision 0002 rebuilds `jobs` on SQLite; with foreign keys on, that used to delete every
    # result, event and tag through ON DELETE CASCADE.
    [job] = submit([spec(0.1, 1)]).created
    claim = lifecycle.claim(job.id, worker="w", lease_seconds=60)
    assert claim is not None
    from ftqueue.core.outcome import Measurement

    assert lifecycle.record_success(claim, [Measurement("test", 1, 0.9, 0.3, 0.9, 10)], stats={})

    def counts() -> tuple[int, int]:
        with db.session_scope() as session:
            return (
                int(session.scalar(select(func.count()).select_from(Result)) or 0),
                int(session.scalar(select(func.count()).select_from(JobEvent)) or 0),
            )

    before = counts()
    db.downgrade(any_db_url, "-1")
    db.upgrade(any_db_url)
    assert counts() == before == (1, 3)


def test_downgrade_below_the_first_revision_asks_and_counts(sqlite_url: str) -> None:
    submit([spec(0.1, s) for s in range(3)])
    runner = CliRunner()
    asked = runner.invoke(cli, ["db", "downgrade", "base"], input="n\n")
    assert asked.exit_code == 1
    assert "drops every table" in asked.output and "3 jobs and 0 results" in asked.output
    assert "jobs" in inspect(db.get_engine()).get_table_names()  # nothing dropped
    no_terminal = runner.invoke(cli, ["db", "downgrade", "base"], input="")
    assert no_terminal.exit_code == 1 and "Aborted" in no_terminal.output
    kept = runner.invoke(cli, ["db", "downgrade", "-1"])  # keeps the data: no question
    assert kept.exit_code == 0 and "drops" not in kept.output, kept.output
    unknown = runner.invoke(cli, ["db", "downgrade", "nope"])
    assert unknown.exit_code == 2 and "Can't locate revision" in unknown.output
    assert len(unknown.output.strip().splitlines()) == 1
    forced = runner.invoke(cli, ["db", "downgrade", "base", "--yes"])
    assert forced.exit_code == 0, forced.output
    assert "3 jobs and 0 results" in forced.output
    assert "jobs" not in inspect(db.get_engine()).get_table_names()
