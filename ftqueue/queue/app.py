"""The one Celery app. Its configuration is read from settings when first used, not at import."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from ftqueue import kinds
from ftqueue.core.states import PRIORITY_STEPS
from ftqueue.settings import Settings, get_settings, on_reset

app = Celery("ftqueue", set_as_current=False, include=["ftqueue.worker.tasks"])


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings ftqueue relies on; see DESIGN.md "Decisions already taken".

    One queue per kind of work (from the registry of kinds), so that evaluation can be given
    its own, smaller workers.
    """
    # Redis re-delivers an unacknowledged message after visibility_timeout; with late acks it
    # must exceed the longest a job may legally run, or a running job would be started twice.
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "priority_steps": list(PRIORITY_STEPS),
        # A worker asks Redis for its queues in the order given (its GPU class's first, see
        # supervisor.py), not round robin; within that, every queue's higher priority first.
        "queue_order_strategy": "priority",
    }
    if settings.visibility_timeout < 600:
        # kombu looks for expired deliveries only every 10 x 10 s by default; a short timeout
        # is only meaningful if it looks more often.
        transport["unacked_restore_interval"] = max(1, settings.visibility_timeout // 2)
        transport["unacked_restore_throttle"] = 1
    return {
        "broker_url": settings.broker_url,
        # Workers survive any bytes on their queues: see poison.py.
        "broker_transport": _screening_transport(settings.broker_url),
        "worker_consumer": "ftqueue.worker.poison:Consumer",
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 4,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # The results table is the record; Celery's own result store would be a second one.
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A pool child that dies mid-job is reported (WorkerLostError) after this long, and its
        # job re-queued then: Celery's 10 s default waits for a result that, with the job's
        # row as the record, never matters.
        "worker_lost_wait": 1.0,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Task events on from the start, so Flower and `celery events` see every job (with its
        # argsrepr and end state) without having to switch them on.
        "worker_send_task_events": True,
        "task_time_limit": settings.time_limit,
        "task_soft_time_limit": settings.soft_time_limit,
        # Each queue on a direct exchange of its own name: what a queue is bound to does not
        # depend on the order in which kinds happen to be registered.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in kinds.queues()
        ],
        "task_default_queue": kinds.queues()[0],
        # A message sent without one (`celery call`, an old client) is a normal job.
        "task_default_priority": 3,
        "task_routes": {k.task_name: {"queue": k.queue} for k in kinds.all_kinds()},
        "task_always_eager": settings.eager,
        "task_eager_propagates": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
    }


def _screening_transport(broker_url: str) -> str | None:
    """kombu's Redis transport with poison screening, for redis:// and rediss:// brokers."""
    scheme = broker_url.split("://", 1)[0].lower()
    return "ftqueue.worker.poison:Transport" if scheme in ("redis", "rediss") else None


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(get_settings()))


def _reconfigure() -> None:
    # Settings changed (tests, long-lived shells): configure again, and drop the pooled broker
    # connections and the producer pool built on them, which point at the old URL (Celery
    # itself does the same after a fork); otherwise messages go on to the old broker.
    if app.configured:
        app._pool = None
        amqp = app.__dict__.get("amqp")
        if amqp is not None:
            amqp._producer_pool = None
        app.conf.update(celery_config(get_settings()))


on_reset(_reconfigure)
