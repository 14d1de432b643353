"""Properties of damaged and edited adapters, on a real trained adapter (Hypothesis).

The adapter is trained once per session (``default_adapter``); each example restores the
job's copy of it and damages one file: truncated at any byte, its JSON edited at random
(keys removed, values of the wrong type, labels that do not match the head, values that
disagree with the job's spec or with the base model). The property, through both commands
that read an adapter (`ftqueue predict` and `ftqueue export`): exit 2, one line that names the
damaged file, nothing written, within a time bound. No edit is accepted in silence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftqueue.artifacts.adapter_files import (
    ADAPTER_CONFIG,
    ADAPTER_METADATA,
    ADAPTER_WEIGHTS,
    METADATA_REQUIRED,
    METADATA_SCHEMA,
)
from ftqueue.cli import cli
from ftqueue.settings import get_settings
from tests.conftest import TrainedAdapter
from tests.test_predict import register_adapter

pytestmark = pytest.mark.slow

#: Each command's time bound per example, in seconds: generous for a loaded 2-core machine
#: (the refusals before any model loads take milliseconds).
EXAMPLE_SECONDS = 60.0
FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_METADATA)

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Damaged:
    """The job whose adapter the examples damage, and its files as trained."""

    job_id: int
    directory: Path
    original: dict[str, bytes]
    out: Path

    def restore(self) -> None:
        for name, data in self.original.items():
            (self.directory / name).write_bytes(data)

    def json(self, name: str) -> Any:
        return json.loads(self.original[name])


@pytest.fixture
def damaged(sqlite_url: str, default_adapter: TrainedAdapter, tmp_path: Path) -> Iterator[Damaged]:
    job_id = register_adapter(default_adapter)
    directory = get_settings().artifacts_dir / "adapters" / f"job-{job_id}"
    original = {name: (directory / name).read_bytes() for name in FILES}
    out = tmp_path / "exports"
    out.mkdir()
    yield Damaged(job_id, directory, original, out)


def _cli(*args: str) -> tuple[int, str, float]:
    started = time.perf_counter()
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the property fails with it
    return result.exit_code, result.output, time.perf_counter() - started


def refused(adapter: Damaged, name: str, damage: Callable[[Path], None]) -> None:
    """Damage ``name`` in a fresh copy; predict and export both refuse it as the property says."""
    adapter.restore()
    damage(adapter.directory / name)
    files = sorted(p.name for p in adapter.directory.iterdir())
    target = adapter.out / "model"
    for args in (["predict", str(adapter.job_id), "a fine film"],
                 ["export", str(adapter.job_id), str(target)]):  # fmt: skip
        code, out, seconds = _cli(*args)
        assert code == 2, (args, out)
        assert len(out.strip().splitlines()) == 1 and name in out, (args, out)
        assert seconds < EXAMPLE_SECONDS, (args, seconds)
        assert list(adapter.out.iterdir()) == [], "the export wrote something"
        assert sorted(p.name for p in adapter.directory.iterdir()) == files


def truncate_at(cut: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:cut])

    return damage


def edit_json(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return damage


def test_the_trained_adapter_itself_passes(damaged: Damaged) -> None:
    """The baseline the damage is measured from: untouched, both commands work."""
    code, out, _ = _cli("predict", str(damaged.job_id), "a fine film", "--json")
    assert code == 0, out
    code, out, _ = _cli("export", str(damaged.job_id), str(damaged.out / "model"))
    assert code == 0, out


@PROPERTY
@given(data=st.data())
def test_a_file_truncated_at_any_byte_is_refused(damaged: Damaged, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(FILES), label="file")
    cut = data.draw(st.integers(0, len(damaged.original[name]) - 1), label="cut")
    refused(damaged, name, truncate_at(cut))


@PROPERTY
@given(prefix=st.binary(min_size=8, max_size=8))
def test_a_garbled_safetensors_header_length_is_refused(damaged: Damaged, prefix: bytes) -> None:
    if prefix == damaged.original[ADAPTER_WEIGHTS][:8]:
        prefix = bytes([prefix[0] ^ 1]) + prefix[1:]

    def damage(path: Path) -> None:
        path.write_bytes(prefix + path.read_bytes()[8:])

    refused(damaged, ADAPTER_WEIGHTS, damage)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


#: Values of the wrong type for each key of ftqueue_adapter.json.
WRONG_TYPE: dict[str, Callable[[Any], bool]] = {
    "format": lambda v: not _is_int(v) or v not in (1, 2),
    "kind": lambda v: not isinstance(v, str) or not v.strip(),
    "spec": lambda v: not isinstance(v, dict),
    "spec_hash": lambda v: not isinstance(v, str) or not v.strip(),
    "model": lambda v: not isinstance(v, str),
    "model_revision": lambda v: v is not None and not isinstance(v, str),
    "num_labels": lambda v: not _is_int(v),
    "label_names": lambda v: not _is_str_list(v),
    "pooling": lambda v: not isinstance(v, str),
    "max_length": lambda v: not _is_int(v),
    "body_attr": lambda v: v is not None and not isinstance(v, str),
    "model_type": lambda v: v is not None and not isinstance(v, str),
    "stock_class": lambda v: v is not None and not isinstance(v, str),
    "dataset_fingerprint": lambda v: v is not None and not isinstance(v, str),
    "metrics": lambda v: not isinstance(v, list),
    "selected_epoch": lambda v: v is not None and not _is_int(v),
    "started_at": lambda v: v is not None and not (_is_int(v) or isinstance(v, float)),
    "stats": lambda v: not isinstance(v, dict),
    "versions": lambda v: not isinstance(v, dict),
}
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda meta: {**meta, key: value}


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda meta: {k: v for k, v in meta.items() if k != key}


@st.composite
def metadata_edits(draw: st.DrawFn) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An edit of ftqueue_adapter.json that must not be accepted."""
    kind = draw(st.sampled_from(["drop", "type", "unknown", "labels", "spec", "base"]))
    if kind == "drop":
        return _drop(draw(st.sampled_from(METADATA_REQUIRED)))
    if kind == "type":
        key = draw(st.sampled_from(sorted(WRONG_TYPE)))
        return _set(key, draw(json_values.filter(WRONG_TYPE[key])))
    if kind == "unknown":
        key = draw(st.text(max_size=12).filter(lambda k: k not in METADATA_SCHEMA))
        return _set(key, draw(json_values))
    if kind == "labels":
        names = draw(st.lists(st.text(min_size=1, max_size=10), unique=True, max_size=6))
        if len(names) == 2:  # two names fit the head: make them the same name instead
            names = [names[0], names[0]]
        keep = draw(st.booleans()) or len(names) < 2
        return lambda meta: {**meta, "label_names": names,
                             **({} if keep else {"num_labels": len(names)})}  # fmt: skip
    if kind == "spec":  # values the job's spec also holds, changed here only
        key = draw(st.sampled_from(["model", "pooling", "max_length"]))
        value = {
            "model": st.text(min_size=1, max_size=30).filter(lambda m: m != "minilm"),
            "pooling": st.sampled_from(["mean", "cls"]),
            "max_length": st.integers(8, 512).filter(lambda n: n != 128),
        }[key]
        return _set(key, draw(value))
    # What the metadata says of the base model, against the base model loaded.
    key = draw(st.sampled_from(["body_attr", "stock_class", "model_type"]))
    value = draw(identifiers.filter(lambda v: v not in ("bert", "BertForSequenceClassification")))
    return _set(key, value)


@PROPERTY
@given(edit=metadata_edits())
def test_an_edited_metadata_file_is_refused(
    damaged: Damaged, edit: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    refused(damaged, ADAPTER_METADATA, edit_json(edit))


@st.composite
def config_edits(draw: st.DrawFn) -> Callable[[Any], Any]:
    """An edit of adapter_config.json that peft could not load, or would load wrongly."""
    kind = draw(st.sampled_from(["drop", "type", "not an object"]))
    if kind == "drop":
        return _drop(draw(st.sampled_from(["peft_type", "r", "lora_alpha", "target_modules"])))
    if kind == "not an object":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return lambda config: value
    wrong: dict[str, Callable[[Any], bool]] = {
        "peft_type": lambda v: v != "LORA",
        "r": lambda v: not _is_int(v) or v < 1,
        "lora_alpha": lambda v: not (_is_int(v) or isinstance(v, float)) or v != v,
        "target_modules": lambda v: (
            not (isinstance(v, str) and v.strip()) and not (_is_str_list(v) and v)
        ),
        "modules_to_save": lambda v: v is not None and not _is_str_list(v),
        "lora_dropout": lambda v: not (_is_int(v) or isinstance(v, float)) or not 0 <= v < 1,
        "bias": lambda v: v not in ("none", "all", "lora_only"),
        "use_dora": lambda v: not isinstance(v, bool),
    }
    key = draw(st.sampled_from(sorted(wrong)))
    return _set(key, draw(json_values.filter(wrong[key])))


@PROPERTY
@given(edit=config_edits())
def test_an_edited_adapter_config_is_refused(damaged: Damaged, edit: Callable[[Any], Any]) -> None:
    refused(damaged, ADAPTER_CONFIG, edit_json(edit))
