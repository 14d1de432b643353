"""The repository itself: no merge-conflict marker in a tracked file, and a check that sees one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check"


def markers(*files: Path) -> subprocess.CompletedProcess[str]:
    """`scripts/check --markers`, as `scripts/check` runs it before the linters."""
    return subprocess.run(
        [str(CHECK), "--markers", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_tracked_file_holds_a_merge_conflict_marker() -> None:
    done = markers()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_the_check_catches_markers_and_leaves_headings_alone(tmp_path: Path) -> None:
    conflict = tmp_path / "conflict.py"
    conflict.write_text("a = 1\n<<<<<<< HEAD\nb = 2\n=======\nb = 3\n>>>>>>> other\n")
    stray = tmp_path / "stray.md"
    stray.write_bytes(b"Some text.\r\n=======\r\n## Next section\r\n")
    done = markers(conflict, stray)
    assert done.returncode == 1, done.stderr
    flagged = re.findall(r"^(\S+):(\d+): ", done.stdout, re.M)
    assert flagged == [(str(conflict), "2"), (str(conflict), "4"), (str(conflict), "6"),
                       (str(stray), "2")]  # fmt: skip

    headings = tmp_path / "headings.md"
    headings.write_text(
        "Install\n=======\n\n"  # a 7-character setext heading, underlined to its length
        "=======\nOptions\n=======\n\n"  # a reStructuredText title, over- and underlined
        "A longer title\n==============\n\n"
        'line = "======="\n'
        " =======\n"
        "========\n"
    )
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\0\1\2\n=======\n<<<<<<< x\n")
    done = markers(headings, binary)
    assert done.returncode == 0, done.stdout
    assert done.stdout == ""


def test_blame_ignores_full_commit_hashes() -> None:
    """`git blame --ignore-revs-file` reads full hashes only (the format of fsck.skipList)."""
    lines = (ROOT / ".git-blame-ignore-revs").read_text().splitlines()
    revisions = [line for line in lines if line and not line.startswith("#")]
    assert revisions and all(re.fullmatch(r"[0-9a-f]{40}", rev) for rev in revisions)
