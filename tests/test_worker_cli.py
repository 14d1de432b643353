"""`ftqueue worker`'s plan: one process per GPU, cores split between CPU workers, no CUDA here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ftqueue.celery_app import celery_config
from ftqueue.cli import cli
from ftqueue.settings import load_settings
from ftqueue.supervisor import detect_gpus, plan_slots


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
        "import sys, ftqueue.supervisor, ftqueue.reaper, ftqueue.tasks, ftqueue.cli.worker_cmd; "
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
