"""What people see of a report: plots checked through their matplotlib artists (bars counted,
labels and values read back), tables rendered at 80 and 100 columns, image types by suffix."""

from __future__ import annotations

import math

from ftqueue import db
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from tests.test_report import _insert

MODEL = "minilm"
SPLIT_FILES = ",".join(
    f"{name}=/data/reviews/reviews_{name}.csv" for name in ("train", "validation", "test")
)
RS = (4, 8, 16, 32)
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def grid_accuracy(r: int, lr: float, split: str, epoch: int, seed: int) -> float:
    """Smooth in r and lr, with a test optimum (r=8) away from the validation one (r=16)."""
    best_r = 16 if split == "validation" else 8
    value = 0.80 - 0.01 * abs(math.log2(r / best_r)) - 0.02 * abs(math.log10(lr / 1e-3))
    return value - 0.03 * (3 - epoch) + 0.002 * seed


def fill_grid(url: str, configurations: int = 20) -> list[tuple[int, float]]:
    """``configurations`` (r, lr) pairs of a LoRA grid, three seeds and three epochs each, and
    the base model, on named split files."""
    data = DataSpec(dataset=SPLIT_FILES)
    pairs = [(r, lr) for r in RS for lr in LRS][:configurations]
    with db.session_scope(url=url, write=True) as s:
        for seed in (0, 1, 2):
            base = EvaluateSpec(model=MODEL, data=data, seed=seed)
            _insert(s, base, {("test", 1): 0.70 + seed / 200})
            for r, lr in pairs:
                spec = LoraSpec(model=MODEL, data=data, r=r, lr=lr, epochs=3, seed=seed)
                metrics = {
                    ("validation", e): grid_accuracy(r, lr, "validation", e, seed)
                    for e in (1, 2, 3)
                }
                metrics[("test", 3)] = grid_accuracy(r, lr, "test", 3, seed)
                _insert(s, spec, metrics)
    return pairs
