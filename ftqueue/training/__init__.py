"""The training core: the only package that imports torch, transformers and peft.

Importing it is cheap: torch loads on first use of a job function. The job kinds (kinds/)
call into it from their ``perform``; nothing in the queue imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftqueue.training.adapters import LoadedAdapter, load_adapter
    from ftqueue.training.evaluating import run_evaluate
    from ftqueue.training.exporting import export_adapter
    from ftqueue.training.lora import run_lora
    from ftqueue.training.predicting import Labelled, label_texts, run_predict
    from ftqueue.training.preparing import release_memory


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # A plain import statement, not importlib: the import checks (grimp, import-linter) then
    # see the package's lazy dependencies, so a cycle through one is caught like any other.
    from ftqueue.training import adapters, evaluating, exporting, lora, predicting, preparing

    for module in (lora, evaluating, preparing, adapters, predicting, exporting):
        if name in vars(module):
            return vars(module)[name]
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
