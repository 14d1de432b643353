"""Sending one message to Apprise URLs, with their secrets kept out of the log.

Apprise bounds each URL's connection and read (``cto`` and ``rto``, 4 s each unless the URL
sets them), so a receiver that is down or slow holds a worker for seconds, not minutes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ftqueue.errors import first_line
from ftqueue.notify.messages import Message

_local = threading.local()


class _Capture(logging.Filter):
    """Holds back Apprise's own log records while ftqueue sends, keeping their text instead:
    they name hosts and at times tokens, and ftqueue logs one redacted warning per failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        said: list[str] | None = getattr(_local, "said", None)
        if said is None:
            return True
        if record.levelno >= logging.WARNING:
            said.append(record.getMessage())
        return False


_FILTER = _Capture()


@contextmanager
def _captured() -> Iterator[list[str]]:
    logger = logging.getLogger("apprise")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    said: list[str] = []
    _local.said = said
    try:
        yield said
    finally:
        _local.said = None


def redact(text: str, url: str, shown: str) -> str:
    """``text`` without the parts of ``url`` that Apprise's private form ``shown`` hides."""
    secrets = {part for part in re.split(r"[/:@?&=#,]+", url) if len(part) >= 4}
    secrets = {part for part in secrets if part not in shown}
    for part in sorted(secrets, key=len, reverse=True):
        text = text.replace(part, "****")
    # A password in any URL the text quotes: user:****@host.
    return re.sub(r"(\w+://[^/\s:@]+:)[^@\s/]+@", r"\1****@", text)


def send(urls: Sequence[str], message: Message) -> list[str]:
    """Send ``message`` to each URL; returns what went wrong, one redacted line per URL."""
    import apprise

    problems = []
    for url in urls:
        server: Any = apprise.Apprise.instantiate(url)
        if server is None:  # settings parsed it; a plugin may still refuse it
            problems.append(f"{url.split('://', 1)[0]}://...: not a URL Apprise can use")
            continue
        # Apprise's private form hides passwords and tokens; its options add nothing here.
        shown = str(server.url(privacy=True)).split("?", 1)[0]
        with _captured() as said:
            try:
                ok = bool(
                    server.notify(title=message.title, body=message.body, notify_type=message.level)
                )
            except Exception as exc:  # a plugin's bug must not reach the job
                ok = False
                said.append(f"{type(exc).__name__}: {first_line(exc)}")
        if not ok:
            reason = said[-1] if said else "Apprise gave no reason"
            problems.append(redact(f"{shown}: {reason}", url, shown))
    return problems
