"""What a job reads is part of what it is: data files and model directories pinned at submit
(absolute path, content fingerprint), refused when unsafe, and checked again by the worker."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from ftqueue.cli import cli
from ftqueue.errors import DatasetError, ModelError
from ftqueue.inputs import fingerprint, pinning, weights
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.store.schema import Job
from ftqueue.submit.submission import validate

SYN = "synthetic:seconds=0.05,steps=2"


def _csv(path: Path, n: int = 40, salt: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"sentence {salt}{i},{i % 2}" for i in range(n))
    path.write_text(f"text,label\n{rows}\n")
    return path


def submit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["submit", "lora", "--model", SYN, *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def jobs() -> list[Job]:
    with db.session_scope() as session:
        return list(session.query(Job).order_by(Job.id))


# --- data ----------------------------------------------------------------------------------


def test_same_relative_name_in_two_directories_is_two_jobs(
    eager: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for place in ("a", "b"):
        _csv(tmp_path / place / "data.csv", salt=place)
    monkeypatch.chdir(tmp_path / "a")
    assert submit("--dataset", "data.csv")[0] == 0
    monkeypatch.chdir(tmp_path / "b")
    code, out = submit("--dataset", "data.csv")
    assert code == 0 and "identical" not in out, out
    first, second = jobs()
    assert first.dataset == str((tmp_path / "a" / "data.csv").resolve())
    assert second.dataset == str((tmp_path / "b" / "data.csv").resolve())
    assert first.spec["data"]["fingerprint"] != second.spec["data"]["fingerprint"]
    # The same file again, by another relative name: the same job.
    monkeypatch.chdir(tmp_path)
    code, out = submit("--dataset", "./b/../b/data.csv")
    assert code == 0 and f"identical to job {second.id}" in out
    assert len(jobs()) == 2
    # Filters take the name as typed here and match the stored absolute path.
    monkeypatch.chdir(tmp_path / "a")
    listed = CliRunner().invoke(cli, ["list", "--dataset", "data.csv", "--json"])
    assert [j["id"] for j in json.loads(listed.output)] == [first.id]


def test_a_file_edited_in_place_is_a_new_job_and_a_touch_is_not(eager: str, tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.csv")
    assert submit("--dataset", str(path))[0] == 0
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    code, out = submit("--dataset", str(path))
    assert "identical to job 1" in out, out
    # Same size, same mtime, other bytes: the content hash tells.
    path.write_text(path.read_text().replace("sentence 3,1", "sentence 9,1"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, out = submit("--dataset", str(path))
    assert code == 0 and "identical" not in out, out
    assert len(jobs()) == 2


def test_named_splits_are_pinned_in_canonical_order(tmp_path: Path) -> None:
    train, test = _csv(tmp_path / "train.csv"), _csv(tmp_path / "test.csv", salt="t")
    one = pinning.pin_data(DataSpec(dataset=f"test={test},train={train}"))
    other = pinning.pin_data(DataSpec(dataset=f"train={tmp_path}/./train.csv,test={test}"))
    assert one == other and one.dataset == f"train={train.resolve()},test={test.resolve()}"
    assert pinning.pin_data(DataSpec(dataset="movie-snippets")).fingerprint is None


def test_a_grid_over_one_file_hashes_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _csv(tmp_path / "data.csv")
    fingerprint.forget()
    calls = []
    real = hashlib.file_digest

    def counting(handle, digest):  # type: ignore[no-untyped-def]
        calls.append(handle.name)
        return real(handle, digest)

    monkeypatch.setattr(fingerprint.hashlib, "file_digest", counting)
    data = DataSpec(dataset=str(path))
    specs = validate(LoraSpec(model=SYN, data=data, seed=s) for s in range(1000))
    assert len({s.spec_hash() for s in specs}) == 1000
    assert calls == [str(path)]
    assert {s.data.fingerprint for s in specs} == {specs[0].data.fingerprint}


def test_reading_a_changed_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.csv")
    pinned = pinning.pin_data(DataSpec(dataset=str(path)))
    from ftqueue.inputs.labelled import resolve_dataset

    assert len(resolve_dataset(pinned).train) > 0
    _csv(path, salt="edited ")
    with pytest.raises(DatasetError) as info:
        resolve_dataset(pinned)
    assert "changed since the job was submitted" in info.value.message
    assert "\n" not in info.value.message


# --- model directories ---------------------------------------------------------------------


def _model_dir(path: Path, tensors: dict[str, np.ndarray] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    if tensors is not None:
        save_file(tensors, path / "model.safetensors")
    return path


BODY = {"embeddings.word_embeddings.weight": np.ones((8, 4), dtype=np.float32)}


def test_model_directory_with_pickle_weights_only_is_refused(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match=r"only pickle weights \(pytorch_model\.bin\)"):
        weights.resolve_model(str(model))
    (model / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match=r"has no model\.safetensors"):
        weights.resolve_model(str(model))


def test_adapters_truncated_and_empty_weights_are_refused(tmp_path: Path) -> None:
    adapter = _model_dir(tmp_path / "adapter")
    (adapter / "adapter_config.json").write_text("{}")
    save_file(
        {"a.lora_A.weight": np.ones((2, 2), np.float32)}, adapter / "adapter_model.safetensors"
    )
    with pytest.raises(ModelError, match="is a LoRA adapter, not a model"):
        weights.resolve_model(str(adapter))
    lora_only = _model_dir(tmp_path / "lora", {"x.lora_A.weight": np.ones((2, 2), np.float32)})
    with pytest.raises(ModelError, match="holds LoRA adapter weights"):
        weights.resolve_model(str(lora_only))
    truncated = _model_dir(tmp_path / "truncated", BODY)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-16])
    with pytest.raises(ModelError, match="is truncated"):
        weights.resolve_model(str(truncated))
    garbage = _model_dir(tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match="is not a safetensors file"):
        weights.resolve_model(str(garbage))
    sharded = _model_dir(tmp_path / "sharded")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match=r"lacks model-00001-of-00002\.safetensors"):
        weights.resolve_model(str(sharded))


def test_submit_refuses_a_pickle_model_directory_with_exit_2(eager: str, tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    result = CliRunner().invoke(
        cli, ["submit", "lora", "--model", str(model), "--dataset", "movie-snippets"]
    )
    assert result.exit_code == 2 and "pickle" in result.output
    assert result.output.strip().count("\n") == 0 and not jobs()


def test_model_directory_fingerprint_follows_its_files(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m", BODY)
    name, first = pinning.pin_model(str(tmp_path / "m" / ".." / "m"))
    assert name == str(model.resolve()) and first is not None
    weights.verify(model, first)
    (model / "README.md").write_text("not read by from_pretrained")
    assert pinning.pin_model(str(model))[1] == first
    save_file(
        {**BODY, "pooler.dense.weight": np.ones((4, 4), np.float32)}, model / "model.safetensors"
    )
    assert pinning.pin_model(str(model))[1] != first
    with pytest.raises(ModelError, match="changed since the job was submitted"):
        weights.verify(model, first)
    assert pinning.pin_model("minilm") == ("minilm", None)


def test_worker_refuses_a_checkpoint_missing_body_weights(tmp_path: Path) -> None:
    """Loading a body with weights missing would start them from random values."""
    import torch
    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    from ftqueue.training.modeling import load_base

    source = Path(weights.resolve_model("minilm"))
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in weights.READ_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, partial / name)
    state = load_file(source / "model.safetensors")
    save_torch(
        {k: v for k, v in state.items() if ".layer.0." not in k}, partial / "model.safetensors"
    )
    with pytest.raises(ModelError, match=r"weights of its body are not in its checkpoint"):
        load_base(str(partial), torch.device("cpu"))


# --- on a real worker ----------------------------------------------------------------------


@pytest.mark.slow
def test_worker_refuses_inputs_that_changed_after_submit(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """One job reads what it was submitted with and succeeds; one finds its data file edited,
    one its model directory: both fail with one line, before any training."""
    from ftqueue.kinds.evaluate import EvaluateSpec
    from ftqueue.submit.submission import submit as queue
    from tests.procs import WorkerProcess, all_terminal, child_env, wait_for

    source = Path(weights.resolve_model("minilm"))
    models = {}
    for name in ("kept", "edited"):
        model = models[name] = tmp_path / f"model-{name}"
        model.mkdir()
        for entry in source.iterdir():
            if entry.is_file():
                (model / entry.name).symlink_to(entry)  # the 90 MB weights are shared, not copied
        (model / "config.json").unlink()
        shutil.copy(source / "config.json", model / "config.json")
    data = {name: _csv(tmp_path / f"{name}.csv", n=60, salt=name) for name in ("kept", "edited")}

    def spec(model: str, dataset: str) -> EvaluateSpec:
        subset = DataSpec(dataset=str(data[dataset]), train_samples=16, eval_samples=8)
        return EvaluateSpec(model=str(models[model]), data=subset)

    sub = queue([spec("kept", "kept"), spec("kept", "edited"), spec("edited", "kept")])
    ok, data_changed, model_changed = (job.id for job in sub.created)
    _csv(data["edited"], n=60, salt="after submit ")
    config = json.loads((models["edited"] / "config.json").read_text())
    (models["edited"] / "config.json").write_text(json.dumps({**config, "note": "edited"}))

    worker = WorkerProcess("inputs", env=child_env(), log_dir=tmp_path).start()
    try:
        worker.wait_ready()
        ids = [ok, data_changed, model_changed]
        wait_for(lambda: all_terminal(ids), timeout=240, what="the three jobs to end")
    finally:
        worker.stop()
    with db.session_scope() as session:
        rows = {job.id: job for job in session.query(Job).filter(Job.id.in_(ids))}
    assert rows[ok].status == "succeeded", rows[ok].error_message
    for jid, what in ((data_changed, str(data["edited"])), (model_changed, str(models["edited"]))):
        job = rows[jid]
        assert job.status == "failed" and job.attempts == 1
        assert job.error_message and "changed since the job was submitted" in job.error_message
        assert what in job.error_message and "\n" not in job.error_message


def test_every_kind_records_what_it_reads() -> None:
    """A kind whose spec had no model_fingerprint would treat an edited model as the same job."""
    import dataclasses

    from ftqueue import kinds

    for kind in kinds.all_kinds():
        names = {f.name for f in dataclasses.fields(kind.spec_type)}
        assert "model_fingerprint" in names, f"{kind.name}: add model_fingerprint_field()"
    assert "fingerprint" in {f.name for f in dataclasses.fields(DataSpec)}


def test_a_model_directory_is_checked_once_until_its_files_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10,000-spec grid asks for the same directory 10,000 times: the headers are read
    once, and again only when a file's size or time changes (then damage is still caught)."""
    import torch
    from safetensors.torch import save_file

    from ftqueue.errors import ModelError
    from ftqueue.inputs import weights

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    save_file({"encoder.layer.0.query.weight": torch.zeros(4, 4)}, str(model / "model.safetensors"))
    reads: list[Path] = []
    real = weights._check_header
    monkeypatch.setattr(weights, "_check_header", lambda f: reads.append(f) or real(f))
    for _ in range(3):
        assert weights.check_model_dir(model) == [model / "model.safetensors"]
    assert len(reads) == 1
    # The layer names are read once more (kept per version of the files), then not again.
    for _ in range(3):
        assert weights.layer_names(str(model)) == ["encoder.layer.0.query"]
    assert len(reads) == 2
    # Cut short: read again, and refused.
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[:-8])
    with pytest.raises(ModelError, match="truncated"):
        weights.check_model_dir(model)
    assert len(reads) == 3
