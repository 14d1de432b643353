"""The shell examples of the quick start and the guides, run as a reader would run them.

A ```bash block right after a `<!-- runnable -->` line is an example this test runs: all of a
page's runnable blocks, in order, in one `bash -euo pipefail`, in a new directory with a new
FTQUEUE_HOME, the test Redis database as broker and nothing else of FTQUEUE_* set. Each page
also leaves something the test checks (files, rows), so an example that does nothing fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ftqueue.testing import redis_test_url, service_missing

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [DOCS / "quickstart.md", *sorted((DOCS / "guides").glob("*.md"))]
RUNNABLE = re.compile(r"^<!-- runnable -->\n```bash\n(.*?)^```", re.M | re.S)


def runnable(page: Path) -> list[str]:
    """The page's runnable shell blocks, in order."""
    return RUNNABLE.findall(page.read_text(encoding="utf-8"))


def _rows(workdir: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(workdir / "home" / "ftqueue.db") as connection:
        return connection.execute(sql).fetchall()


def _quickstart(workdir: Path) -> None:
    # The quick start sets its own FTQUEUE_HOME, inside the working directory.
    with sqlite3.connect(workdir / ".ftqueue" / "ftqueue.db") as connection:
        kinds = connection.execute("SELECT kind, status FROM jobs ORDER BY id").fetchall()
    assert kinds == [("evaluate", "succeeded"), ("lora", "succeeded")]
    assert (workdir / "report.png").stat().st_size > 10_000
    assert "<table" in (workdir / "report.html").read_text(encoding="utf-8")
    exported = workdir / "exported" / "minilm-snippets"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {
        p.name for p in exported.iterdir()
    }


def _data(workdir: Path) -> None:
    rows = _rows(workdir, "SELECT status, dataset FROM jobs ORDER BY id")
    assert [status for status, _ in rows] == ["succeeded"] * 3
    assert all(dataset.endswith("reviews.csv") for _, dataset in rows)


def _sweeps(workdir: Path) -> None:
    rows = _rows(workdir, "SELECT status FROM jobs WHERE sweep_id = 'quick-sweep'")
    statuses = sorted(status for (status,) in rows)
    assert len(statuses) == 6 and "pruned" in statuses and "succeeded" in statuses


def _watching(workdir: Path) -> None:
    rows = _rows(workdir, "SELECT status FROM jobs ORDER BY id")
    assert [status for (status,) in rows] == ["succeeded", "succeeded", "failed"]


#: What each page with runnable examples leaves behind.
CHECKS: dict[str, Callable[[Path], None]] = {
    "quickstart.md": _quickstart,
    "data.md": _data,
    "sweeps.md": _sweeps,
    "watching.md": _watching,
}


def test_every_page_with_examples_is_checked() -> None:
    with_examples = {page.name for page in PAGES if runnable(page)}
    assert "quickstart.md" in with_examples
    assert with_examples == set(CHECKS)


def _run(name: str, workdir: Path, **extra: str) -> str:
    """Run the page's runnable blocks in `workdir`; the output, once they exited 0."""
    page = next(page for page in PAGES if page.name == name)
    script = "\n".join(runnable(page))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTQUEUE_")}
    env.update(FTQUEUE_HOME=str(workdir / "home"), HF_HUB_OFFLINE="1", COLUMNS="120", **extra)
    # The `ftqueue` of this Python, whether or not its environment is activated.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if "ftqueue worker" in script:
        import redis

        url = redis_test_url()
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            client.flushdb()
        except redis.RedisError as exc:
            service_missing(f"Redis at {url}", exc)
        finally:
            client.close()
        env["FTQUEUE_BROKER_URL"] = url
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        # A worker an example left behind goes with its shell's process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"{name}'s examples failed:\n{output[-4000:]}"
    return output


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_examples_run(name: str, tmp_path: Path) -> None:
    output = _run(name, tmp_path)
    if name != "watching.md":  # its failed job's log shows a traceback on purpose
        assert "Traceback" not in output
    CHECKS[name](tmp_path)


def test_sweep_examples_on_postgresql(pg_empty_url: str, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    _run("sweeps.md", tmp_path, FTQUEUE_DATABASE_URL=pg_empty_url)
    engine = create_engine(pg_empty_url)
    try:
        with engine.connect() as connection:
            statuses = (
                connection.execute(text("SELECT status FROM jobs WHERE sweep_id = 'quick-sweep'"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert len(statuses) == 6 and "pruned" in statuses and "succeeded" in statuses
    assert not (tmp_path / "home" / "ftqueue.db").exists()
