"""Fixed shapes and the compiled step on a CUDA GPU (marker ``gpu``; bench/gpu_check.sh runs
it): the same per-step losses as dynamically padded training, eager and compiled, and a
second job in the process compiles nothing."""

from __future__ import annotations

import pytest
import torch

from ftqueue.training import loop
from tests.test_fixed_shapes import _losses, _tokens

CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU"),
]
GPU = torch.device("cuda")


# max-autotune-no-cudagraphs compiles for minutes: bench/gpu_check.sh measures it instead.
@pytest.mark.parametrize("mode", ["off", "reduce-overhead"])
def test_fixed_shapes_on_the_gpu_give_the_same_losses(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 1)
    # fp32 without TF32: the paths differ only in padding, filler rows and kernels.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    tokens, base = _tokens(device=GPU)
    eager, _ = _losses(tokens, base, fixed=False, device=GPU)
    fixed, tracker = _losses(tokens, base, fixed=True, compile_mode=mode, device=GPU)
    assert fixed == pytest.approx(eager, abs=1e-3)
    if mode != "off":
        assert tracker.compiles >= 1 and tracker.compile_seconds > 0.0
        _, again = _losses(tokens, base, fixed=True, compile_mode=mode, device=GPU)
        assert again.compiles == 0


def test_bf16_fixed_shapes_stay_close_to_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "PROGRESS_EVERY", 1)
    tokens, base = _tokens(device=GPU)
    eager, _ = _losses(tokens, base, fixed=False, device=GPU, amp=torch.bfloat16)
    compiled, _ = _losses(
        tokens, base, fixed=True, compile_mode="reduce-overhead", device=GPU, amp=torch.bfloat16
    )
    # bf16 keeps 8 bits of mantissa: padding changes the summation order, not the result.
    assert compiled == pytest.approx(eager, abs=3e-2)
