"""Real worker processes for integration tests: started with `ftqueue worker`, killed for real.

The worker and subprocess helpers are the pytest plugin's (ftqueue/testing); the rest reads
the test's database.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ftqueue.core.states import TERMINAL
from ftqueue.store import db
from ftqueue.store.schema import Job
from ftqueue.testing import service_missing
from ftqueue.testing.workers import WorkerProcess, child_env, wait_for

__all__ = [
    "PrivateRedis",
    "WorkerProcess",
    "all_terminal",
    "child_env",
    "count_jobs",
    "running_workers",
    "statuses",
    "submit_command",
    "wait_for",
]


def statuses(job_ids: Iterable[int]) -> dict[int, str]:
    with db.session_scope() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(list(job_ids))))
        return dict(rows.all())  # type: ignore[arg-type]


def all_terminal(job_ids: Iterable[int]) -> bool:
    ids = list(job_ids)
    found = statuses(ids)
    return len(found) == len(ids) and all(s in TERMINAL for s in found.values())


def count_jobs(**filters: object) -> int:
    with db.session_scope() as session:
        query = select(func.count()).select_from(Job)
        for key, value in filters.items():
            query = query.where(getattr(Job, key) == value)
        return int(session.scalar(query) or 0)


def submit_command(model: str, *extra: str) -> list[str]:
    """`ftqueue submit lora --json` on movie-snippets, as a subprocess command line."""
    return [sys.executable, "-m", "ftqueue", "submit", "lora", "--model", model,
            "--dataset", "movie-snippets", "--json", *extra]  # fmt: skip


class PrivateRedis:
    """A Redis server of the test's own, to kill and restart without disturbing anything else.

    ``durable``: every acknowledged write is on disk before the reply (appendfsync always), so
    a kill loses nothing that was acknowledged; otherwise a restart starts empty.
    """

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        if shutil.which("redis-server") is None:
            service_missing("redis-server (a private Redis to kill)", "not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else [
            "--appendonly", "no"
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *persistence, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, timeout=20, what="the private Redis to start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running_workers(
    names: Iterable[str], *, env: dict[str, str], log_dir: Path
) -> Iterator[list[WorkerProcess]]:
    """Real `ftqueue worker` processes, all started before any is awaited, stopped at the end."""
    started = [WorkerProcess(name, env=env, log_dir=log_dir).start() for name in names]
    try:
        for worker in started:
            # Cold starts share the cores with each other's imports: allow for a slow one.
            worker.wait_ready(timeout=180)
        yield started
    finally:
        for worker in started:
            worker.stop()


def read_only_dir(path: Path, request: pytest.FixtureRequest) -> Path:
    """A new directory this process cannot write into: mode 555, or for root (whom modes do
    not stop) the immutable attribute, taken off again when the test ends."""
    import os

    path.mkdir()
    path.chmod(0o555)
    request.addfinalizer(lambda: path.chmod(0o755))
    if os.access(path, os.W_OK):
        if shutil.which("chattr") is None:
            pytest.skip("running as root, and no chattr to make a directory read-only")
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)], check=False))
    assert not os.access(path, os.W_OK)
    return path
