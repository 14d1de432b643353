"""Sweep methods: the registry and the built-in methods, each registered by its own module.

Adding a method is a module here (a ``SweepMethod`` and its ``register(...)``) and an import
line below; nothing else names it.
"""

from __future__ import annotations

# isort: off
# Registration order is the order a sweep file's error lists the methods in.
from ftqueue.sweeps.methods import grid  # noqa: F401
from ftqueue.sweeps.methods import random_search  # noqa: F401
from ftqueue.sweeps.methods import tpe  # noqa: F401
from ftqueue.sweeps.methods import sobol  # noqa: F401

# isort: on
from ftqueue.sweeps.methods.registry import (
    Numbered,
    Offer,
    Proposal,
    SweepMethod,
    get,
    lookup,
    names,
    register,
)

__all__ = [
    "Numbered",
    "Offer",
    "Proposal",
    "SweepMethod",
    "get",
    "lookup",
    "names",
    "register",
]
