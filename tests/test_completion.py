"""Shell completion through click's own protocol, as bash and zsh ask for it: commands and
flags, and job ids from the database for the commands that take one."""

from __future__ import annotations

import subprocess
import sys

from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.specs import DataSpec
from ftqueue.store import db
from tests.procs import child_env
from tests.test_report import _insert


def complete(words: str, shell: str = "bash", **env: str) -> list[str]:
    """What the shell is offered for the last word of ``words`` (bash: values only)."""
    parts = words.split(" ")
    done = subprocess.run(
        [sys.executable, "-m", "ftqueue"],
        env=child_env(
            _FTQUEUE_COMPLETE=f"{shell}_complete",
            COMP_WORDS=words,
            COMP_CWORD=str(len(parts) - 1),
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line]
    if shell == "bash":
        return [line.split(",", 1)[1] for line in lines]
    return lines


def fill(url: str) -> tuple[list[int], int, int]:
    data = DataSpec(dataset="movie-snippets")
    with db.session_scope(url=url, write=True) as s:
        runs = [_insert(s, LoraSpec(model="minilm", data=data, r=r), {}) for r in (4, 8)]
        failed = _insert(s, LoraSpec(model="minilm", data=data, r=16), {}, status="failed")
        base = _insert(s, EvaluateSpec(model="minilm", data=data), {})
    return runs, failed, base


def test_commands_and_flags_complete() -> None:
    assert complete("ftqueue sub") == ["submit"]
    assert set(complete("ftqueue submit ")) >= {"lora", "evaluate", "predict"}
    assert "--target-modules" in complete("ftqueue submit lora --tar")


def test_job_ids_complete_from_the_database(sqlite_url: str) -> None:
    runs, failed, base = fill(sqlite_url)
    everything = sorted([*runs, failed, base], reverse=True)
    assert complete("ftqueue status ") == [str(i) for i in everything]
    assert complete("ftqueue cancel 1 ") == [str(i) for i in everything]
    # Commands that use an adapter are offered the succeeded training runs only.
    adapters = [str(i) for i in sorted(runs, reverse=True)]
    assert complete("ftqueue export ") == adapters
    assert complete("ftqueue predict ") == adapters
    assert complete("ftqueue submit evaluate --adapter-job ") == adapters
    # A comma list completes its last item.
    assert complete(f"ftqueue submit predict --adapter-job {runs[1]},") == [
        f"{runs[1]},{i}" for i in adapters
    ]
    # zsh shows what each id is.
    zsh = complete(f"ftqueue show {base}", shell="zsh")
    assert zsh == ["plain", str(base), "evaluate succeeded: minilm on movie-snippets"]


def test_completion_without_a_database_offers_nothing_quietly(isolated_home: object) -> None:
    assert complete("ftqueue status ", FTQUEUE_DATABASE_URL="sqlite:////no/such/dir/x.db") == []
