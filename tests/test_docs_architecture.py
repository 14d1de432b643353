"""docs/architecture.md in step with the packages: each one listed, nothing listed that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ftqueue"
PAGE = ROOT / "docs" / "architecture.md"

#: `ftqueue/store/schema.py`, `ftqueue/sweeps/methods`, `ftqueue.training`: a path or a dotted
#: name, not a word that merely ends in "ftqueue".
REFERENCE = re.compile(r"(?<![\w./-])ftqueue((?:[./][A-Za-z_]\w*)+)")


def _packages() -> list[str]:
    """Every package directory below ftqueue/, as `ftqueue/a/b`."""
    return sorted(
        str(init.parent.relative_to(ROOT))
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE
    )


def _exists(reference: str) -> bool:
    """A package, a module or a file, whether written with slashes or dots."""
    if "/" in reference:
        return (ROOT / reference).exists()
    path = ROOT / "ftqueue" / Path(*reference.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def test_every_package_is_on_the_page() -> None:
    text = PAGE.read_text(encoding="utf-8")
    named = {"ftqueue" + m.replace(".", "/") for m in REFERENCE.findall(text)}
    assert [p for p in _packages() if p not in named] == []


def test_every_top_level_package_has_a_section() -> None:
    headings = re.findall(r"^## `?(ftqueue/\w+)`?\s*$", PAGE.read_text(encoding="utf-8"), re.M)
    top = [p for p in _packages() if p.count("/") == 1]
    assert [p for p in top if p not in headings] == []


def test_everything_the_page_names_exists() -> None:
    text = PAGE.read_text(encoding="utf-8")
    references = {match.group(0) for match in REFERENCE.finditer(text)}
    assert references, "the page names no ftqueue/ path"
    assert sorted(ref for ref in references if not _exists(ref)) == []


def _sections() -> dict[str, str]:
    """Each `## ftqueue/...` section's text, by the package it is about."""
    text = PAGE.read_text(encoding="utf-8")
    parts = re.split(r"^## `?(ftqueue/[\w/]+)`?\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_each_section_names_every_module_of_its_package() -> None:
    """A module added to a package is described in the package's section."""
    sections = _sections()
    missing = [
        f"{package}/{module.stem}"
        for package, text in sections.items()
        if package != "ftqueue/migrations"
        for module in sorted((ROOT / package).glob("*.py"))
        if module.stem != "__init__" and f"`{module.stem}`" not in text
    ]
    assert missing == []
