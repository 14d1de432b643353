"""Delivery: the Celery app and tasks, the broker, worker processes and names, reaper, eager."""
