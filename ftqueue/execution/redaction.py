"""Secrets taken out of log lines and tracebacks before they are stored for every machine."""

from __future__ import annotations

import re

MASK = "***"

# Each pattern keeps what names the secret (group 1) and masks the value after it.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A password in a URL: redis://:pw@host, postgresql://user:pw@host/db.
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)[^@/?#\s]+(?=@)"), rf"\1{MASK}"),
    (
        re.compile(r"(?i)(\bauthorization\s*[:=]\s*(?:bearer|basic|token)\s+)[^\s'\",]+"),
        rf"\1{MASK}",
    ),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=\-]{8,}"), rf"\1{MASK}"),
    # Tokens recognised by their prefix: Hugging Face, GitHub, OpenAI-style, AWS access keys.
    (re.compile(r"\b(hf_)[A-Za-z0-9]{8,}"), rf"\1{MASK}"),
    (re.compile(r"\b(gh[pousr]_)[A-Za-z0-9]{16,}"), rf"\1{MASK}"),
    (re.compile(r"\b(sk-)[A-Za-z0-9_\-]{16,}"), rf"\1{MASK}"),
    (re.compile(r"\b(AKIA)[0-9A-Z]{16}\b"), rf"\1{MASK}"),
    # key=value and "key": "value" for names that say what they hold.
    (
        re.compile(
            r"(?i)(\b[\w\-]*(?:password|passwd|secret|token|api[_\-]?key)(?:[_\-]?key)?['\"]?\s*[=:]\s*['\"]?)"
            r"(?!\*\*\*)[^\s'\",&;]+"
        ),
        rf"\1{MASK}",
    ),
)


def redact(text: str) -> str:
    """``text`` with values that look like secrets replaced by ***."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
