"""Numbers and times written for people, the same in every table ftqueue prints."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any


def duration(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``2h10m``; empty for None."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def age(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago ``when`` was (``4m05s ago``); empty for None."""
    if when is None:
        return ""
    return duration(((now or dt.datetime.now(dt.UTC)) - when).total_seconds()) + " ago"


#: The most characters of one piece of user data (a value, a cell, a path) a message quotes.
QUOTE_LIMIT = 200


def clip(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``str(value)`` cut to ``limit`` characters (saying how long it was), on one line."""
    text = str(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text):,} characters)"
    return text.replace("\r", "\\r").replace("\n", "\\n")


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: user data never floods it."""
    if isinstance(value, str) and len(value) > limit:
        # Cut the repr too: escapes (\x1f, \U000e0061) make it up to ten times the text.
        return f"{repr(value[:limit])[: limit + 2]}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def display_name(value: str) -> str:
    """A model or dataset as a table shows it: named split files by their common stem
    (``train=/d/reviews_train.csv,test=/d/reviews_test.csv`` -> ``reviews``), a local file or
    directory by its name; hub ids and aliases as they are."""
    import os.path

    if "=" in value and "/" in value:
        paths = [part.partition("=")[2].strip() for part in value.split(",")]
        stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        # Character by character on purpose: reviews_train and reviews_test share "reviews".
        common = os.path.commonprefix(stems).rstrip("_-. ")  # noqa: RUF071
        if len(common) >= 2:
            return common
        folders = {os.path.basename(os.path.dirname(p)) for p in paths}
        if len(folders) == 1 and (folder := folders.pop()):
            return folder
        return "+".join(stems)
    if value.startswith("/"):
        return os.path.basename(value.rstrip("/")) or value
    return value


def display_names(values: Iterable[str], given: dict[str, str] | None = None) -> dict[str, str]:
    """The name to show for each value: the one ``given`` for it (--dataset-name), else its
    ``display_name``; but the value itself where two would read the same."""
    values = list(dict.fromkeys(values))
    short = {v: (given or {}).get(v) or display_name(v) for v in values}
    seen: dict[str, int] = {}
    for name in short.values():
        seen[name] = seen.get(name, 0) + 1
    return {v: name if seen[name] == 1 else v for v, name in short.items()}


def close_match(value: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice that ``value`` is most likely a slip of (``mini-lm``, ``MiniLM`` and
    ``minlm`` for ``minilm``), or None."""
    import difflib

    def squash(text: str) -> str:
        return "".join(c for c in text.lower() if c.isalnum())

    choices = list(choices)
    for choice in choices:
        if squash(value) == squash(choice):
            return choice
    found = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=cutoff)
    return found[0] if found else None


# C0 and C1 controls (ESC, CSI, OSC, BEL, CR, DEL...), bidi overrides and isolates, line and
# paragraph separators, and lone surrogates (undecodable file names): each can redraw, hide or
# reorder what a terminal shows, or make printing fail. Newline and tab are what a line needs.
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` safe for a terminal: every control character but newline and tab, and
    every bidi override, written out as its escape (``\\x1b``); idempotent."""
    return _UNPRINTABLE.sub(_visible, str(value))


def literal(value: object, style: str = "") -> Any:
    """The one way user data reaches the terminal: a rich ``Text`` of ``printable(value)``,
    which rich shows as it is (no markup, no highlighting), in ``style``."""
    from rich.text import Text

    return Text(printable(value), style=style)
