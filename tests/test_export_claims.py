"""A new output directory is made whole or not at all, and never replaces what another writer
put there: two exports to one place, a directory created meanwhile, a read-only parent."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftqueue.artifacts import publishing
from ftqueue.artifacts.publishing import STAGING_PREFIX, publish_new_dir
from ftqueue.cli import cli
from ftqueue.errors import FtqueueError, SpecError
from tests.conftest import TrainedAdapter
from tests.procs import child_env, read_only_dir

TAKEN = "was created by someone else (another export?) while this one was writing"


@pytest.fixture(params=["renameat2", "mkdir"])
def claim(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with renameat2(RENAME_NOREPLACE), and with the mkdir claim that stands
    in where the system has no renameat2."""
    if request.param == "mkdir":
        monkeypatch.setattr(publishing, "_renameat2_noreplace", lambda src, dst: False)
    return str(request.param)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(STAGING_PREFIX))


def writer(name: str, *, wait: threading.Barrier | None = None):  # type: ignore[no-untyped-def]
    def write(staging: Path) -> None:
        (staging / "model.safetensors").write_text(name)
        (staging / "config.json").write_text("{}")
        if wait is not None:
            wait.wait(timeout=10)

    return write


def test_a_new_directory_appears_whole(claim: str, tmp_path: Path) -> None:
    final = tmp_path / "out" / "model"
    assert publish_new_dir(final, writer("one")) == final
    assert (final / "model.safetensors").read_text() == "one"
    assert _leftovers(final.parent) == []
    given = tmp_path / "given"
    given.mkdir()  # an empty directory the user made for it is used
    publish_new_dir(given, writer("two"))
    assert (given / "model.safetensors").read_text() == "two"


def test_of_two_exports_to_one_place_one_wins_and_the_other_says_so(
    claim: str, tmp_path: Path
) -> None:
    final = tmp_path / "model"
    both_written = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def export(name: str) -> None:
        try:
            outcomes[name] = publish_new_dir(final, writer(name, wait=both_written), param="DIR")
        except FtqueueError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=export, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    [winner] = [n for n, o in outcomes.items() if o == final]
    [loser] = [o for o in outcomes.values() if o != final]
    assert isinstance(loser, SpecError) and TAKEN in loser.message, loser
    assert loser.exit_code == 2 and "\n" not in loser.message
    # The winner's files, whole; the loser removed its own staging directory and nothing else.
    assert (final / "model.safetensors").read_text() == winner
    assert sorted(p.name for p in final.iterdir()) == ["config.json", "model.safetensors"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("theirs", ["a file in it", "empty", "a file"])
def test_what_someone_else_created_meanwhile_is_left_as_it_is(
    claim: str, theirs: str, tmp_path: Path
) -> None:
    final = tmp_path / "model"

    def write(staging: Path) -> None:
        writer("ours")(staging)
        if theirs == "a file":
            final.write_text("theirs")
        else:
            final.mkdir()
            if theirs == "a file in it":
                (final / "notes.txt").write_text("theirs")

    with pytest.raises(SpecError, match="was created by someone else") as info:
        publish_new_dir(final, write, param="DIR")
    assert info.value.param == "DIR"
    if theirs == "a file":
        assert final.read_text() == "theirs"
    elif theirs == "empty":
        assert final.is_dir() and list(final.iterdir()) == []
    else:
        assert [p.name for p in final.iterdir()] == ["notes.txt"]
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "model"

    def write(staging: Path) -> None:
        (staging / "half").write_text("x")
        raise OSError(28, "No space left on device")

    with pytest.raises(FtqueueError, match=r"could not write .*No space left on device"):
        publish_new_dir(final, write)
    assert not final.exists() and _leftovers(tmp_path) == []


def test_a_read_only_parent_is_one_line_before_any_work(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    locked = read_only_dir(tmp_path / "locked", request)
    called = []
    for final in (locked / "model", locked / "deeper" / "model"):
        with pytest.raises(SpecError, match="is not writable by this user") as info:
            publish_new_dir(final, called.append, param="DIR")
        assert str(locked) in info.value.message and info.value.exit_code == 2
    assert called == [] and list(locked.iterdir()) == []


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.slow
def test_export_into_a_read_only_directory_is_one_line_and_exit_2(
    sqlite_url: str,
    default_adapter: TrainedAdapter,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    from tests.test_predict import register_adapter

    job = register_adapter(default_adapter)
    locked = read_only_dir(tmp_path / "locked", request)
    started = time.perf_counter()
    code, out = _cli("export", str(job), str(locked / "model"))
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "is not writable by this user" in out and "Traceback" not in out
    assert time.perf_counter() - started < 10  # refused before the model loads
    assert list(locked.iterdir()) == []


@pytest.mark.slow
def test_two_export_commands_to_one_directory(
    sqlite_url: str, default_adapter: TrainedAdapter, tmp_path: Path
) -> None:
    """Two `ftqueue export` processes at once: one writes the model, the other says in one line
    that the directory is taken (whether it saw that first or lost the rename), exit 2."""
    from tests.test_predict import register_adapter

    job = register_adapter(default_adapter)
    target = tmp_path / "exported"
    command = [sys.executable, "-m", "ftqueue", "export", str(job), str(target)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(command, env=child_env(), **pipes) for _ in range(2)]  # type: ignore[call-overload]
    results = [(p.wait(timeout=300), p.stdout.read() + p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert sorted(code for code, _ in results) == [0, 2], results
    [(_, lost)] = [r for r in results if r[0] == 2]
    assert len(lost.strip().splitlines()) == 1, lost
    assert TAKEN in lost or "exists and is not an empty directory" in lost, lost
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    assert _leftovers(tmp_path) == []
