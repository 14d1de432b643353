"""MkDocs hook: the reference tables that come from the code, so the docs cannot drift from it.

`<!-- generated: settings -->` becomes the table of the `Settings` fields (variable, default,
meaning) read from ftqueue/settings.py; `<!-- generated: runs-columns -->` becomes the columns
of the `runs` view of a database migrated to the head revision, each with its meaning from
RUNS_COLUMNS below. A field without its `#: FTQUEUE_...` comment, a view column this file does
not describe, or a described column the view lost fails the build.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs_click import _docs as mkdocs_click_docs

ROOT = Path(__file__).resolve().parents[1]

#: The `runs` view's columns and what each holds; the view is built by the migrations.
RUNS_COLUMNS = {
    "job_id": "the job",
    "kind": "the job's kind (`lora`, `evaluate`, ...)",
    "role": "`base` (a bare model, its head trained), `run` (a LoRA run) or "
    "`adapter evaluation` (a run's adapter evaluated with `--adapter-job`)",
    "status": "the job's status, as stored",
    "model": "the model, as submitted",
    "dataset": "the data the job read",
    "sweep_id": "the sweep the job belongs to, if any",
    "name": "the job's `--name`",
    "split": "`train`, `validation` or `test`",
    "epoch": "the epoch the row measures",
    "final_epoch": "true on each job's last epoch of a split",
    "accuracy": "accuracy on the split",
    "macro_f1": "macro-F1 on the split",
    "loss": "mean loss on the split",
    "n_examples": "rows of the split measured",
    "adapter_job": "for an adapter evaluation: the LoRA job that trained the adapter",
    "r": "LoRA rank",
    "alpha": "LoRA alpha",
    "dropout": "LoRA dropout",
    "target_modules": "the adapted modules, comma-joined (`query,key,value`)",
    "bias": "peft's `bias` setting",
    "pooling": "the sentence vector: `pooler`, `mean` or `cls`",
    "lr": "the adapter's learning rate, as trained (the device's default when left out)",
    "head_lr": "the head's learning rate, as trained",
    "epochs": "epochs, as trained",
    "head_epochs": "an evaluate job's head epochs",
    "batch_size": "batch size, as trained",
    "grad_accum": "micro-batches per optimizer step",
    "max_length": "the longest tokenized row",
    "warmup_ratio": "share of steps spent warming up",
    "weight_decay": "AdamW weight decay",
    "seed": "the training seed",
    "train_samples": "the training subset's size, if one was asked for",
    "eval_samples": "the evaluation subset's size, if one was asked for",
    "split_seed": "the seed of the train/validation/test cut",
    "config_hash": "the hash that identifies the job's configuration",
    "train_seconds": "training wall time",
    "samples_per_second": "training samples per second",
    "trainable_params": "parameters the job trained",
    "total_params": "parameters of the model",
    "user": 'who submitted the job (`FTQUEUE_USER`); quote it in PostgreSQL: `"user"`',
    "created_at": "when the job was submitted",
    "finished_at": "when the job ended",
    "spec": "the whole spec (`jsonb` on PostgreSQL, JSON text on SQLite)",
    "trained_with": "the values the device chose for what the spec left open",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """One row per `Settings` field: its variable, its default when unset, its meaning."""
    sys.path.insert(0, str(ROOT))
    from ftqueue.settings import Settings, load_settings

    source = (ROOT / "ftqueue" / "settings.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    comments: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    above = []
                    index = item.lineno - 2
                    while index >= 0 and lines[index].strip().startswith("#:"):
                        above.insert(0, lines[index].strip()[2:].strip())
                        index -= 1
                    comments[item.target.id] = " ".join(above)
    defaults = load_settings({"FTQUEUE_HOME": "/FTQUEUE_HOME"})
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for field in dataclasses.fields(Settings):
        comment = comments.get(field.name, "")
        variable, _, meaning = comment.partition(": ")
        if not variable.startswith("FTQUEUE_") or not meaning:
            raise ValueError(
                f"Settings.{field.name} needs a '#: FTQUEUE_NAME: meaning' comment above it"
            )
        rows.append(
            f"| `{variable}` | {_default(field.name, getattr(defaults, field.name))} "
            f"| {_cell(meaning)} |"
        )
    return "\n".join(rows)


def _default(name: str, value: Any) -> str:
    if name == "home":
        return "`~/.ftqueue`"
    if value is None or value == () or value == "":
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, frozenset):
        value = ",".join(sorted(str(getattr(v, "value", v)) for v in value))
    elif isinstance(value, int):
        value = f"{value:,}".replace(",", "_") if value >= 100_000 else value
    text = str(value).replace("/FTQUEUE_HOME", "$FTQUEUE_HOME")
    return f"`{text}`"


def runs_columns_table() -> str:
    """The `runs` view's columns, read from a SQLite database migrated to the head revision."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTQUEUE_")}
        env["FTQUEUE_HOME"] = home
        subprocess.run(
            [sys.executable, "-m", "ftqueue", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        with sqlite3.connect(Path(home) / "ftqueue.db") as connection:
            columns = [(row[1], row[2]) for row in connection.execute("PRAGMA table_info(runs)")]
    names = [name for name, _ in columns]
    missing = [name for name in names if name not in RUNS_COLUMNS]
    gone = [name for name in RUNS_COLUMNS if name not in names]
    if missing or gone:
        raise ValueError(
            f"docs/hooks.py RUNS_COLUMNS is out of step with the runs view: "
            f"undescribed {missing}, no longer in the view {gone}"
        )
    rows = ["| column | type on SQLite | what it holds |", "|---|---|---|"]
    rows += [f"| `{name}` | {kind or '-'} | {RUNS_COLUMNS[name]} |" for name, kind in columns]
    return "\n".join(rows)


@functools.cache
def _generated() -> dict[str, str]:
    return {
        "<!-- generated: settings -->": settings_table(),
        "<!-- generated: runs-columns -->": runs_columns_table(),
    }


def _description(ctx: Any, remove_ascii_art: bool = False) -> Iterator[str]:
    """A command's help as Markdown, its `\\b` paragraphs (examples) as code blocks."""
    text = ctx.command.help or ctx.command.short_help
    if not text:
        return
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = paragraph.splitlines()
        if lines and lines[0].strip() == "\b":
            yield "```text"
            yield from textwrap.dedent("\n".join(lines[1:])).splitlines()
            yield "```"
        else:
            yield from lines
        yield ""


def _option_row(option: Any) -> str:
    """An option's table row, with no default shown where click has none (its UNSET)."""
    names = ", ".join(f"`{opt}`" for opt in option.opts)
    if option.secondary_opts:
        names += " / " + ", ".join(f"`{opt}`" for opt in option.secondary_opts)
    kind = mkdocs_click_docs._format_table_option_type(option)
    default = option.default
    if default is None or "UNSET" in repr(default):
        shown = "required" if option.required else "-"
    elif callable(default):
        shown = "computed"
    else:
        shown = f"`{default}`"
    return f"| {names} | {kind} | {_cell(option.help or '')} | {shown} |"


def on_config(config: Any) -> Any:
    """Teach mkdocs-click the help texts' `\\b` examples and click's unset defaults."""
    mkdocs_click_docs._make_description = _description
    mkdocs_click_docs._format_table_option_row = _option_row
    return config


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each generated-table marker on a page with its table."""
    for marker, table in _generated().items():
        if marker in markdown:
            markdown = markdown.replace(marker, table)
    return markdown
