"""Adapters and exports load with stock peft and transformers, in a process without ftqueue.

The loading code is tests/stock_loading.py, run in a fresh interpreter with the hub offline;
it must reproduce the accuracy the training job recorded, row for row.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ftqueue.artifacts.publishing import ADAPTER_CONFIG, ADAPTER_METADATA, ADAPTER_WEIGHTS
from ftqueue.errors import AdapterError, SpecError
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.specs import resolve_model
from ftqueue.training import export_adapter, label_texts, run_evaluate
from tests.conftest import TrainedAdapter

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("stock_loading.py")
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
REVISION = "0" * 40


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds the offline MiniLM under its hub id, as a download
    would leave it: how a hub id in an adapter resolves with HF_HUB_OFFLINE=1."""
    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    for file in Path(resolve_model("minilm")).iterdir():
        if file.is_file():
            (snapshot / file.name).symlink_to(file)
    return home


def _rows(adapter: TrainedAdapter, tmp_path: Path) -> Path:
    path = tmp_path / "test.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for text, label in zip(adapter.test_texts, adapter.test_labels, strict=True):
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def _stock(route: str, model_dir: Path, rows: Path, *extra: str, hf_home: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTQUEUE_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), route, str(model_dir), str(rows), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ftqueue_imported"] is False
    return result


def _ours(adapter: TrainedAdapter) -> np.ndarray:
    """ftqueue's own class probabilities for the test rows."""
    return label_texts(adapter.directory, adapter.test_texts).probabilities


def test_the_adapter_directory_is_what_stock_tools_expect(default_adapter: TrainedAdapter) -> None:
    directory = default_adapter.directory
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == HUB_ID
    assert "classifier" in config["modules_to_save"]
    keys = set(load_file(directory / ADAPTER_WEIGHTS))
    assert keys and all(k.startswith("base_model.model.") for k in keys)
    assert {k.split(".")[2] for k in keys} == {"bert", "classifier"}
    assert any(".pooler.dense.lora_B." in k for k in keys)  # the pooler head is adapted too
    meta = json.loads((directory / ADAPTER_METADATA).read_text())
    assert meta["format"] == 2 and meta["stock_class"] == "BertForSequenceClassification"
    assert meta["label_names"] == ["negative", "positive"]
    card = (directory / "README.md").read_text()
    assert card.startswith("---\n") and f"base_model: {HUB_ID}" in card
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in directory.iterdir()}
    _no_machine_paths(directory)


def _no_machine_paths(directory: Path) -> None:
    """Files are 0644 (trained under umask 022) and name no path of this machine."""
    machine = {sys.prefix, str(Path(resolve_model("minilm")).parent), str(directory.parent)}
    machine |= {str(Path.home()), "/tmp/"}
    for file in directory.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file.name
        text = file.read_bytes().decode("utf-8", errors="replace")
        found = [m for m in machine if m in text] if file.suffix != ".safetensors" else []
        assert found == [], f"{file.name} names {found}"


@pytest.mark.parametrize("route", ["peft", "auto-peft", "transformers"])
def test_stock_peft_routes_reproduce_the_recorded_accuracy(
    default_adapter: TrainedAdapter, hub_cache: Path, tmp_path: Path, route: str
) -> None:
    base = [resolve_model("minilm")] if route == "peft" else []
    rows = _rows(default_adapter, tmp_path)
    result = _stock(route, default_adapter.directory, rows, *base, hf_home=hub_cache)
    assert abs(result["accuracy"] - default_adapter.test_accuracy) <= 0.001
    ours = _ours(default_adapter)
    assert result["predicted"] == ours.argmax(1).tolist()
    logits = np.asarray(result["logits"])
    theirs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    assert result["label_names"] == ["negative", "positive"]
    assert len(set(result["predicted"])) == 2  # a real classifier, not a constant


def test_export_and_pipeline_reproduce_the_recorded_accuracy(
    default_adapter: TrainedAdapter, hub_cache: Path, tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        out = export_adapter(default_adapter.directory, tmp_path / "export", job_id=1)
    finally:
        os.umask(previous)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= names
    assert not list(tmp_path.glob(".staging-*"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    _no_machine_paths(out)
    result = _stock("pipeline", out, _rows(default_adapter, tmp_path), hf_home=hub_cache)
    assert abs(result["accuracy"] - default_adapter.test_accuracy) <= 0.001
    assert result["predicted"] == _ours(default_adapter).argmax(1).tolist()
    assert result["label_names"] == ["negative", "positive"]
    with pytest.raises(SpecError, match="exists and is not an empty directory"):
        export_adapter(default_adapter.directory, out, job_id=1)


def _as_format_1(adapter: Path, into: Path) -> Path:
    """The adapter as ftqueue wrote it before format 2: keys under ``body.``, no tokenizer."""
    into.mkdir()
    weights = {
        k.replace("base_model.model.bert.", "base_model.model.body.", 1): v
        for k, v in load_file(adapter / ADAPTER_WEIGHTS).items()
    }
    save_file(weights, into / ADAPTER_WEIGHTS)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = None
    (into / ADAPTER_CONFIG).write_text(json.dumps(config))
    meta = json.loads((adapter / ADAPTER_METADATA).read_text())
    for key in ("body_attr", "model_type", "stock_class"):
        del meta[key]
    meta["format"] = 1
    (into / ADAPTER_METADATA).write_text(json.dumps(meta))
    return into


def test_a_format_1_adapter_still_evaluates_and_exports(
    default_adapter: TrainedAdapter, tmp_path: Path
) -> None:
    legacy = _as_format_1(default_adapter.directory, tmp_path / "job-1")
    assert all(".body." in k for k in load_file(legacy / ADAPTER_WEIGHTS) if ".lora_" in k)
    spec = EvaluateSpec(model="minilm", data=default_adapter.spec.data, adapter_job=1)
    [measured] = run_evaluate(spec, cache_dir=tmp_path / "cache", adapter_dir=legacy).measurements
    assert measured.accuracy == default_adapter.test_accuracy
    out = export_adapter(legacy, tmp_path / "export", job_id=1)  # checks logits as it goes
    assert (out / "model.safetensors").is_file()


def test_heads_no_stock_class_computes_are_refused(default_adapter: TrainedAdapter) -> None:
    from ftqueue.artifacts.publishing import check_exportable

    meta = json.loads((default_adapter.directory / ADAPTER_METADATA).read_text())
    check_exportable(meta, 1)
    for pooling in ("mean", "cls"):
        with pytest.raises(AdapterError) as info:
            check_exportable({**meta, "pooling": pooling, "stock_class": None}, 7)
        message = info.value.message
        assert f"--pooling {pooling}" in message and "ftqueue predict 7" in message
        assert "\n" not in message and info.value.exit_code == 2
