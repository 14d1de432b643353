"""Submitting a 10,000-job grid: one transaction, then pipelined publishing, and its failures.

The database going away mid-insert leaves nothing (no row, no message); Redis going away
mid-publish leaves every row queued, and the reaper's lost-message scan publishes exactly
the messages that did not survive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from ftqueue.errors import DatabaseError, PublishError
from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job, JobEvent
from ftqueue.submit.submission import submit
from ftqueue.worker import reaper
from tests.conftest import PG_SERVER
from tests.procs import PrivateRedis

N = 10_000


def grid(n: int = N, offset: int = 0) -> list[LoraSpec]:
    data = DataSpec(dataset="movie-snippets")
    return [LoraSpec(model="synthetic:seconds=0", data=data, seed=offset + i) for i in range(n)]


def counts() -> tuple[int, int, int]:
    """Jobs, queued jobs and job events in the database."""
    with db.session_scope() as session:
        jobs = session.scalar(select(func.count()).select_from(Job)) or 0
        queued = session.scalar(select(func.count()).where(Job.status == "queued")) or 0
        events = session.scalar(select(func.count()).select_from(JobEvent)) or 0
    return int(jobs), int(queued), int(events)


def messages(url: str) -> list[str]:
    """The task ids of the messages waiting in the lora queue, duplicates kept."""
    import redis

    client = redis.Redis.from_url(url)
    raw = [m for key in broker.queue_keys("lora") for m in client.lrange(key, 0, -1)]
    return [json.loads(m)["headers"]["id"] for m in raw]


def watch(condition: Callable[[], bool], action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` from a thread as soon as ``condition`` holds (polled every 2 ms)."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if condition():
                    action()
                    return
            except Exception:
                pass
            time.sleep(0.002)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def durable_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, durable=True)
    server.start()
    monkeypatch.setenv("FTQUEUE_BROKER_URL", server.url)
    monkeypatch.setenv("FTQUEUE_EAGER", "0")
    reset_settings()
    yield server
    server.kill()


@pytest.mark.slow
def test_redis_killed_mid_publish_leaves_rows_the_reaper_publishes_once(
    any_db_url: str, durable_redis: PrivateRedis
) -> None:
    import redis

    client = redis.Redis.from_url(durable_redis.url)
    killer = watch(lambda: broker.queue_length("lora", client) >= 1000, durable_redis.kill)
    with pytest.raises(PublishError) as caught:
        submit(grid())
    killer.join(timeout=10)
    message = caught.value.message
    sent = len(caught.value.sent)
    assert 1000 <= sent < N, message
    assert f"failed after {sent:,} of {N:,} jobs" in message and "\n" not in message
    assert "stay queued" in message and "reaper" in message
    assert counts() == (N, N, N)  # every row committed, queued, with its event

    durable_redis.start()
    survived = messages(durable_redis.url)
    # Every acknowledged batch survived the kill; a batch cut short may have partly arrived.
    assert len(survived) >= sent and len(set(survived)) == len(survived)
    summary = reaper.reap_once(lock_seconds=30, grace_seconds=0)
    assert len(summary.republished) == N - len(survived)
    with db.session_scope() as session:
        task_ids = set(session.scalars(select(Job.task_id)))
    after = messages(durable_redis.url)
    assert len(after) == N and set(after) == task_ids  # one message per job, none twice
    assert reaper.reap_once(lock_seconds=30, grace_seconds=0).republished == []
    assert broker.pending_task_ids() == task_ids


def _terminate_inserts(name: str) -> Callable[[], bool]:
    """A condition that, once an INSERT into jobs runs on database ``name``, ends its backend."""
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")

    def terminate() -> bool:
        with admin.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND query ILIKE 'INSERT INTO jobs%'"
                ),
                {"n": name},
            ).all()
        return bool(ended)

    return terminate


def test_database_gone_mid_insert_leaves_no_row_and_no_message(pg_url: str, redis_url: str) -> None:
    import redis

    name = pg_url.rsplit("/", 1)[1]
    killer = watch(_terminate_inserts(name), lambda: None)
    with pytest.raises(DatabaseError) as caught:
        submit(grid())
    killer.join(timeout=10)
    assert "\n" not in caught.value.message and name in caught.value.message
    db.dispose_engines()
    assert counts() == (0, 0, 0)  # the one transaction rolled back: not one row of 10,000
    client = redis.Redis.from_url(redis_url)
    assert broker.queue_length("lora", client) == 0 and client.hlen("unacked") == 0
    # The database back, the same grid goes in whole.
    created = submit(grid()).created
    assert len(created) == N and counts() == (N, N, N)
    assert broker.queue_length("lora", client) == N
