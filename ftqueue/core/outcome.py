"""What a job reports while it runs and hands back when it ends (torch-free).

``Progress`` is the one progress type: the trainer reports it, the heartbeat writes it into
the job's row, and `--wait` reads it back from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftqueue.core.states import Phase


@dataclass(frozen=True)
class Progress:
    """Where a running attempt is; ``loss`` is the mean training loss since the last report.

    ``val_accuracy`` is the validation accuracy after epoch ``val_epoch``: a report that sets
    them marks the end of that epoch, and the heartbeat carries them on to later reports.
    """

    phase: Phase | str | None = None
    epoch: int | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    val_accuracy: float | None = None
    val_epoch: int | None = None


@dataclass(frozen=True)
class Measurement:
    """Metrics of one split after one epoch (epoch 0: an adapter evaluated without training)."""

    split: str
    epoch: int
    accuracy: float
    loss: float
    macro_f1: float
    n_examples: int


@dataclass
class Outcome:
    """Everything a finished job hands back.

    ``artifact_dir`` is the directory the job wrote for publication (an adapter, a predictions
    file), or None; ``stats`` is JSON-safe.
    """

    measurements: list[Measurement]
    artifact_dir: Path | None
    stats: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]
