"""Attempts that crashed or ran out of memory: recognised, recorded with the reason, failed once.

A pool process that dies by SIGABRT, SIGSEGV, SIGBUS, SIGILL or SIGFPE crashed in native code
(a tokenizer handed a row of hundreds of megabytes aborts); one that dies by SIGKILL while the
kernel's OOM killer counted a kill (its cgroup's count, or the host's) ran out of memory. Given
the same input on the same kind of worker, either does the same again, so the job fails at
once, as poison, with the reason and the phase it died in ("killed by signal 6 (SIGABRT) in
the tokenizer"), instead of going round the queue until it is out of attempts and taking a
worker down each time. Submitting it again (`--force`) tries once more, after a fix.

Any other death (a SIGKILL with no OOM kill counted, as from `kill -9`, or an exit) is not the
job's fault: it is re-queued as before (lost.py).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from ftqueue.core.states import Phase

#: Signals of a crash in native code: the same input crashes the same way again.
CRASH_SIGNALS = frozenset(
    {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
)

#: Where a job was when it died, by its last reported phase.
_PLACES: dict[str, str] = {
    Phase.STARTING: "while starting",
    Phase.LOAD: "while loading the model or data",
    Phase.TOKENIZE: "in the tokenizer",
    Phase.TRAIN: "in training",
    Phase.EVALUATE: "in evaluation",
    Phase.PREDICT: "while predicting",
    Phase.SAVE: "while saving",
}

_SIGNAL = re.compile(r"\bsignal (\d+)\b")


@dataclass(frozen=True)
class Crash:
    """Why an attempt died, when it was the job's doing."""

    #: The job's error type: "Crashed" or "OutOfMemory".
    error_type: str
    #: "killed by signal 6 (SIGABRT)", "out of memory (killed by the kernel's OOM killer)".
    reason: str

    def message(self, phase: str | None) -> str:
        """The reason, where the job was, and what to do; the job's error message."""
        place = _PLACES.get(phase) if phase else None
        where = f" {place}" if place else ""
        advice = (
            "use smaller batches or shorter inputs, or give the worker more memory"
            if self.error_type == "OutOfMemory"
            else "check the input (a very long row?)"
        )
        return f"{self.reason}{where}; not retried: {advice}, then submit again with --force"


def signal_number(text: str) -> int | None:
    """The signal in billiard's "Worker exited prematurely: signal 6 (SIGABRT) Job: 0."."""
    found = _SIGNAL.search(text)
    return int(found.group(1)) if found else None


def signal_name(signum: int) -> str:
    try:
        return f"signal {signum} ({signal.Signals(signum).name})"
    except ValueError:
        return f"signal {signum}"


def oom_kills(pid: int | str = "self") -> tuple[int, ...]:
    """The kernel's OOM kill counts that cover process ``pid``: its cgroup's and the host's.

    cgroup v2 ``memory.events`` or v1 ``memory.oom_control`` (``oom_kill``), and the
    ``oom_kill`` line of /proc/vmstat; counts the kernel does not provide are left out.
    """
    counts = []
    for path in _cgroup_counters(pid):
        found = _count(path, "oom_kill")
        if found is not None:
            counts.append(found)
    host = _count(Path("/proc/vmstat"), "oom_kill")
    if host is not None:
        counts.append(host)
    return tuple(counts)


def _cgroup_counters(pid: int | str) -> list[Path]:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        where = where.lstrip("/")
        if number == "0" and not controllers:
            paths.append(Path("/sys/fs/cgroup", where, "memory.events"))
        elif "memory" in controllers.split(","):
            paths.append(Path("/sys/fs/cgroup/memory", where, "memory.oom_control"))
    return paths


def _count(path: Path, key: str) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def classify(
    signum: int | None, *, oom_before: tuple[int, ...], oom_after: tuple[int, ...]
) -> Crash | None:
    """The crash behind a death by ``signum``, or None when the job is not to blame."""
    if signum is None:
        return None
    if signum in CRASH_SIGNALS:
        return Crash("Crashed", f"killed by {signal_name(signum)}")
    oom = len(oom_before) == len(oom_after) and any(
        after > before for before, after in zip(oom_before, oom_after, strict=True)
    )
    if signum == signal.SIGKILL and oom:
        return Crash("OutOfMemory", "out of memory (killed by the kernel's OOM killer)")
    return None
