"""`ftqueue worker`'s plan: one process per GPU, cores split between CPU workers, no CUDA here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.queue.app import celery_config
from ftqueue.settings import load_settings
from ftqueue.worker.supervisor import detect_gpus, plan_slots
from tests.procs import WorkerProcess, child_env


def test_one_process_per_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert detect_gpus() == ["0", "2"]
    slots = plan_slots(detect_gpus(), processes=1, prefix=None)
    assert [s.name.split("@")[0] for s in slots] == ["gpu0", "gpu2"]
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "2"]
    assert all("--concurrency" in s.command(["lora"], "INFO") for s in slots)


def test_cpu_workers_see_no_gpu_and_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    slots = plan_slots([], processes=2, prefix="box")
    assert [s.name.split("@")[0] for s in slots] == ["box0", "box1"]
    env = slots[0].env()
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert int(env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 2)


def test_the_supervisor_never_imports_torch() -> None:
    code = (
        "import sys, ftqueue.worker.supervisor, ftqueue.worker.reaper, ftqueue.worker.tasks, "
        "ftqueue.cli.worker_cmd; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_celery_settings_keep_messages_safe() -> None:
    conf = celery_config(load_settings({"FTQUEUE_TIME_LIMIT": "3600"}))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] > conf["task_time_limit"]
    assert conf["task_soft_time_limit"] < conf["task_time_limit"] == 3600


def test_worker_refuses_unknown_queue_and_missing_gpu(
    sqlite_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(cli, ["worker", "--queues", "lora,bogus"])
    assert result.exit_code == 2 and "bogus" in result.output
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    result = CliRunner().invoke(cli, ["worker", "--gpus", "3"])
    assert result.exit_code == 2 and "not visible" in result.output


def test_worker_with_redis_down_says_so(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftqueue.settings import reset_settings

    monkeypatch.setenv("FTQUEUE_BROKER_URL", "redis://127.0.0.1:1/0")
    reset_settings()
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 1 and "127.0.0.1:1" in result.output


# --- several GPUs without GPUs: a stand-in nvidia-smi ---------------------------------------


def fake_nvidia_smi(directory: Path, gpus: int) -> str:
    """A PATH with an nvidia-smi that answers the supervisor's query like a machine with
    ``gpus`` GPUs (and refuses any other query, so a changed query shows up here)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    indices = "\\n".join(str(i) for i in range(gpus))
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=index" ] && [ "$2" = "--format=csv,noheader" ]; then\n'
        f'  printf "{indices}\\n"; exit 0\n'
        "fi\n"
        'echo "unexpected query: $*" >&2; exit 9\n'
    )
    script.chmod(0o755)
    return f"{directory}:{os.environ['PATH']}"


def test_a_stand_in_nvidia_smi_with_4_gpus_gives_4_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", 4))
    assert detect_gpus() == ["0", "1", "2", "3"]
    slots = plan_slots(detect_gpus(), processes=3, prefix="node")
    assert [s.name.split("@")[0] for s in slots] == ["node0", "node1", "node2", "node3"]
    assert [s.env()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2", "3"]
    # CUDA_VISIBLE_DEVICES, when set, wins over what nvidia-smi lists (a container's share).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_gpus() == ["2", "3"]


def test_worker_gpus_without_a_gpu_refuses_in_one_line(
    sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", 0))
    result = CliRunner().invoke(cli, ["worker", "--gpus", "0"])
    assert result.exit_code == 2, result.output
    assert "none is visible here" in result.output and "starting" not in result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error")]
    assert "leave --gpus out" in line
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "four", 4))
    result = CliRunner().invoke(cli, ["worker", "--gpus", "1,7"])
    assert result.exit_code == 2 and "GPU(s) 7 not visible (visible: 0, 1, 2, 3)" in result.output


@pytest.mark.slow
def test_worker_starts_one_process_per_stand_in_gpu(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """`ftqueue worker` on a machine whose nvidia-smi lists 4 GPUs: 4 Celery processes, each
    seeing its own GPU, named after it (the processes never touch CUDA until a job runs)."""
    env = child_env(PATH=fake_nvidia_smi(tmp_path / "bin", 4))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    worker = WorkerProcess("quad", env=env, log_dir=tmp_path, processes=4).start()
    try:
        worker.wait_ready(timeout=240)
        host = socket.gethostname()
        names = [f"quad{i}@{host}" for i in range(4)]
        assert f"starting 4 GPU worker(s): {', '.join(names)}" in worker.log()
        assert worker.proc is not None
        celery = [
            p
            for p in psutil.Process(worker.proc.pid).children()
            if "celery" in " ".join(p.cmdline())
        ]
        seen = {p.cmdline()[p.cmdline().index("--hostname") + 1]: p.environ() for p in celery}
        assert sorted(seen) == names
        assert [seen[n]["CUDA_VISIBLE_DEVICES"] for n in names] == ["0", "1", "2", "3"]
    finally:
        worker.stop()
