"""Real `ftqueue worker` processes for tests: started as a user would, killed for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftqueue import kinds

#: Workers started and not yet stopped: a wait that times out shows the ends of their logs.
_RUNNING: list[WorkerProcess] = []


class WorkerProcess:
    """`ftqueue worker` in its own process group, so a kill reaches its Celery children too."""

    def __init__(
        self,
        name: str,
        *,
        env: dict[str, str],
        log_dir: Path,
        processes: int = 1,
        queues: str | None = None,
        prefix: Sequence[str] = (),
        gpu_class: str | None = None,
    ) -> None:
        self.name = name
        #: Runs the worker inside something, e.g. `ip netns exec HOST` for a test host.
        self.prefix = list(prefix)
        self.env = env
        self.log_path = log_dir / f"worker-{name}.log"
        self.processes = processes
        self.queues = queues or ",".join(kinds.queues())
        #: Its `--class` (None: the class its GPU's name gives, or cpu).
        self.gpu_class = gpu_class
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "ftqueue",
                "worker",
                "--name",
                self.name,
                "--processes",
                str(self.processes),
                "--queues",
                self.queues,
                "--loglevel",
                "info",
                *(["--class", self.gpu_class] if self.gpu_class else []),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _RUNNING.append(self)
        return self

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        """Wait until every Celery node of this worker logged that it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            if text.count(" ready.") >= self.processes:
                return self
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{text[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (supervisor, Celery main process, pool children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None:
            end_group(self.proc)
        if self in _RUNNING:
            _RUNNING.remove(self)


def end_group(proc: subprocess.Popen[Any], *, grace: float = 20) -> None:
    """End a process started in a group of its own (``start_new_session``) and its children:
    SIGTERM to the group, then SIGKILL to whatever is left after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def child_env(**extra: str) -> dict[str, str]:
    """The test's FTQUEUE_* settings (set by fixtures) plus extras, for a subprocess."""
    env = {k: v for k, v in os.environ.items()}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    logs = "".join(
        f"\n--- the end of worker {w.name}'s log ---\n{w.log()[-2500:]}" for w in _RUNNING
    )
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{logs}")
