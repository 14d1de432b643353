"""Job specs: defaults, validation messages, JSON round trips, hashing, model checks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ftqueue.errors import ModelError, SpecError
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec, resolve_model, validate_against_model

DATA = DataSpec(dataset="movie-snippets")


def lora(**changes: object) -> LoraSpec:
    fields: dict[str, object] = {"model": "minilm", "data": DATA, **changes}
    return LoraSpec(**fields)  # type: ignore[arg-type]


def test_original_script_settings_are_expressible() -> None:
    spec = lora(
        r=32, alpha=4, dropout=0.01, target_modules=["query", "key", "value"], pooling="pooler"
    )
    assert (spec.r, spec.alpha, spec.dropout) == (32, 4.0, 0.01)
    assert spec.target_modules == ("query", "key", "value")
    assert spec.pooling == "pooler"


@pytest.mark.parametrize(
    ("field", "value", "param", "fragment"),
    [
        ("lr", 0, "--lr", "(0, 1]"),
        ("lr", -1e-3, "--lr", "(0, 1]"),
        ("lr", math.nan, "--lr", "got nan"),
        ("lr", math.inf, "--lr", "got inf"),
        ("lr", 2.0, "--lr", "(0, 1]"),
        ("lr", "fast", "--lr", "finite number"),
        ("head_lr", 0.0, "--head-lr", "(0, 1]"),
        ("epochs", 0, "--epochs", "1..1000"),
        ("epochs", -3, "--epochs", "1..1000"),
        ("epochs", math.nan, "--epochs", "whole number"),
        ("epochs", math.inf, "--epochs", "whole number"),
        ("epochs", 10**9, "--epochs", "1..1000"),
        ("epochs", 2.5, "--epochs", "whole number"),
        ("epochs", True, "--epochs", "whole number"),
        ("batch_size", 0, "--batch-size", "1..8192"),
        ("batch_size", 10**6, "--batch-size", "1..8192"),
        ("eval_batch_size", 0, "--eval-batch-size", "1..8192"),
        ("r", 0, "--r", "1..1024"),
        ("r", 4096, "--r", "1..1024"),
        ("alpha", 0, "--alpha", "finite number"),
        ("alpha", -8, "--alpha", "finite number"),
        ("alpha", math.nan, "--alpha", "finite number"),
        ("dropout", -0.1, "--dropout", "[0, 1)"),
        ("dropout", 1.0, "--dropout", "[0, 1)"),
        ("model_dropout", 1.0, "--model-dropout", "[0, 1)"),
        ("model_dropout", math.nan, "--model-dropout", "[0, 1)"),
        ("warmup_ratio", 1.0, "--warmup-ratio", "[0, 1)"),
        ("weight_decay", 1.5, "--weight-decay", "[0, 1]"),
        ("max_length", 4, "--max-length", "8..8192"),
        ("max_length", 100_000, "--max-length", "8..8192"),
        ("seed", -1, "--seed", "0..4294967295"),
        ("target_modules", (), "--target-modules", "one or more"),
        ("target_modules", ("query", "bad name"), "--target-modules", "bad name"),
        ("target_modules", ("query", "query"), "--target-modules", "distinct"),
        ("bias", "some", "--bias", "none, all, lora_only"),
        ("pooling", "max", "--pooling", "mean, cls, pooler"),
        ("model", "  ", "--model", "non-empty"),
    ],
)
def test_out_of_range_values_name_the_flag_and_range(
    field: str, value: object, param: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as info:
        lora(**{field: value})
    assert info.value.param == param
    assert param in info.value.message
    assert fragment in info.value.message


def test_integral_floats_from_json_become_ints() -> None:
    spec = lora(epochs=3.0, r=8.0)
    assert spec.epochs == 3 and isinstance(spec.epochs, int)
    assert spec.r == 8 and isinstance(spec.r, int)


def test_lora_round_trips_through_json() -> None:
    spec = lora(r=8, target_modules=("query", "value"), data=DataSpec(dataset="x.csv"))
    wire = json.loads(json.dumps(spec.to_dict()))
    assert wire["target_modules"] == ["query", "value"]
    assert wire["data"]["dataset"] == "x.csv"
    again = LoraSpec.from_dict(wire)
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()


def test_hash_is_canonical_and_sensitive() -> None:
    spec = lora()
    assert spec.spec_hash() == lora(alpha=32).spec_hash()  # int vs float alpha
    assert len(spec.spec_hash()) == 64
    assert spec.spec_hash() != replace(spec, seed=1).spec_hash()
    assert (
        spec.spec_hash() != lora(data=DataSpec(dataset="movie-snippets", split_seed=1)).spec_hash()
    )
    evaluate = EvaluateSpec(model="minilm", data=DATA)
    assert json.loads(evaluate.canonical_json())["kind"] == "evaluate"


def test_from_dict_rejects_unknown_keys_and_wrong_kind() -> None:
    wire = lora().to_dict()
    with pytest.raises(SpecError) as info:
        LoraSpec.from_dict({**wire, "learning_rate": 0.1})
    assert "learning_rate" in info.value.message and info.value.param == "--learning-rate"
    with pytest.raises(SpecError, match="unknown DataSpec field"):
        LoraSpec.from_dict({**wire, "data": {"dataset": "movie-snippets", "colour": "red"}})
    with pytest.raises(SpecError, match="not a evaluate spec"):
        EvaluateSpec.from_dict(
            {**EvaluateSpec(model="minilm", data=DATA).to_dict(), "kind": "lora"}
        )


def test_data_spec_named_splits() -> None:
    spec = DataSpec(dataset="train=a.csv, test=b.csv")
    assert spec.named_splits() == {"train": "a.csv", "test": "b.csv"}
    assert DataSpec(dataset="a.csv").named_splits() is None
    for bad in ("test=b.csv", "train=a.csv,train=c.csv", "train=a.csv,dev=b.csv", "train="):
        with pytest.raises(SpecError) as info:
            DataSpec(dataset=bad)
        assert info.value.param == "--dataset"


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("train_samples", 1, "--train-samples"),
        ("eval_samples", 0, "--eval-samples"),
        ("split_seed", -2, "--split-seed"),
        ("text_column", "", "--text-column"),
    ],
)
def test_data_spec_ranges(field: str, value: object, param: str) -> None:
    with pytest.raises(SpecError) as info:
        DataSpec(dataset="movie-snippets", **{field: value})  # type: ignore[arg-type]
    assert info.value.param == param


def test_evaluate_head_epochs_depend_on_adapter() -> None:
    bare = EvaluateSpec(model="minilm", data=DATA)
    assert (bare.head_epochs, bare.pooling) == (1, "mean")
    with_adapter = EvaluateSpec(model="minilm", data=DATA, adapter_job=7)
    assert (with_adapter.head_epochs, with_adapter.pooling) == (0, None)
    assert EvaluateSpec.from_dict(with_adapter.to_dict()) == with_adapter
    with pytest.raises(SpecError) as info:
        EvaluateSpec(model="minilm", data=DATA, head_epochs=0)
    assert info.value.param == "--head-epochs" and "--adapter-job" in info.value.message
    with pytest.raises(SpecError) as info:
        EvaluateSpec(model="minilm", data=DATA, adapter_job=7, head_epochs=2)
    assert info.value.param == "--head-epochs"
    with pytest.raises(SpecError) as info:
        EvaluateSpec(model="minilm", data=DATA, adapter_job=0)
    assert info.value.param == "--adapter-job"
    with pytest.raises(SpecError) as info:
        EvaluateSpec(model="minilm", data=DATA, split="dev")
    assert info.value.param == "--split"


def test_max_length_above_the_model_limit() -> None:
    with pytest.raises(SpecError) as info:
        validate_against_model(lora(max_length=1024))
    assert info.value.param == "--max-length" and "8..512" in info.value.message
    assert Path(validate_against_model(lora(max_length=512))).is_dir()


def test_local_model_directories(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    save_file(
        {"embeddings.weight": np.zeros((4, 2), dtype=np.float32)}, tmp_path / "model.safetensors"
    )
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    spec = LoraSpec(model=str(tmp_path), data=DATA, max_length=128)
    with pytest.raises(SpecError, match=r"8\.\.64"):
        validate_against_model(spec)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model(str(empty))


@pytest.mark.parametrize("name", ["no such model!", "./missing-dir", "/nope/at/all", "a/b/c"])
def test_unknown_models(name: str) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(name)
    assert info.value.param == "--model"
    assert "unknown model" in info.value.message and "alias minilm" in info.value.message


def test_hub_ids_pass_offline_checks() -> None:
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model("google/bert_uncased_L-2_H-128_A-2") == "google/bert_uncased_L-2_H-128_A-2"


def test_spec_data_and_artifacts_modules_do_not_import_torch() -> None:
    code = (
        "import sys, ftqueue.specs, ftqueue.inputs.labelled, ftqueue.artifacts.publishing, "
        "ftqueue.training; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
