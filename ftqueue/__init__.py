"""ftqueue: a job queue for lightweight fine-tuning experiments."""

__version__ = "0.1.0"
