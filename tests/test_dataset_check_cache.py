"""A dataset check passed once is not done again for the same content, settings and code.

`submit` checks its dataset (load, split, classes in every split). The verdict is kept under
FTQUEUE_CACHE_DIR keyed by the pinned data spec (a local file's content fingerprint), the
movie-snippets file's identity and the checking code, so a later submit of the same data skips
loading the rows and importing numpy, and any change checks again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ftqueue.errors import DatasetError
from ftqueue.inputs import labelled
from ftqueue.inputs.pinning import pin_data
from ftqueue.settings import get_settings
from ftqueue.specs import DataSpec
from tests.procs import child_env


def _csv(path: Path, labels: list[str]) -> Path:
    rows = [
        f"text {i} {'good' if label == '1' else 'bad'},{label}" for i, label in enumerate(labels)
    ]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def _refuse_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def loaded(spec: DataSpec) -> None:
        raise AssertionError("the rows were loaded again")

    monkeypatch.setattr(labelled, "resolve_dataset", loaded)


@pytest.fixture
def checked(tmp_path: Path) -> tuple[Path, DataSpec, dict[str, object]]:
    """A cache directory, a pinned CSV of two classes, and the summary its check kept."""
    cache = tmp_path / "checks"
    spec = pin_data(DataSpec(dataset=str(_csv(tmp_path / "data.csv", ["0", "1"] * 40))))
    return cache, spec, labelled.check_dataset(spec, cache=cache)


def test_a_passed_check_is_read_back_and_a_changed_file_is_checked_again(
    checked: tuple[Path, DataSpec, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, spec, first = checked
    assert first["rows"] == {"train": 64, "validation": 8, "test": 8}
    with monkeypatch.context() as patched:
        _refuse_loading(patched)
        assert labelled.check_dataset(spec, cache=cache) == first
        # Other settings of the same file are another verdict.
        with pytest.raises(AssertionError, match="loaded again"):
            labelled.check_dataset(spec.replace(split_seed=7), cache=cache)

    # The same path with one class only: its new fingerprint is checked, and refused.
    path = Path(spec.dataset)
    _csv(path, ["0"] * 80)
    with pytest.raises(DatasetError, match="class"):
        labelled.check_dataset(pin_data(DataSpec(dataset=str(path))), cache=cache)


def test_a_damaged_verdict_is_checked_again_and_hub_datasets_are_never_kept(
    checked: tuple[Path, DataSpec, dict[str, object]],
) -> None:
    cache, spec, first = checked
    (kept,) = cache.iterdir()
    kept.write_text('{"key": "')
    assert labelled.check_dataset(spec, cache=cache) == first
    assert labelled._verdict_key(DataSpec(dataset="someone/reviews")) is None


def test_a_change_to_the_checking_code_checks_again(
    checked: tuple[Path, DataSpec, dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, spec, _ = checked
    monkeypatch.setattr(labelled, "_checking_code", lambda: "another version of the rules")
    _refuse_loading(monkeypatch)
    with pytest.raises(AssertionError, match="loaded again"):
        labelled.check_dataset(spec, cache=cache)


@pytest.mark.redis
def test_a_second_submit_of_the_same_data_does_not_import_numpy(
    sqlite_url: str, redis_url: str
) -> None:
    script = (
        "import sys\n"
        "from ftqueue.cli import cli\n"
        "cli(['submit', 'lora', '--model', 'synthetic:seconds=0', '--dataset', 'movie-snippets',"
        " '--seed', sys.argv[1]], prog_name='ftqueue', standalone_mode=False)\n"
        "print('numpy imported' if 'numpy' in sys.modules else 'numpy not imported')\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script, seed],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert "queued" in outputs[0] and "queued" in outputs[1], outputs
    assert "numpy imported" in outputs[0]  # the first check split the rows
    assert "numpy not imported" in outputs[1], outputs[1]
    assert len(list((get_settings().cache_dir / "dataset-checks").iterdir())) == 1
