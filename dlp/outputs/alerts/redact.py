"""Keeping the Teams webhook URL out of logs and exception text.

The Workflows URL carries its credential in the query (`sig`): anyone holding it can post
to the channel. Our own log lines never include it, but two things outside our code do:
`requests` puts the full URL in connection-error messages, and urllib3 logs every request
line (path and query) at DEBUG. `scrub` cleans text we log; `SecretFilter` is attached to
urllib3's logger so a DEBUG configuration elsewhere cannot leak it either.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
# Any `sig=` query value, whatever URL it belongs to (Workflows, Logic Apps, SAS tokens).
_SIG = re.compile(r"(?i)(\bsig=)[^&\s'\"<>)]+")
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection")


def secret_parts(url: str) -> list[str]:
    """The strings to hide for one webhook URL: the URL itself, its path+query, and each query value."""
    if not url:
        return []
    split = urlsplit(url)
    parts = {url, unquote(url)}
    if split.query:
        parts |= {f"{split.path}?{split.query}", split.query}
        parts |= {value for _, value in parse_qsl(split.query) if len(value) >= 8}
        parts |= {quote(value, safe="") for _, value in parse_qsl(split.query) if len(value) >= 8}
    return sorted((p for p in parts if p), key=len, reverse=True)


def scrub(text: object, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret and any `sig=` value replaced by ***."""
    out = str(text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, MASK)
    return _SIG.sub(lambda m: m.group(1) + MASK, out)


class SecretFilter(logging.Filter):
    """Rewrites records that mention a registered secret (never drops them)."""

    def __init__(self) -> None:
        super().__init__("dlp-secrets")
        self._secrets: list[str] = []
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets = sorted(set(self._secrets) | {s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:       # a broken record is the logging module's problem, not ours
            return True
        clean = scrub(message, self._secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_filter = SecretFilter()
_installed = False
_install_lock = threading.Lock()


def protect(url: str) -> list[str]:
    """Register a webhook URL's secret parts with the urllib3 log filter; returns them for `scrub`."""
    global _installed
    secrets = secret_parts(url)
    _filter.add(secrets)
    with _install_lock:
        if not _installed:
            for name in _URLLIB3_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
            _installed = True
    return secrets
