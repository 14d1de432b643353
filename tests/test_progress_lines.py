"""Progress without a terminal: `submit --wait` and `status --follow` piped into a file.

Real `ftqueue` processes with stdout on a pipe run a synthetic two-epoch job; each line is
timed as it arrives. A running job gets a line at each phase and epoch (with the step, the
training loss and the validation accuracy the job records) and at least every
FTQUEUE_PROGRESS_EVERY seconds in between.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ftqueue.store import db
from ftqueue.store.schema import Result
from tests.procs import child_env, wait_for

pytestmark = pytest.mark.slow

EVERY = 1
SLOW = "synthetic:seconds=6,steps=60"


class Timed:
    """A process whose stdout lines are kept with the time each arrived."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ftqueue", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _validation(job_id: int) -> dict[int, float]:
    with db.session_scope() as session:
        rows = session.execute(
            select(Result.epoch, Result.accuracy).where(
                Result.job_id == job_id, Result.split == "validation"
            )
        )
        return dict(rows.all())  # type: ignore[arg-type]


def _check_running_lines(lines: list[tuple[float, str]], job_id: int) -> None:
    running = [(t, line) for t, line in lines if f"job {job_id} lora: running" in line]
    assert len(running) >= 4, lines
    # Never silent for long while the job runs: the gaps stay near FTQUEUE_PROGRESS_EVERY.
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(running)]
    assert max(gaps) < EVERY + 1.5, gaps
    accuracy = _validation(job_id)
    assert sorted(accuracy) == [1, 2]
    # The end of epoch 1, with the step, the loss and the accuracy the job recorded for it,
    # printed once it is known (not only when the line is due).
    first = f"; epoch 1 val acc {accuracy[1]:.4f}"
    ended = [(t, line) for t, line in running if first in line]
    assert ended, lines
    assert "step " in ended[0][1] and "/60" in ended[0][1] and " loss 0." in ended[0][1]
    assert any("train epoch 2 step" in line for _, line in running)
    assert any("train epoch 1 step" in line for _, line in running)
    # Epoch 2's accuracy: while it runs, or on the last line if it ended first.
    last = f"; epoch 2 val acc {accuracy[2]:.4f}"
    assert any(last in line for _, line in lines), lines


def test_submit_wait_without_a_terminal(sqlite_url: str) -> None:
    env = child_env(FTQUEUE_EAGER="1", FTQUEUE_PROGRESS_EVERY=str(EVERY))
    args = ["submit", "lora", "--model", SLOW, "--dataset", "movie-snippets", "--epochs", "2"]
    proc = Timed([*args, "--wait"], env)
    assert proc.wait() == 0, proc.text()
    text = proc.text()
    assert "\x1b[" not in text  # plain text, no terminal codes
    _check_running_lines(proc.lines, 1)
    assert "job 1 lora: succeeded; epoch 2 val acc" in text


def test_status_follow_without_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    env = child_env(FTQUEUE_EAGER="1", FTQUEUE_PROGRESS_EVERY=str(EVERY))
    runner = subprocess.Popen(
        [sys.executable, "-m", "ftqueue", "submit", "lora", "--model", SLOW,
         "--dataset", "movie-snippets", "--epochs", "2"],
        env=env, stdout=(tmp_path / "submit.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: _exists(1), timeout=60, what="the job's row")
        follower = Timed(["status", "1", "--follow"], env)
        assert follower.wait() == 0, follower.text()
    finally:
        runner.wait(timeout=120)
    _check_running_lines(follower.lines, 1)
    assert "job 1 lora: succeeded; epoch 2 val acc" in follower.text()


def _exists(job_id: int) -> bool:
    from ftqueue.store.schema import Job

    try:
        with db.session_scope() as session:
            return session.get(Job, job_id) is not None
    except Exception:
        return False
