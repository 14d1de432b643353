"""A GPU is one worker's on its host, whatever the names: a host-wide claim per GPU, held for
the worker's life and dropped by the kernel when it dies; a second worker asking for the same
GPU is refused in one line (exit 2), or waits with --wait-for-gpu."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftqueue.errors import GpuTaken
from ftqueue.settings import reset_settings
from ftqueue.testing.workers import end_group
from ftqueue.worker import gpuclaim
from tests.procs import WorkerProcess, child_env, wait_for

HOLD = (
    "import sys, time; from ftqueue.worker import gpuclaim; "
    "gpuclaim.claim([(sys.argv[1], 'holder@test')]); print('claimed', flush=True); "
    "time.sleep(60)"
)


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "gpu-locks"
    monkeypatch.setenv("FTQUEUE_GPU_LOCK_DIR", str(directory))
    reset_settings()
    return directory


def hold(gpu: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, gpu], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"claimed"
    return proc


def test_a_gpu_held_by_another_process_is_refused_until_that_process_dies(
    lock_dir: Path,
) -> None:
    holder = hold("0")
    try:
        with pytest.raises(GpuTaken) as info:
            gpuclaim.claim([("0", "other@test")])
        message = info.value.message
        assert message.startswith("GPU 0 is already claimed by another worker on this host")
        assert f"pid {holder.pid}, holder@test" in message and "--wait-for-gpu" in message
        assert info.value.exit_code == 2
        gpuclaim.claim([("1", "other@test")])  # another GPU is free
        holder.kill()  # no clean-up: the kernel drops the lock with the process
        holder.wait()
        gpuclaim.claim([("0", "other@test")])
    finally:
        holder.kill()
        for key in list(gpuclaim._HELD):
            gpuclaim.release(key)


def test_a_refusal_releases_the_gpus_claimed_before_it(lock_dir: Path) -> None:
    holder = hold("1")
    try:
        with pytest.raises(GpuTaken):
            gpuclaim.claim([("0", "w0@test"), ("1", "w1@test")])
        assert not gpuclaim._HELD
        other = hold("0")  # GPU 0 was let go again
        other.kill()
    finally:
        holder.kill()


def test_waiting_for_a_gpu_takes_it_when_its_holder_ends(lock_dir: Path) -> None:
    holder = hold("0")
    said: list[str] = []
    try:
        killer = subprocess.Popen(
            [sys.executable, "-c", f"import os, time; time.sleep(1); os.kill({holder.pid}, 9)"]
        )
        started = time.monotonic()
        gpuclaim.claim([("0", "waiter@test")], wait=True, on_wait=said.append)
        assert time.monotonic() - started >= 0.5
        assert said and said[0].startswith("waiting for GPU 0, claimed by another worker")
        killer.wait()
    finally:
        holder.kill()
        for key in list(gpuclaim._HELD):
            gpuclaim.release(key)


def test_uuid_and_index_name_the_same_claim(lock_dir: Path) -> None:
    uuids = {"0": "GPU-8c3e2a"}
    assert gpuclaim.key_of("0", uuids) == gpuclaim.key_of("GPU-8c3e2a", uuids) == "GPU-8c3e2a"
    assert gpuclaim.key_of("../x", {}) == ".._x"


@pytest.mark.slow
@pytest.mark.redis
def test_two_workers_with_different_names_cannot_share_a_gpu(
    pg_url: str, redis_url: str, lock_dir: Path, tmp_path: Path
) -> None:
    # No GPU needed: the claim is keyed by the index the worker is given.
    env = child_env(CUDA_VISIBLE_DEVICES="0")
    first = WorkerProcess("left", env=env, log_dir=tmp_path).start()
    waiting: subprocess.Popen[bytes] | None = None
    try:
        first.wait_ready()
        command = [sys.executable, "-m", "ftqueue", "worker", "--name", "right"]
        refused = subprocess.run(command, env=env, capture_output=True, timeout=60)
        assert refused.returncode == 2, refused
        err = refused.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "GPU 0 is already claimed" in err, err
        assert "left0@" in err, err
        # Asked to wait, it starts once the first worker is gone, killed with -9.
        log = tmp_path / "waiting.log"
        with log.open("wb") as out:
            waiting = subprocess.Popen(
                [*command, "--wait-for-gpu"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: "waiting for GPU 0" in log.read_text(), timeout=60, what="the wait")
        assert waiting.poll() is None
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGKILL)
        wait_for(lambda: " ready." in log.read_text(), timeout=60, what="the waiting worker")
    finally:
        if waiting is not None:
            end_group(waiting)  # its own group: its workers too
        first.stop()
