"""The workers table and what reads it: `ftqueue workers`, `top`, queue places, lost jobs.

The rendering tests draw made-up rows at 80 columns; the database tests write real rows;
the slow test runs two real `ftqueue worker` processes and kills one.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import update

from ftqueue import api
from ftqueue.cli import cli
from ftqueue.cli.follow import follow
from ftqueue.cli.top_cmd import frame
from ftqueue.cli.workers_cmd import workers_table
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store import workers as worker_rows
from ftqueue.store.schema import Job, utcnow
from tests.procs import WorkerProcess, child_env, submit_command, wait_for

NOW = "2026-12-04T21:30:00+00:00"


def _worker(name: str, **extra: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "state": "live",
        "host": "node-a",
        "pid": 41234,
        "supervisor_pid": 41200,
        "gpu": "0",
        "gpu_name": "NVIDIA H200",
        "gpu_memory_mb": 143771,
        "queues": ["evaluate", "lora", "predict"],
        "versions": {"ftqueue": "0.1.0", "torch": "2.6.0+cu124", "transformers": "5.2.0"},
        "job": {
            "id": 1234,
            "kind": "lora",
            "progress": {"phase": "train", "epoch": 2, "step": 23, "total": 100},
            "started_at": NOW,
            "heartbeat_age": 0.8,
            "lost": False,
        },
        "started_at": NOW,
        "last_seen_at": NOW,
        "seen_ago": 1.2,
        "refresh_seconds": 5.0,
    }
    row.update(extra)
    return row


def render(renderable: Any, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    out.print(renderable)
    return out.file.getvalue()  # type: ignore[attr-defined]


def test_the_workers_table_fits_80_columns_one_line_per_worker() -> None:
    lost = {"id": 7, "kind": "lora", "progress": {"phase": "train", "epoch": 1, "step": 3,
            "total": 10}, "started_at": NOW, "heartbeat_age": 130.0, "lost": True}  # fmt: skip
    rows = [
        _worker("gpu0@node-a"),
        _worker("gpu1@node-a", gpu="1", job=None),
        _worker("cpu0@node-b", state="gone", gpu=None, gpu_name=None, job=lost, seen_ago=95.0),
    ]
    text = render(workers_table(rows, width=80), 80)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), text
    # The columns that went are named under the table.
    table, _, note = text.partition("5 columns hidden at 80 columns: ")
    hidden = " ".join(note.split())
    assert hidden.startswith("gpu name, up, pid, queues, versions; widen the terminal"), text
    lines = [line.rstrip() for line in table.splitlines() if line.strip()]
    # A header, a rule and one line per worker: nothing wrapped onto a second line.
    assert len(lines) == 2 + len(rows), text
    assert "…" not in text
    gpu0, gpu1, cpu0 = lines[2:]
    assert gpu0.split()[:4] == ["gpu0@node-a", "live", "0", "140G"]
    assert "1234 lora ep 2 23%" in gpu0
    assert "idle" in gpu1
    assert cpu0.split()[:3] == ["cpu0@node-b", "gone", "cpu"]
    assert "7 lora lost? last heartbeat 2m10s ago" in cpu0
    # Wider, the columns that went come back.
    wide = render(workers_table(rows, width=200), 200)
    assert "41234 (41200)" in wide and "torch 2.6.0+cu124" in wide and "evaluate,lora" in wide


def _job(job_id: int, **extra: Any) -> dict[str, Any]:
    job = {
        "id": job_id, "kind": "lora", "status": "running", "worker": "gpu0@node-a",
        "progress": {"phase": "train", "epoch": 1, "step": 30, "total": 100, "loss": 0.4123,
                     "val_accuracy": None, "val_epoch": None},
        "started_at": NOW, "finished_at": None, "heartbeat_age": 1.5, "lost": False,
        "error_type": None, "error_message": None,
    }  # fmt: skip
    job.update(extra)
    return job


@pytest.mark.parametrize("width", [80, 120])
def test_a_top_frame_fits_the_terminal(width: int) -> None:
    snap = {
        "at": NOW,
        "workers": [_worker("gpu0@node-a"), _worker("gpu1@node-a", job=None)],
        "running": [_job(1234), _job(1235, lost=True, heartbeat_age=130.0)],
        "queues": [
            {"name": "evaluate", "queued": 0, "live_workers": 2},
            {"name": "lora", "queued": 12, "live_workers": 2},
            {"name": "predict", "queued": 3, "live_workers": 0},
        ],
        "failures": [
            _job(
                99,
                status="failed",
                finished_at=NOW,
                error_type="RuntimeError",
                error_message="CUDA out of memory. Tried to allocate 2.00 GiB " * 4,
            ),
        ],
    }
    text = render(frame(snap, width=width), width)
    lines = [line.rstrip() for line in text.splitlines()]
    assert all(len(line) <= width for line in lines), text
    assert "workers 2 live  running 2  queued 15" in text
    assert "gpu0@node-a" in text and "1234 lora ep 2 23%" in text
    assert "ep 1 30% loss 0.412" in text
    assert "lost? last heartbeat 2m10s ago" in text
    [lora] = [line for line in lines if line.split()[:1] == ["lora"]]
    assert lora.split() == ["lora", "12", "2"]
    # The error is one line, cut to the room there is.
    [failure] = [line for line in lines if "RuntimeError" in line]
    assert failure.split()[:2] == ["99", "lora"] and failure.endswith("…")


# --- real rows -----------------------------------------------------------------------------


def _register(name: str, *, queues: list[str], seen_ago: float = 0.0, every: float = 5.0) -> None:
    seen = utcnow() - dt.timedelta(seconds=seen_ago)
    worker_rows.register(
        name=name, host="node-a", pid=100, supervisor_pid=None, gpu=None, gpu_name=None,
        gpu_memory_mb=None, queues=queues, ftqueue_version="0.1.0", torch_version=None,
        transformers_version=None, refresh_seconds=every, started_at=seen, last_seen_at=seen,
    )  # fmt: skip


def test_rows_read_live_then_gone_then_are_forgotten(sqlite_url: str) -> None:
    _register("fresh@a", queues=["lora", "evaluate"])
    _register("late@a", queues=["lora"], seen_ago=3 * 5 + 1)
    _register("old@a", queues=["lora"], seen_ago=24 * 5 + 1)
    states = {w["name"]: w["state"] for w in api.workers()}
    assert states == {"fresh@a": "live", "late@a": "gone", "old@a": "gone"}
    assert api.workers()[0]["name"] == "fresh@a"  # live first
    assert api.live_consumers(["lora", "predict"]) == {"lora": 1, "predict": 0}
    assert worker_rows.forget_gone() == ["old@a"]
    assert sorted(w["name"] for w in api.workers()) == ["fresh@a", "late@a"]
    # A refresh by another pid under the same name does not count as this worker's.
    assert not worker_rows.refresh("fresh@a", pid=999)
    assert worker_rows.refresh("fresh@a", pid=100)


def _submit(*seeds: int) -> list[int]:
    specs = [LoraSpec(model="synthetic", data=DataSpec(dataset="movie-snippets"), seed=s)
             for s in seeds]  # fmt: skip
    return api.submit(specs).job_ids


def _show(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_queued_jobs_show_their_place_and_who_consumes_their_queue(
    sqlite_url: str, redis_url: str
) -> None:
    ids = _submit(1, 2, 3)
    assert api.job(ids[1])["queue"] == {
        "name": "lora", "position": 2, "depth": 3, "live_workers": 0
    }  # fmt: skip
    status = _show("status", str(ids[1]))
    words = " ".join(status.split())  # the name column is as wide as its longest name
    assert (
        "queue lora: 2nd of 3 queued; no live worker consumes it: start one with "
        "`ftqueue worker`" in words
    ), status
    _register("gpu0@a", queues=["lora"])
    _register("gpu1@a", queues=["lora", "evaluate"])
    _register("gone@a", queues=["lora"], seen_ago=60)
    assert "lora: 1st of 3 queued; 2 live workers consume it" in _show("show", str(ids[0]))
    listed = _show("list")
    assert "3rd of 3, 2 live workers" in listed and "1st of 3, 2 live workers" in listed


def test_a_running_job_past_its_lease_reads_as_lost(sqlite_url: str, redis_url: str) -> None:
    [job_id] = _submit(1)
    now = utcnow()
    with db.session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", attempts=1, worker="gpu0@a",
                    started_at=now - dt.timedelta(minutes=30),
                    heartbeat_at=now - dt.timedelta(seconds=130),
                    lease_expires_at=now - dt.timedelta(seconds=10))
        )  # fmt: skip
    status = _show("status", str(job_id))
    assert "heartbeat  lost? last heartbeat 2m1" in status, status
    assert "run time" not in status
    assert "lost? last heartbeat 2m1" in _show("list")
    lines = io.StringIO()
    follow([job_id], console=Console(file=lines, width=120), keep_going=lambda: False)
    assert f"job {job_id} lora: running on gpu0@a: lost? last heartbeat 2m1" in lines.getvalue()
    with db.session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=120)))  # fmt: skip
    status = _show("status", str(job_id))
    assert "lost?" not in status and "heartbeat  " in status and "run time   30m" in status


def test_submit_says_in_one_line_when_no_live_worker_consumes_the_queue(
    sqlite_url: str, redis_url: str
) -> None:
    args = ["submit", "lora", "--model", "synthetic", "--dataset", "movie-snippets"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    warning = "warning: no live worker consumes queue lora; start one with `ftqueue worker`"
    assert result.stderr.splitlines() == [warning]
    _register("gpu0@a", queues=["lora"])
    result = CliRunner().invoke(cli, [*args, "--seed", "7"])
    assert result.exit_code == 0 and result.stderr == ""


def test_wait_says_once_when_its_queued_job_has_no_live_worker(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue.cli import follow

    monkeypatch.setattr(follow, "QUEUED_CHECK_AFTER", 0.0)
    [job_id] = _submit(1)
    polls = iter(range(5))
    out = Console(file=io.StringIO(), width=120, color_system=None)
    follow.follow(
        [job_id], console=out, poll=0.05, keep_going=lambda: next(polls, None) is not None
    )
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    warning = "warning: no live worker consumes queue lora; start one with `ftqueue worker`"
    assert lines.count(warning) == 1, lines
    assert f"job {job_id} lora: queued" in lines


def test_a_worker_row_reads_versions_without_importing_torch() -> None:
    code = (
        "import sys; from ftqueue.worker import roster; "
        "row = roster.describe('cpu0@x', ['lora']); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert row['torch_version'] and row['transformers_version'] and row['ftqueue_version']; "
        "print(row['gpu'], row['gpu_name'], row['gpu_memory_mb'])"
    )
    env = child_env(CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "None"] and done.stderr == ""


def test_no_nvidia_driver_means_no_gpu_details_and_no_noise() -> None:
    from ftqueue.worker.roster import gpu_info

    # On a machine with NVIDIA GPUs, index 0 has a name and memory; elsewhere None, quietly.
    name, memory = gpu_info("0")
    assert (name is None) == (memory is None)
    assert gpu_info("GPU-00000000-0000-0000-0000-000000000000") == (None, None)
    assert gpu_info(None) == (None, None)


# --- real workers --------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftqueue", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
def test_two_real_workers_their_jobs_and_one_killed(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = child_env(FTQUEUE_WORKER_REFRESH="1", COLUMNS="80")
    host = socket.gethostname()
    started = [
        WorkerProcess(name, env=env, log_dir=tmp_path, queues="lora").start()
        for name in ("alpha", "beta")
    ]
    beta = started[1]
    try:
        for worker in started:
            worker.wait_ready(timeout=180)

        def live() -> set[str]:
            return {w["name"] for w in api.workers() if w["state"] == "live"}

        wait_for(lambda: live() == {f"alpha0@{host}", f"beta0@{host}"}, timeout=30,
                 what="both workers registered")  # fmt: skip

        # Two long jobs, one on each worker; lora has consumers, so no warning.
        submitted = _cli(*submit_command("synthetic:seconds=60", "--seed", "1,2")[3:], env=env)
        assert submitted.returncode == 0, submitted.stderr
        assert "no live worker" not in submitted.stderr
        ids = [job["id"] for job in json.loads(submitted.stdout)["jobs"]]
        wait_for(lambda: {w["job"]["id"] for w in api.workers() if w["job"]} == set(ids),
                 timeout=60, what="each worker running a job")  # fmt: skip

        rows = {w["name"]: w for w in api.workers()}
        assert rows[f"beta0@{host}"]["supervisor_pid"] == beta.proc.pid  # type: ignore[union-attr]
        # The shared queue, and the queue of its GPU class (cpu where no GPU is visible).
        cls = rows[f"alpha0@{host}"]["gpu_class"]
        assert cls and rows[f"alpha0@{host}"]["queues"] == sorted(["lora", f"lora.{cls}"])
        assert rows[f"alpha0@{host}"]["versions"]["ftqueue"]
        table = _cli("workers", env=env)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), table.stdout
        for name in ("alpha", "beta"):
            [line] = [line for line in lines if line.startswith(f" {name}0@")]
            assert " live " in line and any(f" {i} lora " in line for i in ids), table.stdout

        frame_text = _cli("top", "--once", env=env)
        assert frame_text.returncode == 0, frame_text.stderr
        assert all(len(line) <= 80 for line in frame_text.stdout.splitlines())
        assert f"alpha0@{host}" in frame_text.stdout and "running" in frame_text.stdout
        assert any(line.split()[:2] == [str(ids[0]), "lora"]
                   for line in frame_text.stdout.splitlines()), frame_text.stdout  # fmt: skip

        # A queue no worker reads: one line that names it and the command to start one.
        evaluate = _cli("submit", "evaluate", "--model", "synthetic", "--dataset",
                        "movie-snippets", env=env)  # fmt: skip
        assert evaluate.returncode == 0, evaluate.stderr
        assert evaluate.stderr.splitlines() == [
            "warning: no live worker consumes queue evaluate; start one with `ftqueue worker`"
        ]

        # Killed outright, beta leaves its row: it reads as gone, then alpha deletes it.
        beta.kill(signal.SIGKILL)
        beta_name = f"beta0@{host}"
        wait_for(lambda: {w["name"]: w["state"] for w in api.workers()}.get(beta_name) == "gone",
                 timeout=15, what="beta to read as gone")  # fmt: skip
        assert live() == {f"alpha0@{host}"}
        wait_for(lambda: beta_name not in {w["name"] for w in api.workers()},
                 timeout=60, what="beta's row to age out", poll=0.5)  # fmt: skip
        api.cancel(ids)
    finally:
        for worker in started:
            worker.stop()
    # A clean stop deletes the worker's own row.
    wait_for(lambda: not api.workers(), timeout=30, what="alpha's row removed at its stop")
