"""The training core: the only package that imports torch, transformers and peft.

Importing it is cheap: torch loads on first use of a job function. The job kinds (kinds/)
call into it from their ``perform``; nothing in the queue imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftqueue.training.adapters import LoadedAdapter, load_adapter
    from ftqueue.training.evaluating import run_evaluate
    from ftqueue.training.exporting import export_adapter
    from ftqueue.training.lora import run_lora
    from ftqueue.training.predicting import Labelled, label_texts, run_predict
    from ftqueue.training.preparing import release_memory

_LAZY = {
    "run_lora": "ftqueue.training.lora",
    "run_evaluate": "ftqueue.training.evaluating",
    "release_memory": "ftqueue.training.preparing",
    "load_adapter": "ftqueue.training.adapters",
    "LoadedAdapter": "ftqueue.training.adapters",
    "run_predict": "ftqueue.training.predicting",
    "label_texts": "ftqueue.training.predicting",
    "Labelled": "ftqueue.training.predicting",
    "export_adapter": "ftqueue.training.exporting",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Labelled",
    "LoadedAdapter",
    "export_adapter",
    "label_texts",
    "load_adapter",
    "release_memory",
    "run_evaluate",
    "run_lora",
    "run_predict",
]
