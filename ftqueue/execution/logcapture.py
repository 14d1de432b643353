"""An attempt's log lines, kept in the database: a handler attached while the attempt runs.

Lines are redacted and buffered, then written in batches (every couple of seconds, or sooner
when a batch fills), never a write per line. Only the last ``limit`` bytes of an attempt are
kept: the oldest batches are deleted as new ones pass the bound.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ftqueue.execution.redaction import redact
from ftqueue.store import logs

log = logging.getLogger(__name__)

#: The bytes of log kept per attempt (the last ones).
LIMIT = 2 * 1024 * 1024
#: A batch is written after this long, or once it holds BATCH_BYTES.
FLUSH_SECONDS = 2.0
BATCH_BYTES = 64 * 1024

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class AttemptLogHandler(logging.Handler):
    """Collects the records of one attempt and stores them in batches from a thread."""

    def __init__(self, job_id: int, attempt: int, *, limit: int = LIMIT) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(FORMAT))
        self.job_id, self.attempt, self.limit = job_id, attempt, limit
        self._buffer: list[str] = []
        self._buffered = 0
        self._seq = 0
        #: (seq, bytes) of the batches stored and not yet dropped, oldest first.
        self._stored: collections.deque[tuple[int, int]] = collections.deque()
        self._total = 0
        self._failing = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"attempt-log-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread:
            return  # the database's own logging while writing a batch
        try:
            line = redact(self.format(record)) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self._buffer.append(line)
            self._buffered += len(line.encode())
            full = self._buffered >= BATCH_BYTES
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.write_batch()

    def write_batch(self) -> None:
        """Store what is buffered as one batch; a failure loses this batch, never the job."""
        with self._write_lock:
            with self.lock:  # type: ignore[union-attr]
                lines, self._buffer, self._buffered = self._buffer, [], 0
            if not lines:
                return
            text = "".join(lines)
            data = text.encode()
            if len(data) > self.limit:
                text = data[-self.limit :].decode(errors="ignore")
            try:
                logs.append(self.job_id, self.attempt, self._seq + 1, text)
            except Exception as exc:
                # Kept for the next batch (still within the bound): the database may be back.
                with self.lock:  # type: ignore[union-attr]
                    self._buffer.insert(0, text)
                    self._buffered += len(text.encode())
                if not self._failing:
                    log.warning("job %s: could not store its log lines: %s", self.job_id, exc)
                self._failing = True
                return
            self._failing = False
            self._seq += 1
            self._stored.append((self._seq, len(text.encode())))
            self._total += self._stored[-1][1]
            try:
                self._trim()
            except Exception as exc:  # trimmed with the next batch
                log.warning("job %s: could not trim its stored log: %s", self.job_id, exc)

    def _trim(self) -> None:
        drop = 0
        total = self._total
        while total > self.limit and len(self._stored) - drop > 1:
            total -= self._stored[drop][1]
            drop += 1
        if drop:
            logs.drop_through(self.job_id, self.attempt, self._stored[drop - 1][0])
            for _ in range(drop):
                self._stored.popleft()
            self._total = total

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.write_batch()
        super().close()


@contextmanager
def captured(job_id: int, attempt: int) -> Iterator[AttemptLogHandler]:
    """Keep the log records of this process in the attempt's log while the block runs."""
    handler = AttemptLogHandler(job_id, attempt)
    root = logging.getLogger()
    root.addHandler(handler)
    handler.start()
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
