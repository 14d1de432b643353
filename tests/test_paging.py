"""`ftqueue list` pages through many jobs by id (--before), newest first, and says how."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.store import db, insert


def test_list_pages_by_id_and_points_at_the_next_page(any_db_url: str) -> None:
    with db.session_scope(write=True) as session:
        jobs = insert.create_jobs(
            session,
            [insert.NewJob(kind="lora", spec={"seed": i}, spec_hash=f"h{i}", model="m",
                              dataset="d", sweep_id="big" if i % 2 else None)
             for i in range(120)],
            max_attempts=3,
        )  # fmt: skip
    ids = sorted((job.id for job in jobs), reverse=True)
    runner = CliRunner()

    def page(*args: str) -> list[int]:
        result = runner.invoke(cli, ["list", "--json", *args])
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.output)]

    first = page()
    assert first == ids[:50]
    assert page("--before", str(first[-1])) == ids[50:100]
    assert page("--before", str(ids[99])) == ids[100:]
    odd = [i for i, job in sorted(((j.id, j) for j in jobs), reverse=True) if job.sweep_id]
    assert page("--sweep", "big", "--limit", "20") == odd[:20]
    assert page("--sweep", "big", "--limit", "20", "--before", str(odd[19])) == odd[20:40]
    assert page("--status", "queued", "--before", str(ids[-1])) == []
    table = runner.invoke(cli, ["list", "--limit", "10"])
    assert f"--before {ids[9]}" in table.output
    last = runner.invoke(cli, ["list", "--before", str(ids[100])])
    assert "--before" not in last.output  # fewer than a page: nothing older


def test_a_big_sweeps_table_shows_its_first_rows_and_says_how_to_list_all(
    any_db_url: str, redis_url: str
) -> None:
    result = CliRunner().invoke(
        cli,
        ["submit", "lora", "--model", "synthetic:seconds=0", "--dataset", "movie-snippets",
         "--seed", "0..59", "--sweep", "wide"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the first 50 of 60 jobs; all of them: ftqueue list --sweep wide --all" in result.output
    assert result.output.count("queued") == 50
    listed = CliRunner().invoke(cli, ["list", "--sweep", "wide", "--all", "--json"])
    assert len(json.loads(listed.output)) == 60
