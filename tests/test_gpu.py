"""The GPU path end to end (marker ``gpu``): skipped where CUDA is not available.

On a GPU machine (bench/gpu_check.sh runs these): the supervisor finds the GPU with
nvidia-smi and starts one worker on it with CUDA_VISIBLE_DEVICES set; real minilm LoRA jobs
go through Redis and that worker with the GPU defaults, bf16 autocast and the fused optimizer;
a real CUDA out-of-memory (an absurd batch of long texts) fails its job at once with the hint,
and the worker runs the next job with the memory given back.

``FTQUEUE_GPU_CHECK_CPU=1`` runs the same tests on a CPU, with a stand-in nvidia-smi and no
out-of-memory job: a dry run of the GPU check's plumbing, not a GPU test.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ftqueue.kinds.lora import LoraSpec, device_recipe
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job
from ftqueue.submit.submission import submit
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


CUDA = _cuda()
DRY_RUN = not CUDA and os.environ.get("FTQUEUE_GPU_CHECK_CPU", "") == "1"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not (CUDA or DRY_RUN), reason="needs a CUDA GPU"),
]
#: Where the GPU check collects what these tests measured (peak memory per job).
RESULTS = os.environ.get("FTQUEUE_GPU_CHECK_RESULTS")
TRAIN_ROWS = 2000 if CUDA else 48


@pytest.fixture
def gpu_env(sqlite_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = child_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)  # the supervisor must find the GPU itself
    if DRY_RUN:
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "nvidia-smi").write_text("#!/bin/sh\necho 0\n")
        (fake / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{fake}:{env['PATH']}"
    return env


@pytest.fixture
def gpu_worker(gpu_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess("gpucheck", env=gpu_env, log_dir=tmp_path).start()
    try:
        yield worker.wait_ready(timeout=180)
    finally:
        worker.stop()


def _long_texts(path: Path, rows: int, words: int) -> None:
    path.write_text("text,label\n" + "".join(f"{'good ' * words},{i % 2}\n" for i in range(rows)))


def _job(job_id: int) -> Job:
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_supervisor_runs_one_worker_on_the_gpu_and_jobs_use_the_gpu_recipe(
    gpu_worker: WorkerProcess, tmp_path: Path
) -> None:
    host = socket.gethostname()
    assert f"starting 1 GPU worker(s): gpucheck0@{host}" in gpu_worker.log()
    assert gpu_worker.proc is not None
    children = psutil.Process(gpu_worker.proc.pid).children(recursive=True)
    celery = [p for p in children if "celery" in " ".join(p.cmdline())]
    assert celery, gpu_worker.log()[-2000:]
    assert {p.environ().get("CUDA_VISIBLE_DEVICES") for p in celery} == {"0"}

    data = DataSpec(dataset="movie-snippets", train_samples=TRAIN_ROWS, eval_samples=200)
    first = LoraSpec(model="minilm", data=data, epochs=1, seed=1)
    absurd_file = tmp_path / "long.csv"
    small = tmp_path / "small.csv"
    _long_texts(absurd_file, 8192, 600)
    _long_texts(small, 16, 600)
    absurd = LoraSpec(
        model="minilm",
        data=DataSpec(dataset=f"train={absurd_file},validation={small},test={small}"),
        epochs=1,
        batch_size=8192,
        max_length=512,
    )
    second = LoraSpec(model="minilm", data=data, epochs=1, seed=2)
    specs = [first, absurd, second] if CUDA else [first, second]
    ids = [job.id for job in submit(specs).created]
    wait_for(lambda: all_terminal(ids), timeout=600, what="the GPU jobs to end")
    jobs = [_job(i) for i in ids]
    expected = ["succeeded", "failed", "succeeded"] if CUDA else ["succeeded", "succeeded"]
    assert [statuses([i])[i] for i in ids] == expected, gpu_worker.log()[-3000:]
    a, c = jobs[0], jobs[-1]
    recipe = device_recipe("cuda" if CUDA else "cpu")
    for job in (a, c):
        stats = job.stats or {}
        assert stats["device"] in (("cuda", "cuda:0") if CUDA else ("cpu",))
        assert job.worker is not None and job.worker.startswith("gpucheck0@")
        if CUDA:
            assert stats["dtype"] == "bfloat16"
            assert stats["fused_optimizer"] is True
            assert stats["peak_cuda_mb"] > 0
            assert stats["fixed_shapes"] is True  # the GPU default
            assert stats["attention"] == "sdpa"
            assert job.spec.get("batch_size") in (None, recipe["batch_size"])
    if CUDA:
        oom = jobs[1]
        assert oom.error_type == "CudaOutOfMemory"
        assert "lower --batch-size or --max-length" in (oom.error_message or "")
        assert oom.attempts == 1  # failed at once, not retried
        peaks = [float((j.stats or {})["peak_cuda_mb"]) for j in (a, c)]
        assert abs(peaks[1] - peaks[0]) <= 0.10 * peaks[0], peaks
        # What the out-of-memory job grabbed was given back before the next job started.
        reserved = float((c.stats or {})["cuda_reserved_at_start_mb"])
        assert reserved <= 2 * peaks[0], reserved
    if RESULTS:
        out = {
            "jobs": [
                {
                    "id": j.id,
                    "status": statuses([j.id])[j.id],
                    "worker": j.worker,
                    "error_type": j.error_type,
                    "error_message": j.error_message,
                    "samples_per_second": j.samples_per_second,
                    "stats": {
                        k: (j.stats or {}).get(k)
                        for k in (
                            "device", "dtype", "fused_optimizer", "peak_cuda_mb",
                            "cuda_reserved_at_start_mb", "train_seconds", "batch_size",
                        )
                    },
                }
                for j in jobs
            ]
        }  # fmt: skip
        Path(RESULTS).mkdir(parents=True, exist_ok=True)
        (Path(RESULTS) / "gpu_tests.json").write_text(json.dumps(out, indent=2, default=str))
