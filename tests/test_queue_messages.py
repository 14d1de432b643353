"""The messages `submit` publishes without Celery's send_task: what send_task wrote, field for
field, on the queue and priority list kombu would pick; run by a real worker; and a submit
that imports none of Celery, Alembic or the training stack."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.specs import DataSpec
from ftqueue.store.schema import Job
from ftqueue.submit.submission import submit
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for

PRIORITY_SEP = "\x06\x16"


def grid(n: int, offset: int = 0) -> list[LoraSpec]:
    data = DataSpec(dataset="movie-snippets")
    return [LoraSpec(model="synthetic:seconds=0", data=data, seed=offset + i) for i in range(n)]


def lists(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every Redis list of the database, by key, its messages parsed, oldest first."""
    import redis

    client = redis.Redis.from_url(url)
    out = {}
    for key in client.keys("*"):
        if client.type(key) == b"list":
            out[key.decode()] = [json.loads(m) for m in reversed(client.lrange(key, 0, -1))]
    return out


def send_task_message(job: Job, **options: Any) -> dict[str, Any]:
    """The message Celery's own send_task writes for ``job``, read back from Redis."""
    import redis

    from ftqueue.kinds import registry
    from ftqueue.queue.app import app

    client = redis.Redis.from_url(app.conf.broker_url)
    kind = registry.lookup(job.kind)
    before = set(client.keys("*"))
    app.send_task(
        kind.task_name,
        (job.id,),
        task_id=job.task_id,
        time_limit=None,
        soft_time_limit=None,
        argsrepr=broker.argsrepr(job),
        kwargsrepr="{}",
        **options,
    )
    keys = [k for k in client.keys("*") if client.type(k) == b"list" and client.llen(k)]
    assert len(keys) == 1, (keys, before)
    raw = client.rpop(keys[0])
    assert raw is not None
    message: dict[str, Any] = json.loads(raw)
    message["_key"] = keys[0].decode()
    return message


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """A message without what differs between any two publishes (the delivery tag, the
    reply address), with its body decoded."""
    out = json.loads(json.dumps(message))
    out["properties"].pop("delivery_tag")
    out["properties"].pop("reply_to")
    out["body"] = json.loads(base64.b64decode(out["body"]))
    return out


def test_template_messages_are_what_send_task_writes(sqlite_url: str, redis_url: str) -> None:
    import redis

    sub = submit(grid(3))
    ours = lists(redis_url)
    normal = f"lora{PRIORITY_SEP}3"  # a submit's default priority: normal
    assert list(ours) == [normal] and len(ours[normal]) == 3
    redis.Redis.from_url(redis_url).delete(normal)
    for job, message in zip(sub.created, ours[normal], strict=True):
        theirs = send_task_message(job, priority=3)
        assert theirs.pop("_key") == normal
        assert comparable(message) == comparable(theirs)
        assert message["headers"]["id"] == job.task_id
        assert comparable(message)["body"][0] == [job.id]
    # Each message its own delivery tag: kombu keys the unacknowledged ones by it.
    assert len({m["properties"]["delivery_tag"] for m in ours[normal]}) == 3


@pytest.mark.parametrize(("priority", "suffix"), [(0, ""), (2, ""), (3, "3"), (5, "3"), (9, "9")])
def test_a_priority_goes_where_kombu_puts_it(
    sqlite_url: str, redis_url: str, priority: int, suffix: str
) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    (job,) = submit(grid(1)).created
    client.delete(*broker.queue_keys("lora"))
    broker.publish([job], priority=lambda _: priority)
    ((key, [ours]),) = lists(redis_url).items()
    client.delete(key)
    theirs = send_task_message(job, priority=priority)
    assert key == theirs.pop("_key") == ("lora" + (PRIORITY_SEP + suffix if suffix else ""))
    assert comparable(ours) == comparable(theirs)
    assert ours["properties"]["priority"] == priority


def test_a_queue_other_than_the_kinds(sqlite_url: str, redis_url: str) -> None:
    import redis

    (job,) = submit(grid(1)).created
    redis.Redis.from_url(redis_url).delete(*broker.queue_keys("lora"))
    assert broker.publish([job], queue=lambda _: "lora.h200", priority=lambda _: 7) == [job.id]
    ((key, [message]),) = lists(redis_url).items()
    assert key == f"lora.h200{PRIORITY_SEP}6"
    assert message["properties"]["delivery_info"]["routing_key"] == "lora.h200"
    assert message["headers"]["task"] == "ftqueue.lora"
    assert job.task_id in broker.pending_task_ids(["lora.h200"])


@pytest.mark.slow
def test_a_real_worker_runs_template_messages_of_every_priority(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    import redis

    sub = submit(grid(4))
    ids = [job.id for job in sub.created]
    client = redis.Redis.from_url(redis_url)
    client.delete(*broker.queue_keys("lora"))
    priority = dict(zip(ids, (0, 3, 6, 9), strict=True))
    broker.publish(sub.created, priority=lambda job: priority[job.id])
    assert sorted(lists(redis_url)) == ["lora", *(f"lora{PRIORITY_SEP}{p}" for p in (3, 6, 9))]
    worker = WorkerProcess("tmpl", env=child_env(), log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        wait_for(lambda: all_terminal(ids), timeout=60, what="4 jobs to end")
        assert set(statuses(ids).values()) == {"succeeded"}
        wait_for(lambda: not broker.pending_task_ids(), timeout=30, what="every message acked")
    finally:
        worker.stop()


def test_submit_imports_no_celery_alembic_or_training(sqlite_url: str, redis_url: str) -> None:
    """`ftqueue submit` publishes and checks the schema without Celery, kombu or Alembic, and
    never touches the training stack: imports are most of a small submit's time."""
    script = (
        "import json, sys\n"
        "sys.argv = ['ftqueue', 'submit', 'lora', '--model', 'synthetic:seconds=0',"
        " '--dataset', 'movie-snippets', '--seed', '0..2', '--json']\n"
        "from ftqueue.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    env = child_env() | {"FTQUEUE_EAGER": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["jobs"]) == 3
    modules = json.loads(done.stderr.strip().splitlines()[-1])
    banned = ("torch", "transformers", "datasets", "peft", "celery", "kombu", "alembic",
              "ftqueue.training", "ftqueue.worker", "ftqueue.execution")  # fmt: skip
    assert [m for m in modules if m.split(".")[0] in banned or m.startswith(banned)] == []
    assert "ftqueue.queue.broker" in modules and "ftqueue.queue.app" not in modules
    assert broker.queue_length("lora") == 3


def test_task_ids_are_read_from_every_form_of_message(sqlite_url: str, redis_url: str) -> None:
    """The scan's quick read of a message's task id agrees with parsing it, and falls back to
    parsing where the quick read could be fooled."""
    import redis

    from ftqueue.queue.broker import _message_task_id

    client = redis.Redis.from_url(redis_url)
    (job,) = submit(grid(1)).created
    ours = client.lrange(broker.queue_key("lora", 3), 0, -1)[0]
    client.delete(*broker.queue_keys("lora"))
    theirs = json.dumps(send_task_message(job)).encode()
    unacked = json.dumps([json.loads(ours), "", "lora"]).encode()
    compact = json.dumps(json.loads(ours), separators=(",", ":")).encode()
    twice = json.loads(ours)
    twice["headers"]["stamps"] = {"id": "not-the-task"}
    for raw in (ours, theirs, unacked, compact, json.dumps(twice).encode(), ours.decode()):
        assert _message_task_id(raw) == job.task_id, raw[:80]
    assert _message_task_id(b'{"headers": {"id": "\\u0041"}}') == "A"
    assert _message_task_id(b"[1, 2, 3]") is None and _message_task_id(b"\xff") is None


@given(label=st.text(max_size=80), task_id=st.text(min_size=1, max_size=70))
def test_a_rendered_message_is_the_json_of_its_parts_for_any_label_and_id(
    label: str, task_id: str
) -> None:
    # The template writes plain text between quotes itself and leaves the rest to json.dumps.
    raw = broker.MessageTemplate("ftqueue.lora", "lora", priority=3).render(
        job_id=7, task_id=task_id, argsrepr=label, delivery_tag="tag"
    )
    message = json.loads(raw)
    assert message["headers"]["argsrepr"] == label
    assert message["headers"]["id"] == task_id
    assert message["properties"]["correlation_id"] == task_id
