"""Worker names are unique, and no live, heart-beating attempt is ever superseded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ftqueue.errors import NameTaken
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store.schema import Job
from ftqueue.submit.submission import submit
from ftqueue.worker import nodes
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for


@pytest.fixture
def pool() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.mark.slow
def test_a_second_worker_with_a_live_workers_name_refuses_to_start(
    pg_url: str, redis_url: str, pool: list[WorkerProcess], tmp_path: Path
) -> None:
    # A visibility timeout below the job's length re-delivers its message while it runs.
    env = child_env(FTQUEUE_VISIBILITY_TIMEOUT="2", FTQUEUE_LEASE_SECONDS="10")
    first = WorkerProcess("dup", env=env, log_dir=tmp_path).start()
    pool.append(first)
    first.wait_ready()
    spec = LoraSpec(
        model="synthetic:seconds=6,steps=12", data=DataSpec(dataset="movie-snippets"), seed=1
    )
    [job] = submit([spec]).created
    wait_for(lambda: statuses([job.id])[job.id] == "running", timeout=30, what="the job to run")

    # `ftqueue worker` checks before it starts anything ...
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "ftqueue", "worker", "--name", "dup"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    node = f"dup0@{socket.gethostname()}"
    assert second.returncode == 1, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"Error: a worker named {node} is already running (pid {_holder_pid(redis_url, node)} "
        f"on {socket.gethostname()}, started {_holder_since(redis_url, node)}): stop it, or "
        "start this one with another --name."
    ]
    refused_after = time.monotonic() - started
    assert refused_after < nodes.LEASE_SECONDS
    # ... and a Celery worker started directly under that name refuses too.
    direct = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "ftqueue.queue.app:app", "worker",
         "--hostname", node, "--pool", "solo"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert direct.returncode == nodes.NAME_TAKEN_EXIT
    assert f"a worker named {node} is already running" in direct.stderr

    wait_for(lambda: all_terminal([job.id]), timeout=60, what="the job to end")
    received = f"Task ftqueue.lora[{job.task_id}] received"
    wait_for(lambda: first.log().count(received) >= 2, timeout=20, what="a second delivery")
    with _session() as session:
        row = session.get(Job, job.id)
        assert row is not None and (row.status, row.attempts) == ("succeeded", 1)

    # A worker killed outright leaves its lease behind; a restart on this host takes it at once.
    first.kill(signal.SIGKILL)
    assert redis.Redis.from_url(redis_url).exists(nodes.KEY_PREFIX + node)
    started = time.monotonic()
    restarted = WorkerProcess("dup", env=env, log_dir=tmp_path / "again")
    (tmp_path / "again").mkdir()
    pool.append(restarted.start().wait_ready())
    ready_after = time.monotonic() - started
    assert ready_after < nodes.LEASE_SECONDS
    print(f"second worker refused after {refused_after:.1f}s; restart after kill -9 ready "
          f"after {ready_after:.1f}s")  # fmt: skip


def _session():  # type: ignore[no-untyped-def]
    from ftqueue.store import db

    return db.session_scope()


def _holder(redis_url: str, node: str) -> nodes.Holder:
    raw = redis.Redis.from_url(redis_url).get(nodes.KEY_PREFIX + node)
    holder = nodes.Holder.decode(raw or b"")
    assert holder is not None
    return holder


def _holder_pid(redis_url: str, node: str) -> int:
    return _holder(redis_url, node).pid


def _holder_since(redis_url: str, node: str) -> str:
    return _holder(redis_url, node).describe().rsplit("started ", 1)[1]


def test_lease_of_a_dead_local_process_is_cleared_at_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = nodes.Holder(socket.gethostname(), dead.pid, time.time() - 5).encode()
    client.set(nodes.KEY_PREFIX + "w@h", stale, px=60_000)
    lease = nodes.NodeLease(client, "w@h")
    started = time.monotonic()
    lease.acquire()
    assert time.monotonic() - started < 10  # at once, not after the 60 s lease runs out
    assert nodes.Holder.decode(client.get(lease.key) or b"") == nodes.Holder.me()
    lease.release()
    assert not client.exists(lease.key)


def test_a_renewing_holder_keeps_its_name_and_a_silent_one_loses_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    live = nodes.NodeLease(client, "busy@h", lease_seconds=1.5)
    live.acquire()
    live.start_renewing()
    try:
        with pytest.raises(NameTaken, match="busy@h is already running"):
            nodes.NodeLease(client, "busy@h", lease_seconds=1.5).acquire()
    finally:
        live.release()
    # A holder on another machine that stopped renewing: its lease lapses, then it is taken.
    gone = json.dumps({"host": "elsewhere", "pid": 1, "started": 0.0})
    client.set(nodes.KEY_PREFIX + "quiet@h", gone, px=1500)
    lease = nodes.NodeLease(client, "quiet@h", lease_seconds=1.5)
    started = time.monotonic()
    lease.acquire()
    assert 0.5 < time.monotonic() - started < 10
    lease.release()
