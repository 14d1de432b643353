"""Staging directories, atomic publication, stray detection and adapter directory checks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from ftqueue.artifacts.publishing import (
    ADAPTER_CONFIG,
    ADAPTER_METADATA,
    ADAPTER_WEIGHTS,
    check_adapter_dir,
    find_stray_staging,
    new_staging_dir,
    publish_dir,
)
from ftqueue.core.files import write_json_atomic
from ftqueue.errors import AdapterError, FtqueueError


def test_staging_dirs_are_unique_hidden_siblings(tmp_path: Path) -> None:
    parent = tmp_path / "adapters"
    first = new_staging_dir(parent, "job-1")
    second = new_staging_dir(parent, "job-1")
    assert first != second
    assert first.parent == parent == second.parent
    assert first.name.startswith(".staging-job-1-")
    assert first.is_dir() and not any(first.iterdir())


def test_publish_moves_the_complete_directory(tmp_path: Path) -> None:
    staging = new_staging_dir(tmp_path, "job-1")
    (staging / "weights").write_text("new")
    final = publish_dir(staging, tmp_path / "job-1")
    assert final == tmp_path / "job-1"
    assert (final / "weights").read_text() == "new"
    assert not staging.exists()
    assert find_stray_staging(tmp_path) == []


def test_publish_replaces_an_existing_directory_and_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "job-1"
    final.mkdir()
    (final / "old-only").write_text("old")
    staging = new_staging_dir(tmp_path, "job-1")
    (staging / "weights").write_text("new")
    publish_dir(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["weights"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-1"]


def test_publish_refuses_a_missing_staging_dir(tmp_path: Path) -> None:
    final = tmp_path / "job-1"
    final.mkdir()
    (final / "weights").write_text("kept")
    with pytest.raises(FtqueueError, match="not a directory"):
        publish_dir(tmp_path / ".staging-gone", final)
    assert (final / "weights").read_text() == "kept"


def test_find_stray_staging_lists_leftovers_by_age(tmp_path: Path) -> None:
    old = new_staging_dir(tmp_path / "adapters", "job-3")
    (old / ".staging-nested").mkdir()  # inside a stray: not listed separately
    aside = tmp_path / "adapters" / ".replaced-job-2-abcd1234"
    aside.mkdir()
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(aside, (past, past))
    fresh = new_staging_dir(tmp_path / "adapters", "job-4")
    (tmp_path / "adapters" / "job-1").mkdir()
    assert find_stray_staging(tmp_path) == sorted([old, aside, fresh])
    assert find_stray_staging(tmp_path, older_than=600) == sorted([old, aside])
    assert find_stray_staging(tmp_path / "missing") == []


#: The least adapter_config.json peft loads.
CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["query"]}


def _adapter(path: Path) -> Path:
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    zeros = np.zeros((2, 4), np.float32)
    save_file(
        {"base_model.model.bert.query.lora_A.weight": zeros,
         "base_model.model.classifier.weight": zeros},
        str(path / ADAPTER_WEIGHTS),
    )  # fmt: skip
    (path / ADAPTER_CONFIG).write_text(json.dumps(CONFIG))
    metadata = {"model": "minilm", "num_labels": 2, "label_names": ["n", "p"]}
    write_json_atomic(path / ADAPTER_METADATA, {**metadata, "pooling": "mean", "max_length": 64})
    return path


def _edit(path: Path, name: str, **changes: object) -> None:
    payload = json.loads((path / name).read_text())
    payload.update(changes)
    (path / name).write_text(json.dumps(payload))


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        (ADAPTER_METADATA, {"num_labels": "2"}, "has num_labels = '2', which should be"),
        (ADAPTER_METADATA, {"label_names": ["a", "b", "c"], "num_labels": 3},
         "has a head for 2 labels, but ftqueue_adapter.json says num_labels = 3"),
        (ADAPTER_METADATA, {"label_names": ["a", "b", "c"]}, "3 label names (3 distinct)"),
        (ADAPTER_METADATA, {"label_names": ["a", "a"]}, "2 label names (1 distinct)"),
        (ADAPTER_METADATA, {"pooling": "max"}, "has pooling = 'max', which should be"),
        (ADAPTER_METADATA, {"seed": 3}, "has keys ftqueue does not write ('seed')"),
        (ADAPTER_METADATA, {"spec": {"model": "minilm", "max_length": 128}},
         "has max_length = 64 but its job's spec says 128"),
        (ADAPTER_CONFIG, {"r": "2"}, "adapter_config.json has r = '2', which should be"),
        (ADAPTER_CONFIG, {"peft_type": "IA3"}, "has peft_type = 'IA3'"),
        (ADAPTER_CONFIG, {"lora_dropout": 1.5}, "has lora_dropout = 1.5"),
    ],
)  # fmt: skip
def test_check_adapter_dir_names_the_file_and_the_problem(
    tmp_path: Path, name: str, changes: dict[str, object], message: str
) -> None:
    adapter = _adapter(tmp_path / "a")
    _edit(adapter, name, **changes)
    with pytest.raises(AdapterError) as info:
        check_adapter_dir(adapter)
    assert message in info.value.message and name in info.value.message
    assert "\n" not in info.value.message


def test_check_adapter_dir_refuses_damaged_weights(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path / "a")
    data = (adapter / ADAPTER_WEIGHTS).read_bytes()
    for cut in (0, 7, 8, 40, len(data) - 1):
        (adapter / ADAPTER_WEIGHTS).write_bytes(data[:cut])
        with pytest.raises(AdapterError, match=f"{ADAPTER_WEIGHTS} is damaged"):
            check_adapter_dir(adapter)


def test_the_pooling_names_are_the_specs() -> None:
    from ftqueue.artifacts import adapter_files
    from ftqueue.specs.base import POOLINGS

    assert sorted(adapter_files.POOLINGS) == sorted(POOLINGS)


def test_check_adapter_dir_accepts_a_complete_adapter(tmp_path: Path) -> None:
    metadata = check_adapter_dir(_adapter(tmp_path / "a"))
    assert metadata["num_labels"] == 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        [ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_METADATA]
    )


@pytest.mark.parametrize("pickle_name", ["adapter_model.bin", "extra.pt", "head.pkl", "x.ckpt"])
def test_check_adapter_dir_refuses_pickle_weights(tmp_path: Path, pickle_name: str) -> None:
    adapter = _adapter(tmp_path / "a")
    (adapter / pickle_name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(AdapterError) as info:
        check_adapter_dir(adapter)
    assert pickle_name in info.value.message and "safetensors" in info.value.message
    assert info.value.param == "--adapter-job"


@pytest.mark.parametrize("missing", [ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_METADATA])
def test_check_adapter_dir_refuses_incomplete_adapters(tmp_path: Path, missing: str) -> None:
    adapter = _adapter(tmp_path / "a")
    (adapter / missing).unlink()
    with pytest.raises(AdapterError, match=f"{missing} is missing"):
        check_adapter_dir(adapter)


def test_check_adapter_dir_refuses_missing_or_bad_metadata(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"does not exist.*succeeded"):
        check_adapter_dir(tmp_path / "job-404")
    adapter = _adapter(tmp_path / "a")
    (adapter / ADAPTER_METADATA).write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        check_adapter_dir(adapter)
    (adapter / ADAPTER_METADATA).write_text(json.dumps({"model": "minilm"}))
    with pytest.raises(AdapterError, match="lacks num_labels"):
        check_adapter_dir(adapter)


def test_write_json_atomic_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "meta.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "meta.json").read_text()) == {"a": [1, 2], "b": 1}
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
