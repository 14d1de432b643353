"""Poison messages: queue entries a worker cannot run are set aside, and the worker goes on.

Anyone who can write to Redis can put any bytes on a queue. kombu's Redis transport decodes an
entry as it pops it and has no error path: an entry that is not JSON, or JSON that is not a
kombu envelope, raised out of the event loop and took the Celery main process down (and the
supervisor restarted it into the next one). Celery then handles what kombu passes on, and
the task checks its arguments. At each of these three layers an entry that cannot be run is
logged in one line, acknowledged, and kept in the Redis list ``ftqueue:dead-letters`` (newest
first, at most :data:`KEEP` entries) for inspection::

    redis-cli -n 0 lrange ftqueue:dead-letters 0 -1

The transport and the consumer are chosen by the Celery settings ``broker_transport`` and
``worker_consumer`` (see celery_app.py); nothing in kombu or Celery is patched.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger(__name__)

DEAD_LETTERS = "ftqueue:dead-letters"
#: Dead letters kept; older ones are dropped, so a flood of garbage cannot fill Redis.
KEEP = 1000
#: Bytes of an entry kept in its dead letter; the rest is cut (its size is recorded).
KEEP_BYTES = 64 * 1024
#: Characters of an entry quoted in a log line.
QUOTE = 200


def quote(raw: bytes | str, limit: int = QUOTE) -> str:
    """A short, printable quotation of user data for a log line."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return repr(text[:limit]) + (f"... ({len(text)} characters)" if len(text) > limit else "")


def set_aside(
    client: Any, *, queue: str, reason: str, raw: bytes | str, worker: str | None = None
) -> None:
    """Log one line for an entry that cannot be run and keep it in the dead-letter list."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    # Reasons may quote the entry (Celery's own errors do): keep the line short.
    reason = reason if len(reason) <= 2 * QUOTE else reason[: 2 * QUOTE] + "..."
    log.error(
        "set aside a message on queue %s that cannot be run: %s; entry %s (kept in Redis list %s)",
        queue,
        reason,
        quote(data),
        DEAD_LETTERS,
    )
    letter = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "queue": queue,
        "worker": worker or socket.gethostname(),
        "reason": reason,
        "size": len(data),
        "entry": data[:KEEP_BYTES].decode("utf-8", "backslashreplace"),
    }
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(DEAD_LETTERS, json.dumps(letter)).ltrim(DEAD_LETTERS, 0, KEEP - 1)
        pipe.execute()
    except Exception as exc:  # the entry is gone from its queue either way; say so once
        log.error("could not keep that message in %s: %s", DEAD_LETTERS, exc)


def envelope_problem(payload: Any, channel: Any) -> str | None:
    """Why kombu could not turn a decoded queue entry into a message, or None when it can."""
    if not isinstance(payload, dict):
        return f"a JSON {type(payload).__name__} where a message envelope was expected"
    props = payload.get("properties")
    encoding = props.get("body_encoding") if isinstance(props, dict) else None
    codecs = channel.codecs
    known = isinstance(encoding, str) and (encoding.lower() == "utf-8" or encoding in codecs)
    if encoding and not known:
        return f"unknown body_encoding {quote(str(encoding))}"
    try:
        message = channel.Message(payload, channel=channel)
    except Exception as exc:
        return f"not a message envelope ({type(exc).__name__}: {exc})"
    info = message.delivery_info
    if not isinstance(info, dict) or not all(
        isinstance(info.get(key), str) for key in ("exchange", "routing_key")
    ):
        return "the envelope has no delivery_info with an exchange and a routing_key"
    tag = message.delivery_tag
    if isinstance(tag, bool) or not isinstance(tag, str | int | float):
        return "the envelope's delivery_tag is not a string or a number"
    return None


def entry_problem(raw: bytes, channel: Any) -> str | None:
    """Why a raw queue entry cannot become a kombu message, or None when it can."""
    try:
        payload = loads(bytes_to_str(raw))
    except Exception as exc:
        return f"not JSON ({type(exc).__name__}: {str(exc)[:QUOTE]})"
    return envelope_problem(payload, channel)


class _Screening:
    """A Redis client mixin: BRPOP and RPOP replies are screened before kombu decodes them."""

    def __init__(
        self, *args: Any, screen: Callable[[str, bytes], bool] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._screen = screen

    def parse_response(self, connection: Any, command_name: str, **options: Any) -> Any:
        response = super().parse_response(connection, command_name, **options)  # type: ignore[misc]
        if self._screen is None or not response:
            return response
        if command_name == "BRPOP":
            key, raw = response
            # An empty reply is what kombu takes for "nothing there": it simply polls again.
            return response if self._screen(bytes_to_str(key), raw) else None
        if command_name == "RPOP" and isinstance(response, bytes):
            return response if self._screen("", response) else None
        return response


@functools.cache
def _screened(cls: type) -> type:
    return type(f"Screened{cls.__name__}", (_Screening, cls), {})


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, setting aside entries it could not decode."""

    def _get_client(self) -> Any:
        base = super()._get_client()
        # kombu hands back a partial when keys carry a global prefix; keep its arguments.
        cls, kwargs = (base, {})
        if isinstance(base, functools.partial):
            cls, kwargs = base.func, base.keywords
        return functools.partial(_screened(cls), screen=self._screen_entry, **kwargs)

    def _screen_entry(self, key: str, raw: bytes) -> bool:
        problem = entry_problem(raw, self)
        if problem is None:
            return True
        from ftqueue.queue.broker import queue_of_key  # this module imports no ftqueue at load

        queue = queue_of_key(key) if key else "?"
        with self.conn_or_acquire() as client:
            set_aside(client, queue=queue, reason=problem, raw=raw)
        return False


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the screening channel, selected by ``broker_transport``."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        # Fan-out messages (remote control) come through here without the BRPOP screen.
        channel = next((c for c in self.channels if c), None)
        problem = envelope_problem(message, channel) if channel is not None else None
        if channel is None or problem is None:
            super()._deliver(message, queue)
            return
        with channel.conn_or_acquire() as client:
            set_aside(client, queue=queue, reason=problem, raw=json.dumps(message, default=repr))


class Consumer(CeleryConsumer):
    """Celery's consumer, setting aside messages it cannot turn into a task request."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)
        # kombu's Redis transport counts KeyError as a connection error; a KeyError from a
        # message's own headers (no "id") must not send the consumer into a reconnect loop
        # that restores the same message each time.
        connection_errors = tuple(e for e in self.connection_errors if e is not KeyError)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except connection_errors:
                raise
            except Exception as exc:
                self._set_aside(message, f"{type(exc).__name__}: {str(exc)[:QUOTE]}")
                return None

        return on_task_received

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._set_aside(message, "it names no task")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        self._set_aside(message, f"no task named {quote(str(name))} is registered")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._set_aside(message, f"invalid task message ({type(exc).__name__}: {exc})")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._set_aside(message, f"its body cannot be decoded ({type(exc).__name__}: {exc})")

    def _set_aside(self, message: Any, reason: str) -> None:
        queue = (message.delivery_info or {}).get("routing_key") or "?"
        try:
            raw = json.dumps(message.serializable(), default=repr)
        except Exception:
            raw = repr(message.body)
        try:
            with self.connection.default_channel.conn_or_acquire() as client:
                set_aside(client, queue=queue, reason=reason, raw=raw, worker=self.hostname)
        except Exception as exc:  # another transport, or Redis away: the log line must do
            log.error("set aside a message on queue %s: %s (%s)", queue, reason, exc)
        if not message.acknowledged:
            message.ack_log_error(log, self.connection_errors)
