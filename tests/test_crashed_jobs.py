"""Work a worker cannot hold fails once, with its reason: a job whose process aborts (a native
crash) or is killed by the OOM killer is failed at once, not re-queued until out of attempts."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ftqueue.cli import cli
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job, JobEvent
from ftqueue.submit.submission import submit
from ftqueue.worker import crashes
from tests.procs import WorkerProcess, all_terminal, child_env, wait_for


def test_a_native_crash_signal_is_the_jobs_doing() -> None:
    crash = crashes.classify(signal.SIGABRT, oom_before=(0,), oom_after=(0,))
    assert crash is not None and crash.error_type == "Crashed"
    assert crash.message("tokenize").startswith("killed by signal 6 (SIGABRT) in the tokenizer;")
    segv = crashes.classify(signal.SIGSEGV, oom_before=(), oom_after=())
    assert segv is not None and "SIGSEGV" in segv.reason


def test_a_sigkill_is_out_of_memory_only_when_an_oom_kill_was_counted() -> None:
    assert crashes.classify(signal.SIGKILL, oom_before=(3, 7), oom_after=(3, 7)) is None
    oom = crashes.classify(signal.SIGKILL, oom_before=(3, 7), oom_after=(3, 8))
    assert oom is not None and oom.error_type == "OutOfMemory"
    assert "out of memory" in oom.message("train") and "in training" in oom.message("train")
    # Counts that cannot be compared (none read when the job started) prove nothing.
    assert crashes.classify(signal.SIGKILL, oom_before=(), oom_after=(1,)) is None
    assert crashes.classify(signal.SIGTERM, oom_before=(0,), oom_after=(1,)) is None
    assert crashes.classify(None, oom_before=(0,), oom_after=(1,)) is None


def test_billiards_worker_lost_text_gives_the_signal() -> None:
    text = "Worker exited prematurely: signal 6 (SIGABRT) Job: 0."
    assert crashes.signal_number(text) == 6
    assert crashes.signal_number("Worker exited prematurely: exitcode 1 Job: 0.") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's counters")
def test_this_hosts_oom_kill_counts_are_read() -> None:
    # /proc/vmstat has counted OOM kills since Linux 4.13; the cgroup's count comes first.
    counts = crashes.oom_kills()
    assert counts and all(isinstance(c, int) and c >= 0 for c in counts)


@pytest.fixture
def worker(
    pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[WorkerProcess]:
    monkeypatch.setenv("FTQUEUE_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "120")
    reset_settings()
    w = WorkerProcess("crash", env=child_env(), log_dir=tmp_path).start()
    try:
        yield w.wait_ready()
    finally:
        w.stop()


def spec(model: str, seed: int = 0) -> LoraSpec:
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), epochs=1, seed=seed)


@pytest.mark.slow
@pytest.mark.redis
def test_a_job_whose_process_aborts_fails_once_with_the_reason(worker: WorkerProcess) -> None:
    (job,) = submit([spec("synthetic:seconds=0.2,steps=2,fault=abort")]).created
    (after,) = submit([spec("synthetic:seconds=0.2,steps=2", seed=1)]).created
    wait_for(lambda: all_terminal([job.id, after.id]), timeout=90, what="both jobs to end")
    with db.session_scope() as session:
        row = session.get(Job, job.id)
        assert row is not None
        status, attempts, error_type, message = (
            row.status,
            row.attempts,
            row.error_type,
            row.error_message or "",
        )
        requeues = session.scalars(
            select(JobEvent.detail).where(
                JobEvent.job_id == job.id, JobEvent.detail.like("re-queued%")
            )
        ).all()
        next_status = session.get(Job, after.id).status  # type: ignore[union-attr]
    assert (status, attempts, error_type) == ("failed", 1, "Crashed"), (status, attempts, message)
    assert message.startswith("killed by signal 6 (SIGABRT) in the tokenizer; not retried"), message
    assert not requeues, requeues
    # The worker goes on with the next job, in a new pool process.
    assert next_status == "succeeded"
    shown = CliRunner().invoke(cli, ["show", str(job.id)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "Crashed: killed by signal 6 (SIGABRT) in the tokenizer" in " ".join(
        shown.output.split()
    ), shown.output
    assert f"crash0@{socket.gethostname()}" in worker.log()


def _memory_cgroup(tmp_name: str) -> Path:
    """A new cgroup v1 memory group below this process's own, or a skip where none can be made."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, where = line.split(":", 2)
        if "memory" in controllers.split(","):
            group = Path("/sys/fs/cgroup/memory", where.lstrip("/"), tmp_name)
            try:
                group.mkdir()
            except OSError as exc:
                pytest.skip(f"cannot make a memory cgroup here: {exc}")
            return group
    pytest.skip("no cgroup v1 memory controller here")


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_a_job_killed_by_the_oom_killer_fails_once_as_out_of_memory(
    pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FTQUEUE_MAX_ATTEMPTS", "3")
    reset_settings()
    group = _memory_cgroup(f"ftqueue-oom-{os.getpid()}")
    # The worker runs inside the group: its pool process is the one the OOM killer picks.
    enter = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group)]
    w = WorkerProcess("oom", env=child_env(), log_dir=tmp_path, prefix=enter).start()
    try:
        w.wait_ready()
        time.sleep(5)  # the pool process's warm-up imports
        usage = int((group / "memory.usage_in_bytes").read_text())
        (group / "memory.limit_in_bytes").write_text(str(usage + 512 * 1024**2))
        (job,) = submit([spec("synthetic:seconds=0.2,steps=2,fault=memory")]).created
        wait_for(lambda: all_terminal([job.id]), timeout=90, what="the job to end")
        with db.session_scope() as session:
            row = session.get(Job, job.id)
            assert row is not None
            found = (row.status, row.attempts, row.error_type, row.error_message or "")
        oom_kills = (group / "memory.oom_control").read_text()
    finally:
        w.stop()
        w.kill()
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    assert "oom_kill 1" in oom_kills, oom_kills
    assert found[:3] == ("failed", 1, "OutOfMemory"), found
    assert found[3].startswith("out of memory (killed by the kernel's OOM killer) in training")
