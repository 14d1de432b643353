"""Each attempt's log and a failed attempt's traceback, kept in the database for every machine.

`ftqueue logs` in another process with another FTQUEUE_HOME (as on another machine) prints a
failed job's traceback; secrets are redacted before anything is stored; an attempt keeps
only its last 2 MB; `--follow` prints a running job's lines until it ends.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from ftqueue import api
from ftqueue.execution import logcapture
from ftqueue.execution.redaction import redact
from ftqueue.kinds import synthetic
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store import logs
from tests.procs import WorkerProcess, child_env, wait_for


def spec(seconds: float, *, fault: str = "none", seed: int = 0) -> LoraSpec:
    model = synthetic.model_name(seconds, steps=4, fault=fault)
    return LoraSpec(model=model, data=DataSpec(dataset="movie-snippets"), epochs=1, seed=seed)


def elsewhere(tmp_path: Path) -> dict[str, str]:
    """This test's database, seen from a machine with a home, artifacts and cache of its own."""
    home = tmp_path / "other-machine"
    home.mkdir(exist_ok=True)
    env = child_env(FTQUEUE_HOME=str(home))
    for name in ("FTQUEUE_ARTIFACTS_DIR", "FTQUEUE_CACHE_DIR", "FTQUEUE_EAGER"):
        env.pop(name, None)
    return env


def ftqueue(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_logs_prints_a_failed_jobs_traceback_on_another_machine(eager: str, tmp_path: Path) -> None:
    (job,) = api.submit(spec(0.1, fault="raise")).created
    assert api.job(job.id)["status"] == "failed"

    out = ftqueue(elsewhere(tmp_path), "logs", str(job.id))
    assert out.returncode == 0, out.stderr
    assert "Traceback (most recent call last)" in out.stdout
    assert "RuntimeError: synthetic failure requested by the job's model string" in out.stdout
    assert f"job {job.id} failed" in out.stdout

    shown = json.loads(ftqueue(elsewhere(tmp_path), "show", str(job.id), "--json").stdout)
    assert shown["traceback"].startswith("Traceback (most recent call last)")
    assert (
        shown["traceback"]
        .rstrip()
        .endswith("synthetic failure requested by the job's model string")
    )


def test_an_attempt_number_out_of_range_is_one_line(eager: str, tmp_path: Path) -> None:
    (job,) = api.submit(spec(0.05, fault="raise")).created
    out = ftqueue(elsewhere(tmp_path), "logs", str(job.id), "--attempt", "2")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        f"Error: job {job.id} has 1 attempt(s): give --attempt from 1 to 1, or leave it out "
        "for the latest."
    ]


def test_an_attempt_that_stored_nothing_says_so(eager: str, tmp_path: Path) -> None:
    """An eager job keeps only warnings and errors; a quiet success prints why it is empty."""
    (job,) = api.submit(spec(0.05)).created
    out = ftqueue(elsewhere(tmp_path), "logs", str(job.id))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert out.stderr.strip() == f"job {job.id} attempt 1 stored no log lines."


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("broker redis://:s3cretpw@cache.internal:6379/0 is down", "s3cretpw"),
        ("database postgresql+psycopg://ft:pgpass123@db.internal/ftq", "pgpass123"),
        ("hub token hf_AbCdEfGhIjKlMnOpQrStUv rejected", "AbCdEfGhIjKlMnOpQrStUv"),
        ("headers {'Authorization': 'Bearer eyJhbGciOi.abc.def'}", "eyJhbGciOi.abc.def"),
        ("Authorization: Bearer tok_1234567890abcdef", "tok_1234567890abcdef"),
        ("HF_TOKEN=abcdef123456 set", "abcdef123456"),
        ('{"password": "hunter2hunter2"}', "hunter2hunter2"),
    ],
)
def test_secrets_are_redacted(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert "***" in redact(line)


def test_ordinary_lines_are_left_alone() -> None:
    for line in (
        "job 3: epoch 1: step 4/4, train loss 0.6931, validation accuracy 0.5000",
        "max_tokens=128 num_tokens: 12 http://127.0.0.1:5000/api",
        "postgresql://ft@db.internal/ftq",
    ):
        assert redact(line) == line


def test_lines_are_stored_redacted_in_batches_and_bounded(eager: str) -> None:
    (job,) = api.submit(spec(0.01)).created
    say = logging.getLogger("ftqueue.test.attempt")
    say.setLevel(logging.INFO)
    with logcapture.captured(job.id, 9) as handler:
        handler.limit = 20_000
        say.info("connecting to redis://:s3cretpw@cache.internal:6379/0")
        handler.write_batch()
        for i in range(2000):
            say.info("line %05d %s", i, "x" * 40)
            if i % 200 == 199:
                handler.write_batch()
    stored = logs.read(job.id, 9)
    text = "".join(stored.batches)
    assert "s3cretpw" not in text
    # The oldest batches went; the last lines stayed, within the bound.
    assert stored.dropped > 0 and "redis://" not in text
    assert "line 01999" in text and len(text.encode()) <= 20_000
    # Batches, not a write per line.
    assert stored.last_seq <= 12


@pytest.mark.slow
@pytest.mark.redis
def test_follow_prints_a_running_jobs_lines_until_it_ends(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    worker = WorkerProcess("logs", env=child_env(), log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        job, failing = api.submit([spec(4, seed=1), spec(0.2, fault="raise", seed=2)]).created
        failed = failing.id
        wait_for(lambda: api.job(job.id)["status"] != "queued", timeout=60, what="the job to start")
        out = ftqueue(elsewhere(tmp_path), "logs", str(job.id), "--follow")
        assert out.returncode == 0, out.stderr
        assert api.job(job.id)["status"] == "succeeded"
        assert f"job {job.id}: attempt 1 on logs0@" in out.stdout
        assert f"job {job.id}: succeeded" in out.stdout
        wait_for(lambda: api.job(failed)["status"] == "failed", timeout=60, what="the failure")
        out = ftqueue(elsewhere(tmp_path), "logs", str(failed))
        assert "RuntimeError: synthetic failure requested" in out.stdout, out.stdout
    finally:
        worker.stop()
