"""Worker processes end with the process that started them, even when it is killed with -9.

`ftqueue worker` starts Celery worker processes, and each of those forks its pool process.
Killed with -9, a parent cannot stop its children: before this, the Celery process lived on as
an orphan, kept taking jobs and kept its worker name, so a restart under that name was refused.
Each child now asks the kernel for SIGKILL when its parent dies (Linux's
``prctl(PR_SET_PDEATHSIG)``, through ctypes), and a watchdog thread that sees its parent pid
change does the same where prctl is missing, or when the parent died before the request.

SIGKILL, not a shutdown: a warm shutdown would wait for the running job, for hours perhaps,
with no supervisor left. The job is released when its worker name is taken again (nodes.py)
or when its lease lapses (reaper.py), and its unacknowledged message comes back to the queue.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

import psutil

log = logging.getLogger(__name__)

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
#: How often the watchdog looks at the parent pid, seconds.
INTERVAL = 0.5


def ask_kernel(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def bind(parent: int, *, sig: int = signal.SIGKILL, interval: float = INTERVAL) -> None:
    """End this process with ``sig`` once process ``parent``, its parent, is gone.

    Nothing is done when ``parent`` lives and is not this process's parent: the pid came
    from elsewhere (an inherited environment variable), not from the process that started it.
    """
    if os.getppid() != parent and psutil.pid_exists(parent):
        log.warning("pid %s is not this process's parent: not bound to it", parent)
        return
    if not ask_kernel(sig):
        log.debug("no parent-death signal on this system: the watchdog alone ends this process")
    # The parent may have died before the request: the kernel would never send it.
    if os.getppid() != parent:
        _end(parent, sig)
    threading.Thread(
        target=_watch, args=(parent, sig, interval), name="ftqueue-lifeline", daemon=True
    ).start()


def _watch(parent: int, sig: int, interval: float) -> None:
    event = threading.Event()
    while not event.wait(interval):
        if os.getppid() != parent:
            _end(parent, sig)
            return


def _end(parent: int, sig: int) -> None:
    log.critical("the process that started this one (pid %s) is gone: ending this one", parent)
    os.kill(os.getpid(), sig)
