"""Pausing Python's cyclic garbage collector over bulk work.

A 10,000-job submit makes a few million short-lived objects and almost no reference cycles,
yet the collector ran hundreds of passes over everything alive meanwhile (the imported
libraries' modules, classes and functions included); `python bench/bulk_submit.py` measures
the submit with and without the pause. Reference counting still frees everything that is not
in a cycle at once, and the collector runs as usual once the pause ends.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block; the collector's state as it was after it.

    Nests: an inner pause leaves the collector off when an outer one holds it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def resume() -> None:
    """End every pause now, before work that may run for hours inside one (following or
    running the jobs a command submitted); the pauses' ends then change nothing."""
    gc.enable()
