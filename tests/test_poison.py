"""Poison messages: any bytes on a queue are set aside in one line, and workers go on.

Garbage goes onto the kombu Redis lists with a raw LPUSH, the way a careless script or a
hostile client would put it there, at two real worker processes; real (synthetic) jobs then
run through the same workers.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection

from ftqueue.kinds.lora import LoraSpec
from ftqueue.queue import broker
from ftqueue.specs import DataSpec
from ftqueue.submit.submission import submit
from ftqueue.worker import poison
from ftqueue.worker.tasks import MAX_JOB_ID, job_id_of
from tests.procs import WorkerProcess, all_terminal, child_env, statuses, wait_for

SET_ASIDE = "set aside a message"


def envelope(
    body: str, headers: object, *, content_type: str = "application/json", **props: object
) -> bytes:
    """A kombu Redis envelope as the transport stores it, with a base64 body."""
    properties = {
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
        "delivery_info": {"exchange": "", "routing_key": "lora"},
        "priority": 0,
        "delivery_mode": 2,
        **props,
    }
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": headers,
            "properties": properties,
        }
    ).encode()


def task_headers(task: str = "ftqueue.lora", **extra: object) -> dict[str, object]:
    headers: dict[str, object] = {"lang": "py", "task": task, "id": str(uuid.uuid4())}
    headers.update(extra)
    return {k: v for k, v in headers.items() if v is not None}


def task_body(*args: object) -> str:
    return json.dumps([list(args), {}, {"callbacks": None, "errbacks": None}])


#: Each kind of garbage, by what is wrong with it.
GARBAGE: dict[str, bytes] = {
    "not JSON": b"not json at all",
    "a JSON list": b"[1,2,3]",
    "invalid UTF-8": b"\xff\xfe\x00\x81garbage",
    "an empty object": b"{}",
    "a JSON type tag kombu cannot decode": b'{"__type__": "datetime", "__value__": "x"}',
    "a bad base64 body": json.dumps(
        {
            "body": "!!!not base64!!!",
            "headers": {"task": "ftqueue.lora"},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": "t",
                "delivery_info": {"exchange": "", "routing_key": "lora"},
            },
        }
    ).encode(),
    "no delivery_info": json.dumps({"body": "", "properties": {"delivery_tag": "t"}}).encode(),
    "an unknown body encoding": envelope(task_body(1), task_headers(), body_encoding="rot13"),
    "no task name": envelope(task_body(1), {}),
    "headers that are a list": envelope(task_body(1), [1, 2]),
    "an unknown task": envelope(task_body(1), task_headers("ftqueue.nope")),
    "no task id": envelope(task_body(1), task_headers(id=None)),
    "a body that is not JSON": envelope("{{{{", task_headers()),
    "a body that is not [args, kwargs, embed]": envelope('"x"', task_headers()),
    "pickle": envelope("garbage", task_headers(), content_type="application/x-python-serialize"),
    "a bad expires header": envelope(task_body(1), task_headers(expires="garbage")),
    "a job id that is text": envelope(task_body("abc"), task_headers()),
    "a job id out of range": envelope(task_body(2**40), task_headers()),
    "no job id": envelope(task_body(), task_headers()),
    "two job ids": envelope(task_body(1, 2), task_headers()),
}
#: Garbage that names a job that simply does not exist: dropped with one line, not set aside.
MISSING_JOB = envelope(task_body(987654), task_headers())
#: A message-carried time limit Celery only fails on after taking the worker's one slot.
BAD_TIME_LIMIT = envelope(task_body(987655), task_headers(timelimit="garbage"))


@pytest.fixture
def workers(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    env = child_env(FTQUEUE_LEASE_SECONDS="4")
    pair = [WorkerProcess(name, env=env, log_dir=tmp_path).start() for name in ("p", "q")]
    try:
        for worker in pair:
            worker.wait_ready()
        yield pair
    finally:
        for worker in pair:
            worker.stop()


def spec(seed: int) -> LoraSpec:
    return LoraSpec(
        model="synthetic:seconds=0.3,steps=3", data=DataSpec(dataset="movie-snippets"), seed=seed
    )


@pytest.mark.slow
def test_two_workers_survive_a_dozen_kinds_of_garbage_then_run_jobs(
    workers: list[WorkerProcess], redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    # Spread over both job queues and a priority list, as kombu's BRPOP reads all of them.
    keys = ["lora", "evaluate", "lora\x06\x163"]
    for i, raw in enumerate(GARBAGE.values()):
        client.lpush(keys[i % len(keys)], raw)
    client.lpush("lora", MISSING_JOB, BAD_TIME_LIMIT)
    # Remote control is a fan-out channel every worker reads: garbage there reaches both.
    with Connection(redis_url) as conn:
        pidbox = f"/{conn.virtual_host}.celery.pidbox"
    # A publish reaches only those subscribed at that moment, and a worker may be ready for
    # jobs a little before it listens for remote control (a pattern subscription, kombu's).
    db = client.connection_pool.connection_kwargs.get("db", 0)

    def listening() -> int:
        return sum(
            1
            for c in client.client_list()
            if int(c.get("db", -1)) == db and int(c.get("psub", 0)) > 0
        )

    wait_for(lambda: listening() >= len(workers), timeout=60, what="both workers on remote control")
    client.publish(pidbox, b"[1,2,3]")
    expected = len(GARBAGE) + 2  # the fan-out entry is set aside by each worker

    wait_for(
        lambda: client.llen(poison.DEAD_LETTERS) >= expected,
        timeout=30,
        what=f"{expected} dead letters",
    )
    ids = [job.id for job in submit([spec(s) for s in range(6)]).created]
    wait_for(lambda: all_terminal(ids), timeout=60, what="the jobs after the garbage")

    assert set(statuses(ids).values()) == {"succeeded"}
    logs = "".join(w.log() for w in workers)
    for worker in workers:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-2000:]
    assert "exited with" not in logs and "Unrecoverable error" not in logs
    assert "Connection to broker lost" not in logs  # no consumer restart loop either
    # Logged once each: one line per dead letter, and nothing left behind in Redis.
    assert logs.count(SET_ASIDE) == expected == client.llen(poison.DEAD_LETTERS)
    assert logs.count("job 987654: no such row") == 1
    assert logs.count("job 987655: no such row") == 1
    assert "Traceback" not in logs
    # The last job's message is acknowledged just after its row says succeeded.
    wait_for(lambda: not broker.pending_task_ids(), timeout=10, what="every message acked")
    assert not client.hlen("unacked") and not any(client.llen(k) for k in keys)

    letters = [json.loads(x) for x in client.lrange(poison.DEAD_LETTERS, 0, -1)]
    assert {letter["queue"] for letter in letters} >= {"lora", "evaluate"}
    assert all(letter["reason"] and letter["worker"] and letter["at"] for letter in letters)
    entries = {letter["entry"] for letter in letters}
    assert "not json at all" in entries and "[1,2,3]" in entries  # kept as they came


def test_job_ids_are_whole_numbers_in_the_key_range() -> None:
    assert job_id_of((7,), {}) == 7
    for args in [(), (1, 2), ("7",), (True,), (0,), (-5,), (MAX_JOB_ID + 1,), (7.0,), (None,)]:
        assert job_id_of(args, {}) is None, args
    assert job_id_of((7,), {"x": 1}) is None


def test_dead_letters_are_capped_and_quotes_short(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for _ in range(poison.KEEP + 5):
        poison.set_aside(client, queue="lora", reason="test", raw=b"x" * (poison.KEEP_BYTES + 10))
    assert client.llen(poison.DEAD_LETTERS) == poison.KEEP
    letter = json.loads(client.lindex(poison.DEAD_LETTERS, 0) or b"{}")
    assert letter["size"] == poison.KEEP_BYTES + 10 and len(letter["entry"]) == poison.KEEP_BYTES
    assert len(poison.quote(b"y" * 10_000_000)) < 250
