"""A circuit breaker for a side service (an experiment tracker): calls to it stop for a while
after it failed several times in a row, so that one that hangs costs a process a few
timeouts, not one per job.

Closed: calls go through. After ``threshold`` failures in a row it opens: calls are skipped
for ``cooldown`` seconds. Then it is half-open: one call goes through; its success closes the
breaker, its failure opens it again. Thread-safe; one breaker per service, per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Counts a service's failures in a row and says when calls to it should be skipped."""

    def __init__(
        self,
        *,
        threshold: int = 2,
        cooldown: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown < 0:
            raise ValueError("threshold must be >= 1 and cooldown >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None and self._clock() < self._open_until

    def allow(self) -> bool:
        """Whether a call may go to the service now (in the half-open state: this one call)."""
        with self._lock:
            if self._open_until is None:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            # Half-open: this caller probes; others wait another cooldown, in case the probe
            # never reports back.
            self._open_until = now + self.cooldown
            self._probing = True
            return True

    def success(self) -> bool:
        """A call succeeded: the breaker closes. True when it was open or half-open before."""
        with self._lock:
            was_open = self._open_until is not None
            self._failures, self._open_until, self._probing = 0, None, False
            return was_open

    def failure(self) -> bool:
        """A call failed. True when this failure opened the breaker (the moment to say so)."""
        with self._lock:
            self._failures += 1
            if self._probing or (self._open_until is None and self._failures >= self.threshold):
                self._open_until = self._clock() + self.cooldown
                self._probing = False
                return True
            return False

    def trip(self) -> bool:
        """Open now, whatever the count (a fault no retry mends). True if it was closed."""
        with self._lock:
            was_closed = self._open_until is None or self._probing
            self._failures = max(self._failures, self.threshold)
            self._open_until, self._probing = self._clock() + self.cooldown, False
            return was_closed
