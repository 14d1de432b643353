"""Worker processes end with their supervisor: `kill -9` of `ftqueue worker` leaves no Celery
process or pool process behind, and a worker under the same name starts at once and takes
the dead one's job back without waiting for its lease."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, lifecycle
from ftqueue.store.schema import Job, JobEvent
from ftqueue.submit.submission import submit
from ftqueue.worker import lifeline
from tests.procs import WorkerProcess, all_terminal, child_env, wait_for


def test_a_child_bound_to_its_parent_ends_when_the_parent_is_killed() -> None:
    # parent: starts a grandchild that binds itself to it, prints its pid, then sleeps.
    grandchild = (
        "import os, time; from ftqueue.worker import lifeline; "
        "lifeline.bind(os.getppid()); print('bound', flush=True); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], stdout=subprocess.PIPE); "
        "print(p.pid, flush=True); print(p.stdout.readline().decode().strip(), flush=True); "
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    child = psutil.Process(int(proc.stdout.readline()))
    try:
        assert proc.stdout.readline().strip() == b"bound"
        proc.kill()
        proc.wait()
        child.wait(timeout=5)  # psutil.TimeoutExpired if it outlived its parent
    finally:
        if child.is_running():
            child.kill()


def test_the_kernel_is_asked_on_linux() -> None:
    assert lifeline.ask_kernel(0) is sys.platform.startswith("linux")  # 0: clear it again


def until_dead(procs: list[psutil.Process], *, timeout: float) -> dict[int, float]:
    """Seconds until each process ended (a zombie counts: it runs no more), polled each 5 ms."""
    started = time.monotonic()
    ended: dict[int, float] = {}
    while len(ended) < len(procs) and time.monotonic() - started < timeout:
        for proc in procs:
            if proc.pid in ended:
                continue
            try:
                dead = proc.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                dead = True
            if dead:
                ended[proc.pid] = time.monotonic() - started
        time.sleep(0.005)
    return ended


def long_job() -> LoraSpec:
    return LoraSpec(
        model="synthetic:seconds=600,steps=600",
        data=DataSpec(dataset="movie-snippets"),
        epochs=1,
        seed=7,
    )


def running(job_id: int) -> tuple[str, int, str | None]:
    with db.session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row.status, row.attempts, row.worker


@pytest.mark.slow
@pytest.mark.redis
def test_kill_9_of_the_supervisor_leaves_no_worker_process_and_the_name_is_free(
    pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A lease far longer than the test: the job comes back because the name was taken again.
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "300")
    reset_settings()
    first = WorkerProcess("orphan", env=child_env(), log_dir=tmp_path).start()
    second = WorkerProcess("orphan", env=child_env(), log_dir=tmp_path / "again")
    (tmp_path / "again").mkdir()
    left: list[psutil.Process] = []
    try:
        first.wait_ready()
        (job,) = submit([long_job()]).created
        wait_for(lambda: running(job.id)[0] == "running", timeout=60, what="the job to run")
        assert first.proc is not None
        supervisor = psutil.Process(first.proc.pid)
        descendants = supervisor.children(recursive=True)
        assert len(descendants) >= 2, descendants  # the Celery process and its pool process
        os.kill(first.proc.pid, signal.SIGKILL)  # the supervisor alone, not its group
        first.proc.wait()
        ended = until_dead(descendants, timeout=5)
        left = [p for p in descendants if p.pid not in ended]
        assert not left, [(p.pid, p.cmdline()[:4]) for p in left]
        seen = ", ".join(f"{s:.3f}s" for s in sorted(ended.values()))
        print(f"\n{len(ended)} descendants of the supervisor dead after its kill -9: {seen}")
        # The same name starts again at once, and the job it had is re-queued and run again.
        second.start().wait_ready(timeout=60)
        name = f"orphan0@{socket.gethostname()}"
        wait_for(
            lambda: running(job.id) == ("running", 2, name), timeout=60, what="the next attempt"
        )
        with db.session_scope() as session:
            details = session.scalars(
                select(JobEvent.detail).where(JobEvent.job_id == job.id)
            ).all()
        assert any("the worker process before this one" in d for d in details), details
        lifecycle.cancel([job.id])
        wait_for(lambda: all_terminal([job.id]), timeout=60, what="the cancelled job to end")
    finally:
        for proc in left:
            proc.kill()
        second.stop()
        first.stop()


def test_a_live_process_that_is_not_the_parent_is_not_bound_to() -> None:
    # The supervisor's pid came from an inherited variable: this process must not end itself.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    code = (
        "import os, sys, time; from ftqueue.worker import lifeline; "
        "lifeline.bind(int(sys.argv[1]), interval=0.05); time.sleep(0.5); print('alive')"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(stranger.pid)], capture_output=True, timeout=60
        )
    finally:
        stranger.kill()
    assert done.returncode == 0 and done.stdout.strip() == b"alive", done
