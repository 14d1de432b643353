"""Job kinds: the registry and the built-in kinds, each registered by its own module.

Adding a kind is a module here (its spec, its ``perform``, its ``register(...)``), an import
line below, and its command under ``cli/``; nothing else names it.
"""

from __future__ import annotations

from ftqueue.kinds import evaluate, lora, predict  # noqa: F401  (importing a kind registers it)
from ftqueue.kinds.registry import (
    ADAPTER_FIELD,
    JobContext,
    JobKind,
    Role,
    all_kinds,
    get,
    lookup,
    names,
    queues,
    with_role,
)

__all__ = [
    "ADAPTER_FIELD",
    "JobContext",
    "JobKind",
    "Role",
    "all_kinds",
    "get",
    "lookup",
    "names",
    "queues",
    "with_role",
]
