"""Workers: the Celery tasks, worker processes per GPU, their names, poison messages, the reaper."""
