"""Notifications through Apprise (FTQUEUE_NOTIFY): a job that failed for good, a sweep's end,
and the events FTQUEUE_NOTIFY_ON adds.

Events are written to the outbox (ftqueue/store/outbox.py) in the transaction that makes them
happen; ``flush`` takes them once each, after commit, and sends them. A failure to send is a
warning in the log, never a job's failure.
"""

from __future__ import annotations

import logging

from ftqueue.errors import first_line
from ftqueue.notify import messages, sending
from ftqueue.settings import get_settings
from ftqueue.store import outbox

log = logging.getLogger(__name__)

#: The most notifications one call sends: a worker that ends a job goes back to its queue
#: soon, and the reaper's next pass sends the rest.
BATCH = 20


def flush(limit: int = BATCH) -> int:
    """Send the notifications no process has taken yet; returns how many reached every URL."""
    urls = get_settings().notify
    if not urls:
        return 0
    try:
        taken = outbox.claim(limit)
    except Exception as exc:  # the database may be away: whoever flushes next sends them
        log.warning("notifications: could not read the outbox: %s", first_line(exc))
        return 0
    sent = 0
    for pending in taken:
        try:
            problems = sending.send(urls, messages.compose(pending))
        except Exception as exc:  # a notification must never fail the job that made it
            problems = [f"not composed: {type(exc).__name__}: {first_line(exc)}"]
        if not problems:
            sent += 1
            continue
        log.warning(
            "notification %s (%s) not sent: %s", pending.id, pending.event, "; ".join(problems)
        )
        try:
            outbox.record_error(pending.id, "; ".join(problems))
        except Exception as exc:
            log.warning("notification %s: could not record why: %s", pending.id, first_line(exc))
    return sent
