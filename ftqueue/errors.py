"""The errors ftqueue raises on purpose; anything else is a bug."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its type's name when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class FtqueueError(Exception):
    """Base class: a problem the user can fix; its text says what happened and what to do."""

    #: The CLI exit code for this kind of problem (2 for bad input, 1 for the rest).
    exit_code = 1

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The flag the problem is about (``--lr``), where there is one.
        self.param = param


class SpecError(FtqueueError, ValueError):
    """Raised when a job spec has a value out of range or of the wrong kind."""

    exit_code = 2


class SweepFileError(SpecError):
    """Raised when a sweep file is malformed or sets a value its job kind does not allow."""


class DatasetError(FtqueueError, ValueError):
    """Raised when a dataset cannot be found, read or used as labelled text."""

    exit_code = 2


class ModelError(FtqueueError, ValueError):
    """Raised when a model cannot be resolved or loaded."""

    exit_code = 2


class AdapterError(FtqueueError, ValueError):
    """Raised when an adapter is missing, unsafe to load or does not fit its model."""

    exit_code = 2


class JobNotFound(FtqueueError, LookupError):
    """Raised when a job id does not exist."""

    exit_code = 2


class FilterError(FtqueueError, ValueError):
    """Raised when a list or report filter names an unknown column or operator."""

    exit_code = 2


class DatabaseError(FtqueueError):
    """Raised when the results database cannot be reached or is not migrated."""


class RevisionError(DatabaseError):
    """Raised when a schema revision asked for does not exist or cannot be reached."""

    exit_code = 2


class DatabaseReplaced(DatabaseError):
    """Raised when the SQLite file a process opened was deleted or replaced under it."""


class BrokerError(FtqueueError):
    """Raised when the message broker cannot be reached."""


class NameTaken(FtqueueError):
    """Raised when a live worker already runs under the node name a new one asked for."""


class NoClassWorker(FtqueueError):
    """Raised by ``submit --strict`` when no live worker serves the GPU class asked for."""


class GpuTaken(FtqueueError):
    """Raised when another worker on this host holds the GPU a new one asked for."""

    exit_code = 2


class PublishError(BrokerError):
    """Raised when publishing stops part-way; ``sent`` holds the job ids that did go out."""

    def __init__(self, message: str, *, sent: list[int]) -> None:
        super().__init__(message)
        self.sent = sent


class PublishInterrupted(KeyboardInterrupt):
    """Raised when Ctrl-C stops the publishing of jobs already committed.

    Still a KeyboardInterrupt (no ``except Exception`` swallows it), carrying the committed
    job ids (``created``), those whose messages surely went out (``sent``), and ``message``,
    which says what becomes of the rest.
    """

    def __init__(self, message: str, *, created: list[int], sent: list[int]) -> None:
        super().__init__(message)
        self.message = message
        self.created = created
        self.sent = sent


class WaitTimeout(FtqueueError, TimeoutError):
    """Raised when jobs waited for have not ended within the time given; they go on."""


class JobCancelled(FtqueueError):
    """Raised inside a running job when its cancellation has been requested."""


class JobSuperseded(FtqueueError):
    """Raised inside a running job when another attempt has taken it over."""


class JobFailed(FtqueueError):
    """Raised by a job's Celery task when the job ended failed, so the task ends as FAILURE.

    The failure is recorded in the job's row first; this only tells Celery (and Flower).
    """
