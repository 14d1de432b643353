"""Pausing Python's cyclic garbage collector over bulk work.

A 10,000-job submit makes a few million short-lived objects and almost no reference cycles,
yet the collector ran hundreds of passes over everything alive meanwhile (the imported
libraries' modules, classes and functions included): about a tenth of the command's CPU
(`python bench/bulk_submit.py`). Reference counting still frees everything that is not in a
cycle at once, and the collector runs as usual once the pause ends.
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
