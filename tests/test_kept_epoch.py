"""The epoch a LoRA run keeps: the trainer's keeper holds that epoch's weights, and synthetic
jobs (which stand in for training in tests and benchmarks) record the same epoch."""

from __future__ import annotations

import torch

from ftqueue.core.confidence import kept_epoch
from ftqueue.core.outcome import Measurement
from ftqueue.kinds.lora import LoraSpec
from ftqueue.kinds.synthetic import _selected_epoch
from ftqueue.specs import DataSpec
from ftqueue.training.lora import _EpochKeeper


def validation(epoch: int, accuracy: float, rows: int = 1000) -> Measurement:
    return Measurement("validation", epoch, accuracy, 1 - accuracy, accuracy, rows)


def test_the_keeper_restores_the_weights_of_the_kept_epoch_not_the_best() -> None:
    model = torch.nn.Linear(2, 1)
    keeper = _EpochKeeper(model, best=True)
    # On 1,000 rows: 0.84 is beyond 0.80's interval (to 0.824), 0.855 within 0.84's (to 0.861).
    for epoch, accuracy in ((1, 0.80), (2, 0.84), (3, 0.855)):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        keeper.saw(epoch, validation(epoch, accuracy))
    assert keeper.restore_selected() == 2
    assert torch.all(model.weight == 2.0)


def test_the_keeper_keeps_the_last_epoch_when_asked() -> None:
    model = torch.nn.Linear(2, 1)
    keeper = _EpochKeeper(model, best=False)
    for epoch, accuracy in ((1, 0.9), (2, 0.5)):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        keeper.saw(epoch, validation(epoch, accuracy))
    assert keeper.restore_selected() == 2 and torch.all(model.weight == 2.0)


def test_synthetic_jobs_keep_the_same_epoch_as_training() -> None:
    spec = LoraSpec(model="synthetic:seconds=0", data=DataSpec(dataset="movie-snippets"))
    curve = [validation(1, 0.80), validation(2, 0.815), validation(3, 0.90)]
    assert _selected_epoch(spec, curve) == 3 == kept_epoch([(1, 0.80, 1000), (2, 0.815, 1000),
                                                            (3, 0.90, 1000)])  # fmt: skip
    assert _selected_epoch(spec, curve[:2]) == 1  # 0.815 is inside 0.80's interval
