"""The README and the docs site as a user meets them: short, set up the same way, about the project.

`mkdocs build --strict` (in scripts/check) checks links and the generated reference; this
checks what a build cannot: the README's length and set-up commands, the settings the reference
covers, and that nothing describes one development machine.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

SETUP = [
    "python3 -m venv .venv && . .venv/bin/activate && scripts/install && scripts/demo",
    "python3 -m venv .venv && . .venv/bin/activate && scripts/test",
]

#: Words about one machine or the way it was worked on, not about the project.
MACHINE = re.compile(
    r"/work/|/check/|/root/|\blent\b|\bfor 15 minutes|worktree|\bhelper session|other engineers"
    r"|other sessions|DESIGN\.md",
    re.I,
)


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short_and_sets_up_in_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    quickstart = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for command in SETUP:
        assert f"```bash\n{command}\n```" in text
        assert f"```bash\n{command}\n```" in quickstart
        assert f"```bash\n{command}\n```" in contributing


def test_the_readme_picture_and_links_exist() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert "docs/images/report-plot.png" in targets
    assert [t for t in targets if "://" not in t and not (ROOT / t).exists()] == []


def test_the_settings_table_covers_every_variable_the_settings_read() -> None:
    source = (ROOT / "ftqueue" / "settings.py").read_text(encoding="utf-8")
    read = set(re.findall(r'"(FTQUEUE_[A-Z_]+)"', source))
    table = _hooks().settings_table()
    page = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    assert read, "no FTQUEUE_ variable found in ftqueue/settings.py"
    assert sorted(v for v in read if f"`{v}`" not in table and v not in page) == []
    # Defaults come from the code, with no path of the machine that built the docs.
    assert "| `FTQUEUE_MAX_GRID` | `10000` |" in table
    assert str(Path.home()) not in table


def test_nothing_describes_one_development_machine() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "README.md", "CONTRIBUTING.md", "docs", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    found = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".png", ".gz"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE.search(line) and path.name != "test_docs_site.py":
                found.append(f"{name}:{number}: {line.strip()[:100]}")
    assert found == []


def test_the_flags_the_guides_teach_exist() -> None:
    """Object storage, GPU classes, priorities and fair share: each flag the guides name is
    one the command has (the CLI reference is generated; the guides are written)."""
    from ftqueue.cli import cli

    def options(*path: str) -> set[str]:
        command = cli
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        return {o for p in command.params for o in getattr(p, "opts", [])}

    machines = (DOCS / "guides" / "several-machines.md").read_text(encoding="utf-8")
    gpu = (DOCS / "guides" / "gpu.md").read_text(encoding="utf-8")
    assert "ftqueue fetch 12" in machines and "--json" in options("fetch")
    taught = {
        ("worker",): ["--class"],
        ("submit", "lora"): ["--gpu-class", "--priority", "--strict"],
        ("list",): ["--user"],
        ("report",): ["--user"],
    }
    for path, flags in taught.items():
        for flag in flags:
            assert flag in gpu, flag
            assert flag in options(*path), (path, flag)
    for variable in ("FTQUEUE_USER", "FTQUEUE_MAX_RUNNING_PER_USER", "FTQUEUE_CAP_RETRY_SECONDS"):
        assert variable in gpu
    assert "FTQUEUE_S3_ENDPOINT_URL" in machines
