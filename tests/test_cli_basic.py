"""The CLI shell: help everywhere, one-line errors, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ftqueue import __version__
from ftqueue.cli import cli
from ftqueue.store import db
from ftqueue.store.schema import Job, JobTag


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, path))
    return found


@pytest.mark.parametrize("path", _all_commands(cli), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help, f"`ftqueue {' '.join(path)}` has no help text"
    if not isinstance(command, click.Group):
        assert "ftqueue " + path[0] in result.output, "help should show an example invocation"


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from ftqueue.cli import main\n"
        "sys.argv = ['ftqueue', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in out.stdout, out.stdout[-500:]


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ftqueue", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_list_on_unmigrated_database_says_what_to_run(isolated_home: Path) -> None:
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "ftqueue db upgrade" in result.output
    assert not (isolated_home / "ftqueue.db").exists()


def test_unreachable_database_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTQUEUE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/gone")
    from ftqueue.settings import reset_settings

    reset_settings()
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 1
    assert "127.0.0.1:1/gone" in result.output
    assert "Traceback" not in result.output


def test_db_upgrade_is_idempotent(isolated_home: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "upgrade"])
    assert first.exit_code == 0 and "upgraded from empty" in first.output
    second = runner.invoke(cli, ["db", "upgrade"])
    assert second.exit_code == 0 and "already at revision" in second.output
    current = runner.invoke(cli, ["db", "current", "--json"])
    assert json.loads(current.output)["revision"] == db.head_revision()


def _add_jobs(url: str) -> list[int]:
    ids = []
    with db.session_scope(url=url, write=True) as session:
        for i, status in enumerate(["succeeded", "running", "queued"]):
            job = Job(
                kind="lora" if i else "evaluate",
                status=status,
                spec={"r": 8 * (i + 1)},
                spec_hash=f"h{i}",
                model="minilm",
                dataset="movie-snippets",
                sweep_id="s1" if i else None,
                tags=[JobTag(tag="nightly")] if i == 2 else [],
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
    return ids


def test_list_filters_and_json(any_db_url: str) -> None:
    ids = _add_jobs(any_db_url)
    runner = CliRunner()
    rows = json.loads(runner.invoke(cli, ["list", "--json"]).output)
    assert [r["id"] for r in rows] == sorted(ids, reverse=True)
    queued = json.loads(runner.invoke(cli, ["list", "--status", "queued", "--json"]).output)
    assert [r["id"] for r in queued] == [ids[2]]
    tagged = json.loads(runner.invoke(cli, ["list", "--tag", "nightly", "--json"]).output)
    assert [r["tags"] for r in tagged] == [["nightly"]]
    sweep = json.loads(runner.invoke(cli, ["list", "--sweep", "s1", "--json"]).output)
    assert sorted(r["id"] for r in sweep) == ids[1:]
    table = runner.invoke(cli, ["list"])
    assert table.exit_code == 0 and "movie-snippets" in table.output
    bad = runner.invoke(cli, ["list", "--status", "sleeping"])
    assert bad.exit_code == 2 and "sleeping" in bad.output


def test_status_shows_one_job(any_db_url: str) -> None:
    ids = _add_jobs(any_db_url)
    runner = CliRunner()
    payload = json.loads(runner.invoke(cli, ["status", str(ids[1]), "--json"]).output)
    assert payload["status"] == "running" and payload["spec"] == {"r": 16}
    text = runner.invoke(cli, ["status", str(ids[0])])
    assert text.exit_code == 0 and "succeeded" in text.output
    missing = runner.invoke(cli, ["status", "999999"])
    assert missing.exit_code == 2
    assert "no job 999999" in missing.output and missing.output.count("\n") == 1
