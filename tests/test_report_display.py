"""What people see of a report: plots checked through their matplotlib artists (bars counted,
labels and values read back), tables rendered at 80 and 100 columns, image types by suffix."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftqueue.cli import cli
from ftqueue.kinds.evaluate import EvaluateSpec
from ftqueue.kinds.lora import LoraSpec
from ftqueue.report.plot import HIGHLIGHT, close
from ftqueue.specs import DataSpec
from ftqueue.store import db
from tests.test_report import _insert

MODEL = "minilm"
SPLIT_FILES = ",".join(
    f"{name}=/data/reviews/reviews_{name}.csv" for name in ("train", "validation", "test")
)
RS = (4, 8, 16, 32)
LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def grid_accuracy(r: int, lr: float, split: str, epoch: int, seed: int) -> float:
    """Smooth in r and lr, with a test optimum (r=8) away from the validation one (r=16)."""
    best_r = 16 if split == "validation" else 8
    value = 0.80 - 0.01 * abs(math.log2(r / best_r)) - 0.02 * abs(math.log10(lr / 1e-3))
    return value - 0.03 * (3 - epoch) + 0.002 * seed


def fill_grid(url: str, configurations: int = 20) -> list[tuple[int, float]]:
    """``configurations`` (r, lr) pairs of a LoRA grid, three seeds and three epochs each, and
    the base model, on named split files. Splits of 100,000 rows: intervals too narrow to tie."""
    data = DataSpec(dataset=SPLIT_FILES)
    pairs = [(r, lr) for r in RS for lr in LRS][:configurations]
    with db.session_scope(url=url, write=True) as s:
        for seed in (0, 1, 2):
            base = EvaluateSpec(model=MODEL, data=data, seed=seed)
            _insert(s, base, {("test", 1): 0.70 + seed / 200})
            for r, lr in pairs:
                spec = LoraSpec(model=MODEL, data=data, r=r, lr=lr, epochs=3, seed=seed)
                metrics = {
                    ("validation", e): grid_accuracy(r, lr, "validation", e, seed)
                    for e in (1, 2, 3)
                }
                metrics[("test", 3)] = grid_accuracy(r, lr, "test", 3, seed)
                _insert(s, spec, metrics, examples=100_000)
    return pairs


# --- the plot, read back through its artists ------------------------------------------------


@pytest.fixture
def grid(sqlite_url: str) -> str:
    fill_grid(sqlite_url)
    return sqlite_url


def draw(**options: Any) -> Any:
    """The report's figure for these options, as `report --plot` draws it."""
    from ftqueue.report import ReportOptions, build_report, validation_curves
    from ftqueue.report.plot import figure

    opts = ReportOptions.from_text(**options)
    with db.session_scope() as session:
        report = build_report(session, opts, plotting=True)
        curves = validation_curves(session, opts, opts.group_by)
    fig = figure(report, curves)
    fig.canvas.draw()
    return fig


def bars_of(ax: Any) -> list[tuple[str, float, str]]:
    """(label, length, value written next to it) of each bar, from the top down."""
    from matplotlib.container import BarContainer

    [container] = [c for c in ax.containers if isinstance(c, BarContainer)]
    ticks = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
    values = {round(a.xy[1]): a.get_text() for a in ax.texts if a.get_gid() == "value"}
    found = [(p.get_y() + p.get_height() / 2, p.get_width()) for p in container.patches]
    found.sort(key=lambda yw: -yw[0])
    return [(ticks[round(y)], width, values[round(y)]) for y, width in found]


def assert_text_fits(fig: Any) -> None:
    """Everything drawn (titles, tick labels, values, legends) lies inside the figure."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        texts = [ax.title, ax._left_title, *ax.texts]
        if ax.get_legend() is not None:
            texts.append(ax.get_legend())
        # The axes' tight box holds the tick labels that are drawn (not those out of view).
        for artist in (ax, *texts):
            if hasattr(artist, "get_text") and not artist.get_text().strip():
                continue
            extent = (
                artist.get_tightbbox(renderer)
                if artist is ax
                else artist.get_window_extent(renderer)
            )
            inside = (
                extent.x0 >= box.x0 - 1
                and extent.x1 <= box.x1 + 1
                and extent.y0 >= box.y0 - 1
                and extent.y1 <= box.y1 + 1
            )
            assert inside, f"{artist} is cut off: {extent} outside {box}"


def test_the_plot_shows_every_configuration_ordered_by_what_it_shows(grid: str) -> None:
    fig = draw()
    try:
        bars_ax, curves_ax = fig.axes
        bars = bars_of(bars_ax)
        assert len(bars) == len(RS) * len(LRS) == 20
        lengths = [length for _, length, _ in bars]
        assert lengths == sorted(lengths, reverse=True)  # best first, by the test accuracy drawn
        assert bars[0][0] == "r=8 lr=0.001 (n=3)"  # the best on test (validation prefers r=16)
        for label, length, value in bars:
            assert label.endswith("(n=3)") and "r=" in label and "lr=" in label
            assert value.startswith(f"{length:.4f} ± ")
        assert [label for label, _, _ in bars].count("★ r=16 lr=0.001 (n=3)") == 1
        title = bars_ax.get_title(loc="left").replace("\n", " ")
        assert "all 20 configurations" in title and "best first by test accuracy" in title
        assert "by validation" in title  # what the star means
        assert bars_ax.get_xlabel().startswith("test accuracy")
        assert "base model 0.7050" in bars_ax.get_xlabel()
        lines = curves_ax.get_lines()
        assert len(lines) == 20
        coloured = [line for line in lines if line.get_marker() == "o"]
        assert len(coloured) == HIGHLIGHT
        legend = [t.get_text() for t in curves_ax.get_legend().get_texts()]
        assert legend[:HIGHLIGHT] == [label.removesuffix(" (n=3)") for label, _, _ in bars[:5]]
        assert legend[HIGHLIGHT:] == ["15 others"]
        assert "validation accuracy" in curves_ax.get_ylabel()
        assert_text_fits(fig)
    finally:
        close(fig)


def test_twelve_configurations_are_twelve_bars_and_twelve_curves(sqlite_url: str) -> None:
    fill_grid(sqlite_url, 12)
    fig = draw()
    try:
        bars_ax, curves_ax = fig.axes
        assert len(bars_of(bars_ax)) == 12 and len(curves_ax.get_lines()) == 12
    finally:
        close(fig)


def test_top_n_says_how_many_and_keeps_the_chosen_configuration(grid: str) -> None:
    fig = draw(plot_top=3, splits=("validation", "test"))
    try:
        val_bars, _, test_bars, test_curves = fig.axes
        for ax in (val_bars, test_bars):
            assert "3 of 20 shown" in ax.get_title(loc="left").replace("\n", " ")
        # On validation the chosen configuration is the best anyway.
        assert bars_of(val_bars)[0][0] == "★ r=16 lr=0.001 (n=3)"
        # On test it ranks lower: it takes the third place rather than being cut.
        labels = [b[0] for b in bars_of(test_bars)]
        assert labels[:2] == ["r=8 lr=0.001 (n=3)", "r=8 lr=0.003 (n=3)"]
        assert labels[2] == "★ r=16 lr=0.001 (n=3)"
        assert len(test_curves.get_lines()) == 3
        assert_text_fits(fig)
    finally:
        close(fig)


def test_group_by_never_cuts_the_best(grid: str) -> None:
    fig = draw(group_by=("r,lr",), plot_top=4)
    try:
        bars = bars_of(fig.axes[0])
        # By value order r=4 would come first; the cut keeps the four best instead.
        assert [b[0] for b in bars] == [
            "r=8 lr=0.001 (n=3)",
            "r=8 lr=0.003 (n=3)",
            "r=4 lr=0.001 (n=3)",
            "r=16 lr=0.001 (n=3)",
        ]
        assert "4 of 20 shown" in fig.axes[0].get_title(loc="left").replace("\n", " ")
        assert_text_fits(fig)
    finally:
        close(fig)
    fig = draw(group_by=("r",))
    try:
        bars = bars_of(fig.axes[0])
        assert bars[0][0] == "r=8 (n=15)" and len(bars) == 4
    finally:
        close(fig)


def test_rows_past_the_panel_limit_are_announced(sqlite_url: str) -> None:
    from ftqueue.report.plot import MAX_PANELS

    with db.session_scope(write=True) as s:
        for i in range(MAX_PANELS + 2):
            spec = LoraSpec(model=MODEL, data=DataSpec(dataset=f"set{i:02d}"))
            _insert(s, spec, {("validation", 2): 0.8, ("test", 2): 0.8})
    fig = draw()
    try:
        assert len(fig.axes) == 2 * MAX_PANELS
        title = fig.get_suptitle()
        assert f"{MAX_PANELS} of {MAX_PANELS + 2} (model, dataset, split) rows shown" in title
        assert_text_fits(fig)
    finally:
        close(fig)
    fig = draw(datasets=("set00",))
    try:
        assert len(fig.axes) == 2 and fig.get_suptitle() == ""
    finally:
        close(fig)


def test_plot_files_are_the_image_type_their_name_says(grid: str, tmp_path: Path) -> None:
    from PIL import Image

    for name, kind, magic in (
        ("r.jpg", "JPEG", b"\xff\xd8\xff"),
        ("r.jpeg", "JPEG", b"\xff\xd8\xff"),
        ("r.png", "PNG", b"\x89PNG"),
    ):
        out = CliRunner().invoke(cli, ["report", "--plot", str(tmp_path / name)])
        assert out.exit_code == 0, out.output
        data = (tmp_path / name).read_bytes()
        assert data.startswith(magic)
        with Image.open(tmp_path / name) as image:
            assert image.format == kind and image.size[0] == 1400
    for name in ("r.svg", "r.pdf"):
        out = CliRunner().invoke(cli, ["report", "--plot", str(tmp_path / name)])
        assert out.exit_code == 0, out.output
    assert (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("name", ["r.gif", "r.png.txt", "report"])
def test_an_unknown_image_suffix_is_one_line_before_any_work(
    isolated_home: Path, tmp_path: Path, name: str
) -> None:
    # The database is not even migrated: the name is refused before it is opened.
    out = CliRunner().invoke(cli, ["report", "--plot", str(tmp_path / name)])
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "--plot" in out.output and ".png, .jpg, .jpeg, .svg or .pdf" in out.output
    assert not (tmp_path / name).exists()


# --- tables at the widths of ordinary terminals ------------------------------------------------


def printed(width: int, *args: str) -> list[str]:
    """What a command prints on a terminal ``width`` columns wide (piped output reads COLUMNS)."""
    from rich.cells import cell_len

    out = CliRunner().invoke(cli, list(args), env={"COLUMNS": str(width)})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    too_wide = [line for line in lines if cell_len(line.rstrip()) > width]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in out.output  # nothing squeezed into an ellipsis
    return lines


@pytest.mark.parametrize("width", [80, 100])
def test_report_fits_ordinary_terminals(grid: str, width: int) -> None:
    lines = printed(width, "report")
    text = "\n".join(lines)
    words = " ".join(text.split())
    # The caption whole, every column, the numbers unbroken, the short dataset name.
    assert "mean ± sample std over seeds (n runs)." in words
    for header in ("model", "base", "best LoRA", "LoRA", "points", "trainable", "time"):
        assert header in text, header
    assert "0.7920" in text and "± 0.0020" in text and "+8.70" in text and "10.0s" in text
    assert "reviews" in text and "/data/" not in text
    grouped = "\n".join(printed(width, "report", "--group-by", "r,lr", "--split", "test"))
    assert grouped.count("reviews") == 20 and "0.8020" in grouped


def test_a_wide_terminal_keeps_one_line_per_row(grid: str) -> None:
    lines = printed(200, "report")
    header = next(line for line in lines if "┃ best LoRA configuration" in line)
    assert "base acc / loss" in header and "train time" in header


@pytest.mark.parametrize("width", [80, 100])
def test_list_fits_ordinary_terminals(grid: str, width: int) -> None:
    with db.session_scope(write=True) as s:
        spec = LoraSpec(
            model="/models/fine-tuned/bert-base-reviews", data=DataSpec(dataset=SPLIT_FILES)
        )
        _insert(s, spec, {}, status="cancelled", tags=("nightly-grid", "a-long-tag-name"))
    lines = printed(width, "list", "--limit", "5")
    text = "\n".join(lines)
    for word in ("cancelled", "succeeded", "lora", "bert-base-reviews", "reviews", "minilm"):
        assert word in text, word
    header = next(line for line in lines if line.split()[:3] == ["id", "kind", "status"])
    assert "model" in header and "dataset" in header
    if width >= 100:
        assert "tags" in header and "a-long-tag-name,nightly-grid" in text


# --- short names for datasets and models ------------------------------------------------------


def test_display_names() -> None:
    from ftqueue.core.text import display_name, display_names

    assert display_name(SPLIT_FILES) == "reviews"
    assert display_name("train=/d/imdb/train.csv,test=/d/imdb/test.csv") == "imdb"
    assert display_name("train=/a/x.csv,test=/b/y.csv") == "x+y"
    assert display_name("/data/my_reviews.csv") == "my_reviews.csv"
    assert display_name("/models/bert-ft/") == "bert-ft"
    for as_is in ("movie-snippets", "rotten_tomatoes", "org/name", "minilm"):
        assert display_name(as_is) == as_is
    # Two sources that would read the same keep their full names; a given name wins.
    same = ["/a/data.csv", "/b/data.csv", "/c/other.csv"]
    assert display_names(same) == {**{v: v for v in same[:2]}, "/c/other.csv": "other.csv"}
    assert display_names(same, {"/a/data.csv": "a-data"})["/a/data.csv"] == "a-data"


def test_a_dataset_name_is_for_people_not_part_of_the_job() -> None:
    from ftqueue.specs import config_hash

    plain = LoraSpec(model=MODEL, data=DataSpec(dataset=SPLIT_FILES))
    named = LoraSpec(model=MODEL, data=DataSpec(dataset=SPLIT_FILES, dataset_name="reviews-v2"))
    assert named.to_dict()["data"]["dataset_name"] == "reviews-v2"
    assert "dataset_name" not in plain.to_dict()["data"]  # older specs keep their hash
    assert named.spec_hash() == plain.spec_hash()
    assert config_hash(named.to_dict()) == config_hash(plain.to_dict())


def test_dataset_name_shows_in_list_report_and_plot(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftqueue.settings import reset_settings

    monkeypatch.setenv("FTQUEUE_EAGER", "1")
    reset_settings()
    folder = tmp_path / "files"
    folder.mkdir()
    rows = "".join(f"sentence {i} is {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40))
    for name in ("part_one", "part_two"):
        (folder / f"{name}.csv").write_text("text,label\n" + rows)
    dataset = f"train={folder}/part_one.csv,test={folder}/part_two.csv"
    synthetic = ["--model", "synthetic:seconds=0", "--dataset", dataset]
    for args in (["lora", "--dataset-name", "sentences"], ["evaluate"]):
        out = CliRunner().invoke(cli, ["submit", args[0], *synthetic, *args[1:]])
        assert out.exit_code == 0, out.output
    listed = "\n".join(printed(80, "list"))
    assert listed.count("sentences") == 2 and str(folder) not in listed
    table = "\n".join(printed(80, "report"))
    assert "sentences" in table and "part_" not in table
    # Machine-readable outputs keep the full paths.
    out = CliRunner().invoke(cli, ["report", "--format", "json"])
    where = folder.resolve()
    assert json.loads(out.output)[0]["dataset"] == (
        f"train={where / 'part_one.csv'},test={where / 'part_two.csv'}"
    )
    fig = draw()
    try:
        assert fig.axes[0].get_title(loc="left").startswith("synthetic:seconds=0 on sentences")
    finally:
        close(fig)
    too_long = CliRunner().invoke(cli, ["submit", "lora", *synthetic, "--dataset-name", "x" * 65])
    assert too_long.exit_code == 2 and "--dataset-name" in too_long.output
