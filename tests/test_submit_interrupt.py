"""Ctrl-C while a 10,000-job submit publishes: the command says how many jobs were committed
and how many messages published, that the reaper publishes the rest, and exits 130; the
reaper then publishes exactly the missing messages."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import redis

from ftqueue.queue import broker
from ftqueue.worker import reaper
from tests.procs import child_env, count_jobs

N = 10_000
_WITH_CTRL_C = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from ftqueue.cli import main; main()"
)


@pytest.mark.slow
@pytest.mark.redis
def test_ctrl_c_mid_publish_says_what_was_committed_and_published(
    sqlite_url: str, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    # `ftqueue`, with Ctrl-C raising KeyboardInterrupt as at a terminal: a process started in
    # the background (a CI step, `cmd &`) inherits SIGINT ignored, and so would this one.
    command = [
        sys.executable, "-c", _WITH_CTRL_C, "submit", "lora", "--model", "synthetic:seconds=0",
        "--dataset", "movie-snippets", "--seed", f"0..{N - 1}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=child_env(FTQUEUE_EAGER="0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # Ctrl-C once the first batches are out, as a person would press it mid-publish. The
        # rest of a 10,000-job publish takes a tenth of a second: Redis holds every write
        # (CLIENT PAUSE ... WRITE) for 2 s from the moment 500 messages are in, so the signal
        # lands mid-publish. Not longer: a signal the process takes only once its read
        # returns must not meet the client's 10 s socket timeout first.
        while broker.queue_length("lora", client) < 500:
            assert proc.poll() is None, proc.communicate()
        client.client_pause(2_000, all=False)
        try:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            client.client_unpause()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode()
    assert proc.returncode == 130, (out, text)
    assert "Aborted!" not in text and "Traceback" not in text, text
    found = re.search(
        r"Interrupted: 10,000 jobs were committed \(ids 1-10000\) and ([\d,]+) of their messages "
        r"published; the other ([\d,]+) stay queued and a worker's reaper publishes them",
        text,
    )
    assert found, text
    sent, rest = (int(group.replace(",", "")) for group in found.groups())
    # "Published" counts the batches Redis acknowledged: the signal can land while the client
    # reads a batch's replies, after Redis has taken it (the test waited for 500 to arrive),
    # so the count may stay below what arrived, never above it.
    assert 0 <= sent < N and sent + rest == N, text
    assert len(text.strip().splitlines()) == 1, text
    print(f"\n{text.strip()}")
    assert count_jobs() == N and count_jobs(status="queued") == N
    # Each batch acknowledged went out; a batch cut short may have partly arrived as well.
    arrived = broker.queue_length("lora", client)
    assert 500 <= arrived < N and sent <= arrived
    summary = reaper.reap_once(lock_seconds=30, grace_seconds=0)
    assert len(summary.republished) == N - arrived
    assert broker.queue_length("lora", client) == N
