"""How sure the report's numbers are: Wilson intervals, the kept epoch, ties and their rule,
and `report --sweep` applying or refusing every option, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from scipy.stats import binomtest

from ftqueue.core.confidence import TIE_RULES, keeps_later, kept_epoch, tie_key, tie_rule, wilson
from ftqueue.kinds.lora import LoraSpec
from ftqueue.settings import reset_settings
from ftqueue.specs import DataSpec
from ftqueue.store import db
from ftqueue.sweeps.summary import SweepReport, Trial, summary_lines
from tests.conftest import run as invoke
from tests.test_report import _insert

DATA = DataSpec(dataset="rt")


def report_json(*args: str) -> Any:
    code, out = invoke("report", "--format", "json", *args)
    assert code == 0, out
    return json.loads(out)


# --- the interval and the rules, as functions -------------------------------------------------


def test_wilson_matches_newcombes_worked_examples() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (score, no
    # continuity correction): 81/263 gives 0.2553 to 0.3662; 0/10 gives 0 to 0.2775.
    low, high = wilson(81 / 263, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson(0.0, 10)
    assert (round(low, 4), round(high, 4)) == (0.0, 0.2775)
    # And scipy's implementation on the sizes a report meets.
    for k, n in ((880, 1066), (1066, 1066), (3, 200), (50, 100)):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert wilson(0.5, 0) == (0.0, 1.0)


def test_a_later_epoch_is_kept_only_beyond_the_kept_ones_interval() -> None:
    # 1,000 rows: 0.80's interval reaches 0.824, so 0.815 stays with epoch 1 and 0.84 replaces
    # it; 0.84's reaches 0.861, so 0.855 (the best of all) does not replace epoch 3.
    assert wilson(0.80, 1000)[1] == pytest.approx(0.8236, abs=1e-4)
    curve = [(1, 0.80, 1000), (2, 0.815, 1000), (3, 0.84, 1000), (4, 0.855, 1000)]
    assert kept_epoch(curve) == 3
    # The numbers: on 1,066 rows 0.8246 and 0.8255 are one epoch's noise apart.
    assert kept_epoch([(1, 0.8246, 1066), (2, 0.8255, 1066)]) == 1
    assert kept_epoch([(1, 0.70, 1066), (2, 0.8255, 1066)]) == 2
    # Without a row count, any gain counts, and equals keep the earliest.
    assert kept_epoch([(1, 0.8, None), (2, 0.81, None), (3, 0.81, None)]) == 2
    assert not keeps_later(0.9, 50, 0.95) and keeps_later(0.9, 50, 0.99)
    assert kept_epoch([]) is None


def test_the_tie_key_orders_seeds_then_simplicity_and_names_the_rule() -> None:
    small = {"r": 8, "target_modules": ["query", "value"], "lr": 1e-3}
    wide = {"r": 8, "target_modules": ["query", "key", "value"], "lr": 1e-3}
    fast = {"r": 8, "target_modules": ["query", "value"], "lr": 3e-3}
    big = {"r": 16, "target_modules": ["query"], "lr": 1e-4}
    cases = [
        ((3, big, 0.80, 9), (1, small, 0.82, 1), "more seeds"),
        ((1, small, 0.80, 9), (1, big, 0.82, 1), "smaller r"),
        ((1, small, 0.80, 9), (1, wide, 0.82, 1), "fewer target modules"),
        ((1, small, 0.80, 9), (1, fast, 0.82, 1), "lower lr"),
        ((1, small, 0.82, 9), (1, small, 0.80, 1), "higher accuracy"),
        ((1, small, 0.82, 1), (1, small, 0.82, 9), "earlier job"),
    ]
    for winner, loser, rule in cases:
        a, b = tie_key(*winner), tie_key(*loser)
        assert a < b and tie_rule(a, b) == rule
    assert [rule for _, _, rule in cases] == list(TIE_RULES)
    # A spec without the field counts as the most complex.
    assert tie_key(1, small, 0.8, 1) < tie_key(1, {}, 0.8, 1)


# --- the report, on a real database ------------------------------------------------------------


def lora(r: int, seed: int = 0, **fields: Any) -> LoraSpec:
    return LoraSpec(model="tiny", data=DATA, r=r, epochs=2, seed=seed, **fields)


def test_the_report_chooses_by_the_kept_epoch_not_the_final_one(any_db_url: str) -> None:
    # r=4's final epoch (0.91) is the best final epoch of all, but it kept epoch 1 (0.88);
    # r=8 kept its final epoch, 0.90. Large splits: no tie, the numbers alone decide.
    rows = 100_000
    with db.session_scope(write=True) as s:
        r4 = {("validation", 1): 0.88, ("validation", 2): 0.91, ("test", 1): 0.87}
        _insert(s, lora(4), r4, kept=1, examples=rows)
        r8 = {("validation", 1): 0.70, ("validation", 2): 0.90, ("test", 2): 0.86}
        r8_job = _insert(s, lora(8), r8, kept=2, examples=rows)
    [row] = report_json()
    assert row["r"] == 8 and row["first_job"] == r8_job
    assert row["selection_accuracy"] == pytest.approx(0.90)
    assert row["accuracy"] == pytest.approx(0.86)
    assert (row["accuracy_low"], row["accuracy_high"]) == pytest.approx(wilson(0.86, rows))
    assert row["examples"] == rows and row["tied_with"] == 0 and row["tie_rule"] is None
    # The validation split shown is the kept epoch's too.
    [row] = report_json("--split", "validation", "--where", "r=4")
    assert row["accuracy"] == pytest.approx(0.88)


def test_a_tie_is_marked_and_the_rule_that_broke_it_named(any_db_url: str) -> None:
    with db.session_scope(write=True) as s:
        # On 1,000 rows: r=16 leads by 0.005, inside its interval; r=4 at 0.70 is outside.
        for r, val, test in ((16, 0.830, 0.81), (8, 0.825, 0.84), (4, 0.70, 0.90)):
            _insert(s, lora(r), {("validation", 1): val, ("test", 1): test}, examples=1000)
    [row] = report_json()
    assert row["r"] == 8 and row["tied_with"] == 1 and row["tie_rule"] == "smaller r"
    assert row["selection_accuracy"] == pytest.approx(0.825)
    code, out = invoke("report")
    assert code == 0 and "tie: 1 other inside its interval; chosen by smaller r" in out
    assert "0.816-0.861" in out  # 0.84 on 1,000 rows, as the table writes it
    code, out = invoke("report", "--format", "markdown")
    assert code == 0 and "chosen by smaller r" in out and "0.816-0.861" in out
    code, out = invoke("report", "--format", "csv")
    assert code == 0 and "tied_with,tie_rule" in out.splitlines()[0]
    # A second seed of r=16 inside the interval: more seeds now decides, before simplicity.
    with db.session_scope(write=True) as s:
        _insert(s, lora(16, seed=1), {("validation", 1): 0.826, ("test", 1): 0.82}, examples=1000)
    [row] = report_json()
    assert row["r"] == 16 and row["n"] == 2 and row["tie_rule"] == "more seeds"
    assert row["tied_with"] == 1


def test_html_carries_the_interval_and_the_tie(sqlite_url: str, tmp_path: Path) -> None:
    with db.session_scope(write=True) as s:
        for r, val in ((16, 0.830), (8, 0.825)):
            _insert(s, lora(r), {("validation", 1): val, ("test", 1): 0.84}, examples=1000)
    page = tmp_path / "r.html"
    code, out = invoke("report", "--html", str(page))
    assert code == 0, out
    text = page.read_text()
    assert "0.816-0.861" in text and "chosen by smaller r" in text


def test_the_sweep_summary_names_the_tie_rule() -> None:
    def trial(job_id: int, r: int, curve: dict[int, float], kept: int) -> Trial:
        return Trial(job_id, job_id, "succeeded", {"r": r}, curve, kept, 0.8, 1.0, 2,
                     validation_examples=1066, shape={"r": r, "lr": 1e-3})  # fmt: skip

    # The split: validation 0.8255 (r=16) and 0.8246 (r=8) are a coin toss.
    trials = [trial(1, 16, {1: 0.80, 2: 0.8255}, 2), trial(2, 8, {1: 0.8246, 2: 0.83}, 1)]
    report = SweepReport("s", "grid", "done", 2, None, [], ["r"], trials)
    assert report.best is trials[1] and report.tie == (1, "smaller r")
    lines = summary_lines(report)
    assert any(line.startswith("best: job 2: r=8: validation accuracy 0.8246 (95% 0.801-0.846)")
               for line in lines), lines  # fmt: skip
    assert any("1 other trial inside its 95% interval; chosen by smaller r" in ln for ln in lines)
    # Far apart, the better one wins and no tie is said.
    trials[1].curve = {1: 0.70}
    assert report.best is trials[0] and report.tie is None
    assert not any("a tie" in line for line in summary_lines(report))


# --- `report --sweep`: every option applies or is refused --------------------------------------


@pytest.fixture
def sweep(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    path = tmp_path / "sweep.yaml"
    raw = {
        "name": "tiny",
        "model": "synthetic:seconds=0,steps=2",
        "dataset": "movie-snippets",
        "fixed": {"epochs": 2},
        "space": {"r": [4, 8]},
        "method": "grid",
    }
    path.write_text(yaml.safe_dump(raw))
    code, out = invoke("sweep", str(path))
    assert code == 0, out
    monkeypatch.delenv("FTQUEUE_EAGER")
    reset_settings()
    return "tiny"


def test_sweep_formats_all_apply(sweep: str, tmp_path: Path) -> None:
    code, out = invoke("report", "--sweep", sweep, "--format", "markdown")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("| job | trial | status | r |") and lines[1].startswith("|---")
    assert sum(line.startswith("| ") for line in lines) == 3  # header and two trials
    assert "- sweep tiny (grid" in out and "(95% 0." in out  # the summary, with the interval
    code, out = invoke("report", "--sweep", sweep, "--format", "json")
    data = json.loads(out)
    assert code == 0 and {"tied_with", "tie_rule"} <= set(data)
    for t in data["trials"]:
        assert t["kept_low"] < t["kept_validation"] < t["kept_high"]
        assert t["kept_validation"] == t["curve"][str(t["selected_epoch"])]
        assert t["validation_examples"] == 1000
    code, out = invoke("report", "--sweep", sweep, "--json")
    assert code == 0 and json.loads(out)["sweep_id"] == sweep
    code, out = invoke("report", "--sweep", sweep, "--format", "csv")
    assert code == 0 and "kept_validation,kept_low,kept_high" in out.splitlines()[0]
    page, image = tmp_path / "s.html", tmp_path / "s.png"
    code, out = invoke("report", "--sweep", sweep, "--html", str(page), "--plot", str(image))
    assert code == 0, out
    text = page.read_text()
    assert "<table>" in text and "<li>sweep tiny (grid" in text and "(95% 0." in text
    assert "data:image/png;base64," in text and image.read_bytes()[:4] == b"\x89PNG"
    code, out = invoke("report", "--sweep", sweep)
    assert code == 0 and "kept (ep), 95%" in out and "best: job" in out


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--model", "minilm"), "--model"),
        (("--dataset", "movie-snippets"), "--dataset"),
        (("--tag", "x"), "--tag"),
        (("--status", "failed"), "--status"),
        (("--split", "validation"), "--split"),
        (("--since", "2d"), "--since"),
        (("--until", "2d"), "--until"),
        (("--where", "r>=8"), "--where"),
        (("--group-by", "r"), "--group-by"),
        (("--select-by", "test"), "--select-by"),
        (("--sort", "accuracy"), "--sort"),
        (("--asc",), "--desc/--asc"),
        (("--top", "3"), "--top"),
    ],
)
def test_sweep_refuses_options_it_cannot_apply(
    sweep: str, tmp_path: Path, args: tuple[str, ...], flag: str
) -> None:
    page = tmp_path / "s.html"
    code, out = invoke("report", "--sweep", sweep, *args, "--html", str(page))
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1, out
    assert flag in lines[0] and "does not apply to the report of sweep" in lines[0]
    assert not page.exists()  # nothing half-written


def test_an_unknown_sweep_exits_2_naming_the_known_ones(sweep: str) -> None:
    for args in (("--sweep", "nosuchsweep"), ("--sweep", sweep, "--sweep", "nosuchsweep")):
        code, out = invoke("report", *args)
        lines = out.strip().splitlines()
        assert code == 2 and len(lines) == 1, out
        assert "'nosuchsweep': no sweep has this name" in lines[0]
        assert repr(sweep) in lines[0] and "ftqueue list --sweep" in lines[0]
