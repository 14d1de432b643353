"""User data on its way to the terminal: control sequences and rich markup come out neutralised.

Hostile names, tags, file names, errors and log lines go through every command that prints
them; the output holds no raw control character but newline and tab, markup shows literally,
and the exit codes are those of ordinary input.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import update

from ftqueue.cli.follow import follow
from ftqueue.core.text import literal, printable
from ftqueue.report.render import markdown_cell
from ftqueue.store import db
from ftqueue.store import logs as log_rows
from ftqueue.store import workers as worker_rows
from ftqueue.store.schema import Job, JobEvent, JobTag, utcnow
from tests.conftest import run

#: What may not reach a terminal raw: C0 and C1 controls but newline and tab, DEL, bidi
#: overrides and isolates, line separators.
RAW = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
HOSTILE = "a\x1b[2Jb\x1b]8;;http://x\x07c\x9bd\u202ee[red]x[/]f[/]g[link=file:///etc/passwd]h\r\x00"
#: Short enough for a tag or sweep column, with every kind of trouble in it.
SHORT = "t\x1b[31m[/][bold]\u202e\x9b"
SYN = "synthetic:seconds=0,steps=2"


def assert_clean(out: str) -> None:
    found = RAW.findall(out)
    assert not found, f"raw control characters {found!r} in {out!r}"


def hostile_file(tmp_path: Path) -> Path:
    """A CSV dataset whose file name holds escape sequences, markup and bidi overrides."""
    name = "re" + HOSTILE.replace("/", "_").replace("=", "_").replace("\x00", "") + ".csv"
    path = tmp_path / name
    rows = "".join(f'"sentence number {i}",{i % 2}\n' for i in range(100))
    path.write_text("text,label\n" + rows, encoding="utf-8")
    return path


@pytest.fixture
def hostile_job(eager: str, tmp_path: Path) -> tuple[int, Path]:
    """A job run on a hostile file, its row then given hostile tags, name, sweep and error."""
    path = hostile_file(tmp_path)
    code, out = run("submit", "lora", "--model", SYN, "--dataset", str(path))
    # The row is committed before the line is printed: printing must not fail.
    assert code == 0, out
    assert_clean(out)
    assert "[red]x[_]f[_]g[link_file" in out
    with db.session_scope() as s:
        job_id = s.query(Job.id).scalar()
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(name=HOSTILE[:128], worker=SHORT, sweep_id=SHORT, error_message=HOSTILE * 3)
        )
        s.add(JobTag(job_id=job_id, tag=SHORT))
        s.execute(update(JobEvent).where(JobEvent.job_id == job_id).values(detail=HOSTILE))
    return job_id, path


def test_list_show_status_print_hostile_data_neutralised(hostile_job: tuple[int, Path]) -> None:
    job_id, _ = hostile_job
    for args in (["list"], ["list", "--all"], ["show", str(job_id)], ["status", str(job_id)]):
        code, out = run(*args)
        assert code == 0, out
        assert_clean(out)
        assert "\\x1b" in out, args
    code, out = run("show", str(job_id))
    assert "[red]x[/]f[/]g[link=file:///etc/passwd]h" in out and "\\u202e" in out


def test_reports_escape_hostile_names(hostile_job: tuple[int, Path], tmp_path: Path) -> None:
    code, out = run("report")
    assert code == 0, out
    assert_clean(out)
    code, out = run("report", "--format", "markdown")
    assert code == 0 and "\\x1b" in out
    assert_clean(out)
    [row] = [line for line in out.splitlines() if line.startswith("| synthetic")]
    assert row.count(" | ") == 8  # nothing in a name closes a cell early
    page = tmp_path / "r.html"
    code, out = run("report", "--html", str(page))
    assert code == 0, out
    assert "[red]x[_]" in page.read_text() and "\\x1b" in page.read_text()
    assert_clean(page.read_text())
    assert "<script" not in page.read_text()


def test_markdown_and_html_cells_pass_no_raw_html() -> None:
    cell = markdown_cell("<script>alert(1)</script> a|b `c`\nd\\")
    assert "<script>" not in cell and "&lt;script&gt;" in cell
    assert "\\|" in cell and "\\`" in cell and "\n" not in cell
    assert markdown_cell("x\\") + " |" == "x\\\\ |"  # a trailing backslash escapes nothing


def test_error_messages_quote_input_neutralised(eager: str, tmp_path: Path) -> None:
    missing = hostile_file(tmp_path).with_suffix(".jsonl")
    code, out = run("submit", "lora", "--model", SYN, "--dataset", str(missing))
    assert code == 2 and "does not exist" in out
    assert_clean(out)
    code, out = run("submit", "lora", "--model", SYN, "--dataset", "movie-snippets", "--r", HOSTILE)
    assert code == 2
    assert_clean(out)
    code, out = run("list", "--kind", HOSTILE)
    assert code == 2
    assert_clean(out)


def test_logs_neutralise_control_sequences_keeping_lines(hostile_job: tuple[int, Path]) -> None:
    job_id, _ = hostile_job
    log_rows.append(job_id=job_id, attempt=1, seq=1_000, text=f"one\t{HOSTILE}\ntwo\n")
    code, out = run("logs", str(job_id))
    assert code == 0, out
    assert_clean(out)
    assert "one\t" in out and "\ntwo\n" in out and "\\x1b[2J" in out


def test_workers_and_top_neutralise_worker_names(sqlite_url: str) -> None:
    seen = utcnow()
    worker_rows.register(
        name=SHORT * 4, host="node-a", pid=100, supervisor_pid=None, gpu=None,
        gpu_name="[red]x[/] \x1b]8;;http://x\x07", gpu_memory_mb=None, queues=[SHORT],
        ftqueue_version="0.1.0", torch_version=None, transformers_version=None,
        refresh_seconds=5.0, started_at=seen, last_seen_at=seen,
    )  # fmt: skip
    for args in (["workers"], ["top", "--once"]):
        code, out = run(*args)
        assert code == 0, out
        assert_clean(out)
        assert "[/][bold]" in out, args


def test_a_very_long_unbalanced_markup_error_prints(hostile_job: tuple[int, Path]) -> None:
    job_id, _ = hostile_job
    with db.session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="failed", error_type="RuntimeError", error_message="[/]\x1b" * 20_000)
        )
    for args in (["show", str(job_id)], ["top", "--once"]):
        code, out = run(*args)
        assert code == 0 and "[/]\\x1b[/]" in out
        assert_clean(out)


# --- the function -------------------------------------------------------------------------


def render(value: Any) -> str:
    out = Console(file=io.StringIO(), width=10_000, color_system=None, markup=True)
    out.print(value, end="")
    return out.file.getvalue()  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_printable_leaves_no_control_and_is_idempotent(text: str) -> None:
    shown = printable(text)
    assert not RAW.search(shown) and "\x1b" not in shown
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in shown)
    assert printable(shown) == shown
    # Nothing to neutralise: nothing changes.
    if not RAW.search(text) and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert shown == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("[]/\\=:ab @#\x1b\x07\x9b\u202e\t;"), max_size=40))
def test_literal_shows_markup_as_it_is(text: str) -> None:
    # One line without trailing blanks: what rich's layout leaves alone.
    text = text.replace("\t", " ").strip()
    assert render(literal(text)) == printable(text)


def test_printable_writes_each_character_out() -> None:
    assert printable("a\x1b[2J\x9b\u202eb\udcff\n\t") == "a\\x1b[2J\\x9b\\u202eb\\udcff\n\t"
    assert printable(42) == "42"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_a_markdown_cell_stays_one_cell_with_no_raw_html(text: str) -> None:
    cell = markdown_cell(text)
    assert "\n" not in cell and "\r" not in cell and "<" not in cell and ">" not in cell
    assert not RAW.search(cell)
    # Every pipe and backtick is escaped: none ends the cell or opens code.
    for found in re.finditer(r"(\\*)[|`]", cell):
        assert len(found.group(1)) % 2 == 1, cell


def test_following_and_top_print_a_hostile_worker_name(hostile_job: tuple[int, Path]) -> None:
    job_id, _ = hostile_job
    now = utcnow()
    with db.session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", worker="w[/]\x1b[2J", started_at=now, heartbeat_at=now,
                    lease_expires_at=now + dt.timedelta(seconds=60))
        )  # fmt: skip
    lines = io.StringIO()
    follow([job_id], console=Console(file=lines, width=120), keep_going=lambda: False)
    assert f"job {job_id} lora: running on w[/]\\x1b[2J" in lines.getvalue()
    assert_clean(lines.getvalue())
    code, out = run("top", "--once")
    assert code == 0 and "w[/]\\x1b[2J" in out
    assert_clean(out)
