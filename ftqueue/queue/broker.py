"""Talking to the broker from outside a worker: reachability, publishing, what is pending."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ftqueue import kinds
from ftqueue.errors import BrokerError, PublishError, first_line
from ftqueue.queue.app import app
from ftqueue.settings import get_settings
from ftqueue.store.schema import Job

# kombu's Redis transport keeps one list per priority step, and delivered-but-unacked
# messages in a hash; see kombu.transport.redis.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
_UNACKED = "unacked"


def _safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def redis_client(url: str | None = None) -> Any:
    import redis

    return redis.Redis.from_url(
        url or get_settings().broker_url, socket_connect_timeout=3, socket_timeout=10
    )


def check_broker() -> None:
    """Fail with one line when the broker cannot be reached."""
    url = get_settings().broker_url
    try:
        redis_client(url).ping()
    except Exception as exc:
        raise BrokerError(
            f"cannot reach the broker at {_safe(url)} ({exc}): start Redis, fix "
            "FTQUEUE_BROKER_URL, or set FTQUEUE_EAGER=1 to run jobs in this process."
        ) from None


#: Messages per pipelined round trip to Redis when publishing many.
PUBLISH_BATCH = 500


def argsrepr(job: Job) -> str:
    """How a job's message reads in Flower and worker logs: id, kind, model and dataset.

    The message itself carries only the id; this is a label. Local paths show their file
    names, so the label stays short.
    """

    def short(value: str) -> str:
        parts = [p.rsplit("/", 1)[-1] if "/" in p else p for p in value.split(",")]
        text = ",".join(part for part in parts)
        return text if len(text) <= 80 else text[:79] + "…"

    return f"(job {job.id}: {job.kind} {short(job.model)} on {short(job.dataset)})"


def publish(jobs: Sequence[Job]) -> list[int]:
    """Publish one message per job (carrying only its id); returns the ids published.

    Messages go out pipelined, PUBLISH_BATCH per round trip to Redis. Stops at the first
    failure and raises PublishError naming the jobs whose messages surely went out; those of
    the failed batch may or may not have (a duplicate message is harmless: the claim is
    fenced). Messages go by task name, routed to the kind's queue; the tasks need not be
    imported here.
    """
    sent: list[int] = []
    declared: set[str] = set()
    try:
        with app.producer_or_acquire() as producer:
            for start in range(0, len(jobs), PUBLISH_BATCH):
                chunk = jobs[start : start + PUBLISH_BATCH]
                # Room for the whole chunk (an LPUSH a message): flushed once, at the end.
                with producer.batch(max_size=2 * PUBLISH_BATCH + 1):
                    for job in chunk:
                        kind = kinds.lookup(job.kind)
                        # No time limits in the message: the worker's FTQUEUE_TIME_LIMIT
                        # governs, not whatever the submitting machine has configured.
                        app.send_task(
                            kind.task_name,
                            (job.id,),
                            task_id=job.task_id,
                            producer=producer,
                            time_limit=None,
                            soft_time_limit=None,
                            # Declaring a queue once per publish is enough, and the
                            # arguments' label is made here (Celery's saferepr is costly).
                            declare=[] if kind.queue in declared else None,
                            argsrepr=argsrepr(job),
                            kwargsrepr="{}",
                        )
                        declared.add(kind.queue)
                sent += [job.id for job in chunk]
    except Exception as exc:
        # kombu wraps a failed pipeline in "delivery is uncertain"; the cause says why.
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise PublishError(
            f"publishing to {_safe(get_settings().broker_url)} failed after {len(sent):,} of "
            f"{len(jobs):,} jobs ({first_line(cause)})",
            sent=sent,
        ) from None
    return sent


def _message_task_id(raw: Any) -> str | None:
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked entries are [message, exchange, routing key]
            message = message[0]
        return str(message["headers"]["id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def pending_task_ids(queues: Iterable[str] | None = None) -> set[str]:
    """Task ids of every message waiting in a queue or delivered and not yet acknowledged."""
    queues = kinds.queues() if queues is None else queues
    client = redis_client()
    keys = [
        q if pri == 0 else f"{q}{_PRIORITY_SEP}{pri}" for q in queues for pri in _PRIORITY_STEPS
    ]
    found: set[str] = set()
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.lrange(key, 0, -1)
    pipe.hvals(_UNACKED)
    for values in pipe.execute():
        for raw in values:
            task_id = _message_task_id(raw)
            if task_id:
                found.add(task_id)
    return found


def lost_message_grace() -> float:
    """How long a queued job may go without a message in Redis before it is re-published.

    Long enough for a submit to publish what it committed, and for a message taken by a
    worker to show up in the unacked hash.
    """
    return max(10.0, float(get_settings().lease_seconds))
