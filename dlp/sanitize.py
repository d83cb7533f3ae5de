"""Text from outside (claims, headers, tag values, error messages) made safe to show.

Anyone who can write a registry controls some of what the responder shows: their token's
display name, a tag value, the name of a resource. Unicode lets such text lie: U+202E
(RIGHT-TO-LEFT OVERRIDE) shows "moc.osotnoc@eci1a" as "alice@contoso.com", zero-width
characters make two names look equal, and a newline starts a fake log line or a fake
"Changed by" row in a mail. So every outside value is passed through `clean` before it
reaches a record, a card, a mail or a log line: control characters (Cc) and line or
paragraph separators become a space, format characters (Cf: bidi controls, zero-width
characters, the BOM) and lone surrogates are removed, and runs of whitespace collapse.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

_SPACE = frozenset({"Cc", "Zl", "Zp"})
_DROP = frozenset({"Cf", "Cs"})


def clean(value: Any, limit: int | None = None) -> str:
    """`value` as one line of visible text, at most `limit` characters ("" for None)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if limit is not None:
        text = text[: limit * 4 + 64]       # bounded work whatever the size (removed characters need slack)
    if text.isascii() and text.isprintable() and "  " not in text:      # the common case: C speed, no copy
        if text[:1] == " " or text[-1:] == " ":
            text = text.strip()
    else:
        text = " ".join("".join(" " if unicodedata.category(ch) in _SPACE else ch for ch in text
                                if unicodedata.category(ch) not in _DROP).split())
    return text if limit is None or len(text) <= limit else text[:limit]


class CleanLogFilter(logging.Filter):
    """Rewrites a log record's message to one clean line (never drops the record): a value that slipped past
    `clean` cannot forge a log line or hide behind a bidi override in Application Insights."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:       # a broken record is the logging module's problem, not ours
            return True
        tidy = clean(message)
        if tidy != message:
            record.msg, record.args = tidy, None
        return True


# Every logger the responder writes to (tests/test_adversarial.py checks this list against the source).
LOGGERS = ("dlp.alerting", "dlp.deadletter", "dlp.delivery", "dlp.evaluation", "dlp.event_files", "dlp.handlers",
           "dlp.http", "dlp.logs", "dlp.outbox", "dlp.own_writes", "dlp.pipeline", "dlp.recording", "dlp.runtime",
           "dlp.scope", "dlp.sweep", "dlp.timeline", "dlp.impact", "dlp.logs_query")
_filter = CleanLogFilter()


def protect_logs(names: tuple[str, ...] = LOGGERS) -> None:
    """Attach the filter to the responder's loggers (idempotent; called when dlp is imported)."""
    for name in names:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
