"""Notifications (FTQUEUE_NOTIFY) reach a real HTTP receiver on loopback, once per event.

The receiver is an `http.server` the test starts; Apprise posts to it through its
``json://`` URL, as it would to any webhook. Nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from ftqueue import api, notify
from ftqueue.cli import cli
from ftqueue.errors import FtqueueError
from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.settings import load_settings, reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db, lifecycle
from ftqueue.store.schema import Job, Notification, Sweep
from ftqueue.sweeps import sweepfile, trials
from ftqueue.testing import FtqueueEnv, synthetic_model
from ftqueue.worker import reaper
from tests.procs import all_terminal, child_env, running_workers, statuses, wait_for

DATA = DataSpec(dataset="movie-snippets")
QUICK = synthetic_model(seconds=0.05, steps=2)
FAILING = synthetic_model(seconds=0.05, steps=2, fault="raise")


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        received = self.received = []
        lock = self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def notify_to(monkeypatch: pytest.MonkeyPatch, url: str, on: str = "") -> None:
    monkeypatch.setenv("FTQUEUE_NOTIFY", url)
    if on:
        monkeypatch.setenv("FTQUEUE_NOTIFY_ON", on)
    reset_settings()


def outbox() -> list[tuple[str, int | None, str | None, bool, str | None]]:
    with db.session_scope() as session:
        rows = session.scalars(select(Notification).order_by(Notification.id))
        return [(n.event, n.job_id, n.sweep_id, n.claimed_at is not None, n.error) for n in rows]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_job_that_fails_for_good_sends_one_message(
    ftqueue_env: FtqueueEnv, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify_to(monkeypatch, receiver.url)
    failed = api.submit(LoraSpec(model=FAILING, data=DATA)).job_ids[0]
    api.submit(LoraSpec(model=QUICK, data=DATA))  # succeeded: not sent by default
    [message] = receiver.messages()
    assert message["title"] == f"ftqueue: job {failed} failed"
    assert message["type"] == "failure"
    assert "RuntimeError: synthetic failure" in message["message"]
    assert f"ftqueue show {failed}" in message["message"]
    assert outbox() == [("failed", failed, None, True, None)]
    assert notify.flush() == 0  # taken once: a second flush sends nothing
    assert len(receiver.messages()) == 1


def test_notify_on_adds_succeeded_and_cancelled(
    ftqueue_env: FtqueueEnv, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify_to(monkeypatch, receiver.url, on="succeeded, cancelled")
    done = api.submit(LoraSpec(model=QUICK, data=DATA, seed=1)).job_ids[0]
    held = api.submit(LoraSpec(model=QUICK, data=DATA, seed=2), run=False).job_ids[0]
    api.cancel(held)
    assert receiver.titles() == [f"ftqueue: job {done} succeeded", f"ftqueue: job {held} cancelled"]
    assert "test accuracy" in receiver.messages()[0]["message"]


def sweep_file(tmp_path: Path, name: str, **overrides: object) -> Path:
    raw: dict[str, object] = {
        "name": name,
        "model": "synthetic:seconds=0.05,steps=6",
        "dataset": "movie-snippets",
        "fixed": {"epochs": 3},
        "space": {"lr": [1e-4, 3e-4, 1e-3], "r": [4, 8]},
        "method": "grid",
        "budget": {"max_parallel": 2},
        "early_stopping": {"eta": 2, "rungs": [1, 2]},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw | overrides))
    return path


def test_a_sweep_that_ends_sends_one_message_with_its_best_configuration(
    ftqueue_env: FtqueueEnv, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notify_to(monkeypatch, receiver.url)
    result = CliRunner().invoke(cli, ["sweep", str(sweep_file(tmp_path, "s1"))])
    assert result.exit_code == 0, result.output
    [message] = receiver.messages()
    assert message["title"] == "ftqueue: sweep s1 done" and message["type"] == "success"
    body = message["message"].splitlines()
    # The report's own lines: the best configuration reads the same in both.
    report = CliRunner().invoke(cli, ["report", "--sweep", "s1", "--format", "table"]).output
    best = next(line for line in body if line.startswith("best: job"))
    assert "lr=" in best and "r=" in best and best in report
    assert any(line.startswith("early stopping saved ") for line in body), body
    assert body[-1] == "ftqueue report --sweep s1"
    with db.session_scope() as session:
        sweep = session.get(Sweep, "s1")
        assert sweep is not None and sweep.ended_at is not None
    assert [row[0] for row in outbox()] == ["sweep-done"]
    assert trials.end_if_finished("s1") is False  # the end is decided once
    assert notify.flush() == 0 and len(receiver.messages()) == 1


def test_a_cancelled_sweep_is_sent_when_asked_for(
    ftqueue_env: FtqueueEnv, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notify_to(monkeypatch, receiver.url, on="sweep-cancelled")
    # Held by this process and not run: cancelling queued trials ends the sweep at once.
    trials.start_sweep(sweepfile.load(sweep_file(tmp_path, "c1")))
    api.stop_sweep(sweep_id="c1")
    api.cancel([], sweep="c1")
    assert receiver.titles() == ["ftqueue: sweep c1 cancelled"]
    assert "2 cancelled" in receiver.messages()[0]["message"]


def test_the_reaper_sends_what_a_process_left_unsent(
    ftqueue_env: FtqueueEnv,
    ftqueue_redis: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A process that died after its commit, before its send: the reaper's pass sends the
    events it wrote, and ends the sweep whose end it did not see."""
    notify_to(monkeypatch, receiver.url, on="cancelled, sweep-cancelled")
    started = trials.start_sweep(sweepfile.load(sweep_file(tmp_path, "orphan")))
    trials.stop("orphan")
    # The store's transition alone: what `cancel` commits before it sends, then dies.
    lifecycle.cancel([job.id for job in started.created])
    assert receiver.messages() == []
    assert [row[0] for row in outbox()] == ["cancelled", "cancelled"]
    summary = reaper.reap_once()
    assert summary.ended == ["orphan"]
    assert sorted(receiver.titles()) == sorted(
        [f"ftqueue: job {job.id} cancelled" for job in started.created]
        + ["ftqueue: sweep orphan cancelled"]
    )
    reaper.reap_once()
    assert len(receiver.messages()) == 3


def test_a_receiver_that_is_down_is_one_warning_and_the_jobs_end_as_they_would(
    ftqueue_env: FtqueueEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    notify_to(monkeypatch, f"json://ftq:hunter22@127.0.0.1:{closed_port()}/hook", on="succeeded")
    with caplog.at_level(logging.WARNING):
        failed = api.submit(LoraSpec(model=FAILING, data=DATA)).job_ids[0]
        done = api.submit(LoraSpec(model=QUICK, data=DATA)).job_ids[0]
    assert api.states(failed)[failed].status == "failed"
    assert api.states(done)[done].status == "succeeded"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith(("ftqueue.notify", "apprise"))
    ]
    assert len(warnings) == 2, warnings  # one per notification, none from Apprise itself
    assert all("not sent" in w and "json://ftq:****@127.0.0.1:" in w for w in warnings), warnings
    assert "hunter22" not in caplog.text
    rows = outbox()
    assert [r[:2] for r in rows] == [("failed", failed), ("succeeded", done)]
    assert all(claimed and error and "hunter22" not in error for *_, claimed, error in rows)


def test_nothing_is_written_without_notify(ftqueue_env: FtqueueEnv) -> None:
    api.submit(LoraSpec(model=FAILING, data=DATA))
    assert outbox() == []


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FTQUEUE_NOTIFY": "slakc://Tsecret/Bsecret/Csecret"}, "FTQUEUE_NOTIFY: 'slakc://...'"),
        ({"FTQUEUE_NOTIFY": "json://127.0.0.1/ nonsense"}, "is not a URL Apprise knows"),
        ({"FTQUEUE_NOTIFY_ON": "succeeded,finished"}, "'finished' is no event: use any of"),
    ],
)
def test_a_bad_notify_value_is_refused_in_one_line(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(FtqueueError) as err:
        load_settings(env)
    assert fragment in err.value.message and "secret" not in err.value.message
    result = subprocess.run(
        [sys.executable, "-m", "ftqueue", "list"],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and fragment in result.stderr
    assert "secret" not in result.stderr


def test_urls_split_on_commas_and_spaces() -> None:
    settings = load_settings({"FTQUEUE_NOTIFY": "json://a:1/x,  ntfy://topic\njson://b:2/y"})
    assert settings.notify == ("json://a:1/x", "ntfy://topic", "json://b:2/y")
    assert settings.notify_on == {"failed", "sweep-done"}


@pytest.mark.slow
def test_two_workers_and_redeliveries_send_one_message_per_event(
    pg_url: str,
    redis_url: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("FTQUEUE_LEASE_SECONDS", "3")
    monkeypatch.setenv("FTQUEUE_MAX_ATTEMPTS", "2")
    notify_to(monkeypatch, receiver.url, on="succeeded")
    with running_workers(("n1", "n2"), env=child_env(), log_dir=tmp_path) as workers:
        [failed] = api.submit(LoraSpec(model=FAILING, data=DATA)).job_ids
        # Its first attempt's process dies: the job runs again and succeeds.
        [again] = api.submit(
            LoraSpec(model=synthetic_model(0.5, 4, fault="crash-first"), data=DATA)
        ).job_ids
        # Every attempt dies: the reapers of both workers and the redelivered messages race to
        # fail it out of attempts; one of them does.
        [lost] = api.submit(
            LoraSpec(model=synthetic_model(0.5, 4, fault="crash"), data=DATA)
        ).job_ids
        path = sweep_file(tmp_path, "multi", model="synthetic:seconds=0.3,steps=6")
        trials.start_sweep(sweepfile.load(path))

        def log() -> str:
            return "\n".join(w.log()[-3000:] for w in workers)

        try:
            wait_for(
                lambda: all_terminal([failed, again, lost]) and trials.finished("multi"),
                timeout=240,
                what="the jobs and the sweep to end",
                poll=0.5,
            )
            ended = statuses([failed, again, lost])
            assert ended == {failed: "failed", again: "succeeded", lost: "failed"}, ended
            succeeded = [
                job_id for job_id, s in trials.job_statuses("multi").items() if s == "succeeded"
            ]
            expected = Counter(
                [f"ftqueue: job {failed} failed", f"ftqueue: job {lost} failed"]
                + [f"ftqueue: job {job_id} succeeded" for job_id in [again, *succeeded]]
                + ["ftqueue: sweep multi done"]
            )
            wait_for(
                lambda: len(receiver.messages()) >= sum(expected.values()),
                timeout=60,
                what="every notification",
            )
            # A redelivered message of an ended job sends nothing more, nor do later passes of
            # the reapers (every lease / 2).
            with db.session_scope() as session:
                broker.publish([session.get(Job, failed), session.get(Job, lost)])
            wait_for(lambda: not broker.pending_task_ids(), timeout=60, what="messages consumed")
            time.sleep(6)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{receiver.titles()}\n{log()}") from None
    assert Counter(receiver.titles()) == expected, log()
    assert len(outbox()) == sum(expected.values())
    assert all(claimed and error is None for *_, claimed, error in outbox())
