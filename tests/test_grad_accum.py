"""Gradient accumulation (``--grad-accum N``): the optimizer steps once per N micro-batches.

The field is a hyper-parameter recorded with the job; at 1 (the default) it is left out of
the stored spec, so specs from before it keep their hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec, config_hash
from ftqueue.sweeps import sweepfile
from tests.test_cli_errors import assert_one_line, invoke
from tests.test_submit_cli import job_count

DATA = DataSpec(dataset="movie-snippets", train_samples=20, eval_samples=8)
SYNTH = "synthetic:seconds=0,steps=2"


def test_one_is_left_out_of_the_spec_so_old_hashes_stay() -> None:
    plain = LoraSpec(model="minilm", data=DATA)
    assert plain.grad_accum == 1 and "grad_accum" not in plain.to_dict()
    assert "grad_accum" not in plain.canonical_json()
    same = LoraSpec(model="minilm", data=DATA, grad_accum=1)
    assert same.spec_hash() == plain.spec_hash()
    assert config_hash(same.to_dict()) == config_hash(plain.to_dict())
    # A spec stored before the field existed reads back as grad_accum 1, the same job.
    assert LoraSpec.from_dict(plain.to_dict()).spec_hash() == plain.spec_hash()
    two = LoraSpec(model="minilm", data=DATA, grad_accum=2)
    assert two.to_dict()["grad_accum"] == 2 and two.spec_hash() != plain.spec_hash()
    assert config_hash(two.to_dict()) != config_hash(plain.to_dict())


def test_submit_takes_grad_accum_and_show_prints_it(eager_sqlite: str) -> None:
    code, out = invoke("submit", "lora", "--model", SYNTH, "--dataset", "movie-snippets",
                       "--epochs", "1", "--grad-accum", "1,4", "--json")  # fmt: skip
    assert code == 0, out
    ids = sorted(job["id"] for job in json.loads(out)["jobs"])
    specs = [json.loads(CliRunner().invoke(cli, ["show", str(i), "--json"]).output) for i in ids]
    assert [s["spec"].get("grad_accum") for s in specs] == [None, 4]
    assert [s["trained_with"]["grad_accum"] for s in specs] == [1, 4]
    shown = CliRunner().invoke(cli, ["show", str(ids[1])], terminal_width=200).output
    assert "grad_accum 4" in {" ".join(line.replace("│", " ").split()) for line in
                              shown.splitlines()}  # fmt: skip


def test_a_bad_grad_accum_is_one_line(eager_sqlite: str) -> None:
    code, out = invoke("submit", "lora", "--model", "minilm", "--dataset", "movie-snippets",
                       "--grad-accum", "0")  # fmt: skip
    assert code == 2 and "--grad-accum must be 1..1024; got 0" in assert_one_line(out), out
    assert job_count() == 0


def test_a_sweep_file_searches_grad_accum() -> None:
    plan = sweepfile.parse({
        "kind": "lora", "model": "minilm", "dataset": "movie-snippets",
        "fixed": {"batch_size": 8}, "space": {"grad_accum": [1, 2, 4]},
    })  # fmt: skip
    assert [d.name for d in plan.space] == ["grad_accum"]
    assert plan.max_jobs == 3
    with pytest.raises(Exception, match="grad_accum"):
        sweepfile.parse({
            "kind": "lora", "model": "minilm", "dataset": "movie-snippets",
            "space": {"grad_accum": [0, 2]},
        })  # fmt: skip


@pytest.fixture
def eager_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    from ftqueue.settings import reset_settings

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    return sqlite_url


class _Linear:
    """A model whose loss is ``w * mean(x) / 1000`` over a batch (x: each row's one token):
    the gradient of a step says which rows it averaged, and with what weights."""

    def __init__(self) -> None:
        import torch

        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def __call__(
        self, *, input_ids: Any, attention_mask: Any, labels: Any, token_type_ids: Any = None
    ) -> Any:
        from types import SimpleNamespace

        self.seen.append(labels.tolist())  # a row's label is its index
        return SimpleNamespace(loss=self.w * input_ids[:, 0].float().mean() / 1000)

    def train(self) -> None:
        pass


def _fit(rows: int, batch_size: int, grad_accum: int) -> tuple[_Linear, list[float], int]:
    import torch

    from ftqueue.training.loop import FitPlan, Tracker, fit
    from ftqueue.training.tokens import Tokens

    x = np.arange(1, rows + 1, dtype=np.int32) * 7 % 31 + 1
    tokens = Tokens(x, np.arange(rows + 1, dtype=np.int64), np.arange(rows, dtype=np.int64))
    model = _Linear()
    grads: list[float] = []

    class Recording(torch.optim.SGD):
        """SGD that notes the gradient each step applies."""

        def step(self, closure: Any = None) -> Any:
            assert model.w.grad is not None
            grads.append(float(model.w.grad))
            return super().step(closure)

    optimizer = Recording([model.w], lr=0.0)
    plan = FitPlan(1, batch_size, 0.0, 0, 0, torch.device("cpu"), None, grad_accum)
    tracker = Tracker(None)
    seen = fit(model, tokens, optimizer, plan, tracker, lambda epoch, rung: True)  # type: ignore[arg-type]
    assert seen == rows and tracker.optimizer_steps == len(grads)
    return model, grads, int(x.sum())


def test_a_step_averages_its_micro_batches_and_a_short_last_group_still_steps() -> None:
    model, grads, _ = _fit(rows=10, batch_size=4, grad_accum=2)  # micro-batches 4, 4, 2
    x = np.arange(1, 11) * 7 % 31 + 1
    assert len(model.seen) == 3 and len(grads) == 2
    groups = [model.seen[0:2], model.seen[2:3]]
    for grad, group in zip(grads, groups, strict=True):
        want = sum(x[rows].mean() for rows in group) / len(group) / 1000
        assert grad == pytest.approx(want, rel=1e-6)
    # Equal micro-batches: the step's gradient is the mean over all their rows, as one batch.
    model, grads, _ = _fit(rows=16, batch_size=4, grad_accum=2)
    x = np.arange(1, 17) * 7 % 31 + 1
    for grad, i in zip(grads, range(0, 4, 2), strict=True):
        rows = model.seen[i] + model.seen[i + 1]
        assert grad == pytest.approx(x[rows].mean() / 1000, rel=1e-6)


@pytest.mark.parametrize(
    ("rows", "batch", "accum", "steps"),
    [(36, 4, 2, 5), (36, 4, 3, 3), (32, 8, 1, 4), (32, 4, 2, 4)],
)
def test_optimizer_steps_are_micro_batches_over_n_rounded_up(
    rows: int, batch: int, accum: int, steps: int
) -> None:
    _, grads, _ = _fit(rows=rows, batch_size=batch, grad_accum=accum)
    assert len(grads) == steps


@pytest.mark.slow  # a few seconds of CPU training, minutes on a loaded machine
def test_real_training_with_batch_4_and_2_steps_as_often_as_batch_8(tmp_path: Path) -> None:
    from ftqueue.training import run_lora

    outcomes = {}
    for batch, accum in ((8, 1), (4, 2)):
        spec = LoraSpec(model="minilm", data=DATA, epochs=1, batch_size=batch, grad_accum=accum,
                        max_length=32, lr=2e-3)  # fmt: skip
        out = run_lora(spec, adapter_dir=tmp_path / f"a{batch}", cache_dir=tmp_path / "cache")
        outcomes[batch] = out
    big, small = outcomes[8].stats, outcomes[4].stats
    # 20 rows: 3 batches of 8; 5 micro-batches of 4, the last group of 1 stepping too.
    assert big["optimizer_steps"] == small["optimizer_steps"] == 3
    assert big["train_examples"] == small["train_examples"] == 20
    assert small["recipe"]["grad_accum"] == 2 and small["recipe"]["batch_size"] == 4
    test = [m for m in outcomes[4].measurements if m.split == "test"]
    assert len(test) == 1 and 0.0 <= test[0].accuracy <= 1.0 and np.isfinite(test[0].loss)
    assert (tmp_path / "a4" / "adapter_model.safetensors").is_file()


def test_a_sweep_over_grad_accum_reports_the_values_trials_trained_with(
    eager_sqlite: str, tmp_path: Path
) -> None:
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "model": SYNTH, "dataset": "movie-snippets", "name": "accum",
        "fixed": {"epochs": 1}, "space": {"grad_accum": [1, 2]},
    }))  # fmt: skip
    code, out = invoke("sweep", str(path))
    assert code == 0, out
    code, out = invoke("report", "--sweep", "accum", "--format", "json")
    assert code == 0, out
    trials = json.loads(out)["trials"]
    # grad_accum 1 is left out of the trial's spec; the report still says 1, not None.
    assert sorted(t["values"]["grad_accum"] for t in trials) == [1, 2]
