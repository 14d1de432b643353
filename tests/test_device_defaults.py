"""Defaults that depend on the device: the spec leaves them open, the worker's device fills them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.kinds.lora import DEVICE_DEFAULTS, LoraSpec
from ftqueue.specs import DataSpec

DATA = DataSpec(dataset="movie-snippets", train_samples=32, eval_samples=16)


def test_open_values_take_the_devices_and_given_ones_stay() -> None:
    spec = LoraSpec(model="minilm", data=DATA, lr=5e-4)
    assert spec.batch_size is None and spec.epochs is None
    stored = spec.to_dict()
    assert stored["batch_size"] is None and stored["lr"] == 5e-4
    gpu = spec.for_device("cuda")
    assert gpu.batch_size == DEVICE_DEFAULTS["gpu"]["batch_size"] == 256
    assert gpu.head_lr == DEVICE_DEFAULTS["gpu"]["head_lr"]
    assert gpu.epochs == DEVICE_DEFAULTS["gpu"]["epochs"]
    assert gpu.lr == 5e-4  # given on the command line: the same on every device
    cpu = spec.for_device("cpu")
    assert (cpu.batch_size, cpu.lr, cpu.head_lr, cpu.epochs) == (32, 5e-4, 1e-2, 2)
    # The same submitted spec is one job wherever it will run.
    assert LoraSpec(model="minilm", data=DATA, lr=5e-4).spec_hash() == spec.spec_hash()


def test_help_shows_the_cpu_and_the_gpu_defaults() -> None:
    result = CliRunner().invoke(cli, ["submit", "lora", "--help"], terminal_width=100)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert "[default: 32 on CPU, 256 on GPU]" in text
    assert "[default: 0.001 on CPU, 0.003 on GPU]" in text
    assert "[default: 0.01 on CPU, 0.03 on GPU]" in text
    assert "[default: 2 on CPU, 4 on GPU]" in text


@pytest.mark.slow
def test_a_cpu_job_records_the_recipe_it_used(tmp_path: Path) -> None:
    from ftqueue.training import run_lora

    spec = LoraSpec(model="minilm", data=DATA, epochs=1, lr=2e-3)
    outcome = run_lora(spec, adapter_dir=tmp_path / "adapter", cache_dir=tmp_path / "cache")
    recipe = outcome.stats["recipe"]
    assert {k: recipe[k] for k in ("batch_size", "lr", "head_lr", "epochs", "grad_accum")} == {
        "batch_size": 32, "lr": 2e-3, "head_lr": 1e-2, "epochs": 1, "grad_accum": 1,
    }  # fmt: skip
    assert recipe == spec.for_device("cpu").trained_with()
    assert outcome.stats["device"] == "cpu" and outcome.stats["fused_optimizer"] is True
    assert outcome.stats["train_examples"] == 32
