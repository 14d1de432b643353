"""Talking to the broker from outside a worker: reachability, publishing, what is pending."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socket
import uuid
from bisect import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ftqueue import kinds
from ftqueue.core.states import PRIORITY_LEVELS, PRIORITY_STEPS, Priority
from ftqueue.core.templates import cut_at_marks
from ftqueue.errors import BrokerError, PublishError, first_line
from ftqueue.settings import get_settings
from ftqueue.store.insert import new_task_ids
from ftqueue.store.schema import Job

# kombu's Redis transport keeps delivered-but-unacked messages in a hash; see
# kombu.transport.redis.
_UNACKED = "unacked"

#: kombu's Redis transport keeps one list per priority step (see kombu.transport.redis and
#: core.states.PRIORITY_STEPS): a message of priority p goes to the list of the highest step
#: not above p.
PRIORITY_SEP = "\x06\x16"

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# The body, (args, kwargs, embed) of a task taking one job id: only the id varies.
_BODY_HEAD = b"[["
_BODY_TAIL = b"], {}, " + json.dumps(_EMBED).encode() + b"]"
# Stand-ins for the varying values, unique enough to find once the template is encoded.
_SLOTS = {
    "task_id": "\x00ftq-task-id\x00",
    "argsrepr": "\x00ftq-argsrepr\x00",
    "body": "\x00ftq-body\x00",
    "delivery_tag": "\x00ftq-delivery-tag\x00",
}


_PLAIN_ID = re.compile(r"[0-9A-Za-z-]{1,64}")
#: Text that JSON writes as it is, between quotes (json.dumps escapes the rest).
_PLAIN_TEXT = re.compile(r"[ !#-\[\]-~]*")


def queue_key(queue: str, priority: int | None = None) -> str:
    """The Redis list a message of ``priority`` waits in (kombu's ``_q_for_pri``)."""
    if not priority:
        return queue
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, max(0, min(9, priority))) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


class MessageTemplate:
    """The message of one task name to one queue at one priority, encoded once.

    Made from Celery's message protocol 2 as ``send_task`` writes it, field for field;
    ``render`` fills in a job's id, its task id, its label (``argsrepr``) and a delivery tag.
    Going through ``send_task`` cost about 0.2 ms a message (routing, signals, header
    building, kombu's serialisation) and imported Celery's app machinery: 2 s of the CPU of
    a 10,000-job grid.
    """

    def __init__(self, task_name: str, queue: str, *, priority: int | None = None) -> None:
        self.task_name = task_name
        self.queue = queue
        self.priority = priority
        self.key = queue_key(queue, priority)
        origin = f"gen{os.getpid()}@{socket.gethostname()}"
        slot = _SLOTS
        headers: dict[str, Any] = {
            "lang": "py",
            "task": task_name,
            "id": slot["task_id"],
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            # No time limits in the message: the worker's FTQUEUE_TIME_LIMIT governs, not
            # whatever the submitting machine has configured.
            "timelimit": [None, None],
            "root_id": slot["task_id"],
            "parent_id": None,
            "argsrepr": slot["argsrepr"],
            "kwargsrepr": "{}",
            "origin": origin,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        }
        message: dict[str, Any] = {
            "body": slot["body"],
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": slot["task_id"],
                # Where Celery would send a reply; ftqueue keeps no Celery results.
                "reply_to": str(uuid.uuid4()),
                "argsrepr": slot["argsrepr"],
                "kwargsrepr": "{}",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": priority or 0,
                "body_encoding": "base64",
                "delivery_tag": slot["delivery_tag"],
            },
        }
        encoded = json.dumps(message)
        # Cut the encoded text at each slot: the parts between stay as they are.
        self._parts, self._order = cut_at_marks(
            encoded, {json.dumps(v): k for k, v in slot.items()}
        )

    def render(self, *, job_id: int, task_id: str, argsrepr: str, delivery_tag: str) -> bytes:
        """One job's message, as the bytes kombu's Redis transport would have pushed.

        ``delivery_tag``: unique to the message (kombu keys the unacknowledged ones by it).
        """
        body = base64.b64encode(_BODY_HEAD + str(job_id).encode() + _BODY_TAIL).decode()
        values = {
            # Celery's task ids are UUIDs, which need no escaping; anything else is encoded.
            "task_id": f'"{task_id}"' if _PLAIN_ID.fullmatch(task_id) else json.dumps(task_id),
            "argsrepr": f'"{argsrepr}"'
            if _PLAIN_TEXT.fullmatch(argsrepr)
            else json.dumps(argsrepr),
            "body": f'"{body}"',
            "delivery_tag": f'"{delivery_tag}"',
        }
        parts = self._parts
        out = [parts[0]]
        for i, name in enumerate(self._order):
            out.append(values[name])
            out.append(parts[i + 1])
        return "".join(out).encode()


def queue_of(kind_queue: str, gpu_class: str | None) -> str:
    """The queue of a job of a kind's queue: ``lora``, or ``lora.a100`` for a GPU class."""
    return f"{kind_queue}.{gpu_class}" if gpu_class else kind_queue


def job_queue(job: Job) -> str:
    """Where a job's message goes: its kind's queue, or its GPU class's queue of that kind."""
    return queue_of(kinds.lookup(job.kind).queue, job.gpu_class)


def queue_of_key(key: str) -> str:
    """The queue a Redis list belongs to: ``lora`` for ``lora\x06\x163`` (priority 3)."""
    return key.split(PRIORITY_SEP, 1)[0]


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding a queue's waiting messages, highest priority first."""
    return [queue_key(queue, pri) for pri in PRIORITY_STEPS]


def _priority_of(job: Job) -> int:
    """A job's Celery priority (rows from before priorities have none: normal)."""
    return job.priority if job.priority is not None else PRIORITY_LEVELS[Priority.NORMAL]


def queue_length(queue: str, client: Any = None) -> int:
    """How many messages wait in a queue, over all its priority lists."""
    client = client or redis_client()
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(int(n) for n in pipe.execute())


def class_queues(client: Any = None) -> list[str]:
    """The GPU class queues that exist in Redis now (``lora.a100``), for every kind."""
    client = client or redis_client()
    found: set[str] = set()
    for base in kinds.queues():
        for key in client.scan_iter(match=f"{base}.*", count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            found.add(queue_of_key(name))
    return sorted(found)


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
    return f"(job {job.id}: {_label(job.kind, job.model, job.dataset)})"


@functools.lru_cache(maxsize=256)
def _label(kind: str, model: str, dataset: str) -> str:
    """What ``argsrepr`` says after the id: the same for every job of a grid, made once."""

    def short(value: str) -> str:
        parts = [p.rsplit("/", 1)[-1] if "/" in p else p for p in value.split(",")]
        text = ",".join(part for part in parts)
        return text if len(text) <= 80 else text[:79] + "…"

    return f"{kind} {short(model)} on {short(dataset)}"


def publish(
    jobs: Sequence[Job],
    *,
    progress: list[int] | None = None,
    queue: Callable[[Job], str] | None = None,
    priority: Callable[[Job], int | None] | None = None,
) -> list[int]:
    """Publish one message per job (carrying only its id); returns the ids published.

    ``progress``, when given, gets the ids as their batches go out: what an interrupted
    caller knows was sent.

    Messages go out pipelined, PUBLISH_BATCH per round trip to Redis. Stops at the
    first failure and raises PublishError naming the jobs whose messages surely went out;
    those of the failed batch may or may not have (a duplicate message is harmless: the claim
    is fenced). Each goes to its kind's queue unless ``queue`` names another, at the
    ``priority`` given (none: kombu's default). The messages are Celery's, made from one
    template per task, queue and priority (MessageTemplate); no Celery code runs here.
    """
    sent: list[int] = [] if progress is None else progress
    templates: dict[tuple[str, str, int | None], MessageTemplate] = {}
    try:
        pipe = redis_client().pipeline(transaction=False)
        for start in range(0, len(jobs), PUBLISH_BATCH):
            chunk = jobs[start : start + PUBLISH_BATCH]
            # One LPUSH of many values a list: the same as one LPUSH each, in that order,
            # for a fraction of the client's command packing.
            lists: dict[str, list[bytes]] = {}
            tags = new_task_ids(len(chunk))
            for job, tag in zip(chunk, tags, strict=True):
                kind = kinds.lookup(job.kind)
                # The job's class queue and priority, read from its row: a re-queue
                # publishes it as it was submitted.
                where = (
                    kind.task_name,
                    queue_of(kind.queue, job.gpu_class) if queue is None else queue(job),
                    _priority_of(job) if priority is None else priority(job),
                )
                template = templates.get(where)
                if template is None:
                    template = templates[where] = MessageTemplate(
                        where[0], where[1], priority=where[2]
                    )
                message = template.render(
                    job_id=job.id,
                    task_id=job.task_id or str(uuid.uuid4()),
                    argsrepr=argsrepr(job),
                    delivery_tag=tag,
                )
                lists.setdefault(template.key, []).append(message)
            for key, messages in lists.items():
                pipe.lpush(key, *messages)
            pipe.execute()
            sent += [job.id for job in chunk]
    except Exception as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise PublishError(
            f"publishing to {_safe(get_settings().broker_url)} failed after {len(sent):,} of "
            f"{len(jobs):,} jobs ({first_line(cause)})",
            sent=sent,
        ) from None
    return sent


_ID_KEY = b'"id": "'


def _message_task_id(raw: Any) -> str | None:
    # Celery's messages, as kombu encodes them, have one "id" key: the task id, in the
    # headers. Inside a JSON string a quote is escaped, so the key's bytes occur nowhere
    # else, and finding them is a tenth of parsing the message (most of a scan of 10,000).
    if isinstance(raw, bytes):
        at = raw.find(_ID_KEY)
        if at > raw.find(b'"headers": {') >= 0 and raw.find(_ID_KEY, at + 1) < 0:
            start = at + len(_ID_KEY)
            value = raw[start : raw.find(b'"', start)]
            if 0 < len(value) <= 64 and b"\\" not in value:
                return value.decode(errors="replace")
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked entries are [message, exchange, routing key]
            message = message[0]
        return str(message["headers"]["id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def pending_task_ids(queues: Iterable[str] | None = None) -> set[str]:
    """Task ids of every message waiting in a queue or delivered and not yet acknowledged.

    By default every kind's queue and every GPU class queue found in Redis.
    """
    client = redis_client()
    queues = [*kinds.queues(), *class_queues(client)] if queues is None else queues
    keys = [queue_key(q, pri) for q in queues for pri in PRIORITY_STEPS]
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
