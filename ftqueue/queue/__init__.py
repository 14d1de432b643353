"""The transport: the one Celery app and its queues, publishing to the broker, eager runs."""
