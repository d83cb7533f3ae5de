"""The formats some settings take, checked as Azure will read them. Pure validators for dlp.settings: NCRONTAB
schedules (the Functions timer; tests/test_infra.py checks infra's sweep intervals with it), https URLs, blob
container names and URLs."""

from __future__ import annotations

import re

# NCRONTAB (Azure Functions timer): {second} {minute} {hour} {day} {month} {day-of-week}; day-of-week 0 is Sunday.
_CRON_FIELDS = (("second", 0, 59, ()), ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day", 1, 31, ()),
                ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
                ("day-of-week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")))
_CRON_ITEM = re.compile(r"^(?:(\*)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?$")


def ncrontab_problem(expression: str) -> str | None:
    """Why `expression` is not a 6-field NCRONTAB schedule the Functions timer accepts, or None.

    Each field is a comma list of `*`, `n` or `a-b` (names for months and days), each optionally `/step`.
    """
    fields = expression.split()
    if len(fields) != 6:
        return f"must be an NCRONTAB expression with 6 fields (second minute hour day month day-of-week), not {len(fields)}"
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            match = _CRON_ITEM.match(item)
            if not match:
                return f"{name} field {text[:20]!r} is not *, n, a-b or a list of them (each optionally /step)"
            star, first, last, step = match.groups()
            values = []
            for part in (first, last):
                if part is None:
                    continue
                if part.isdigit():
                    values.append(int(part))
                elif part.upper() in names:
                    values.append(names.index(part.upper()) + low)
                else:
                    return f"{name} field: {part[:20]!r} is not a number"
            if any(not low <= v <= high for v in values):
                return f"{name} field: values must be between {low} and {high}"
            if len(values) == 2 and values[0] > values[1]:
                return f"{name} field: range {first}-{last} runs backwards"
            if step is not None and not 1 <= int(step) <= high - low + 1:
                return f"{name} field: step must be between 1 and {high - low + 1}"
            if star is None and first is None:
                return f"{name} field is empty"
    return None


# Blob container names: https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")


def url_parses(url: str) -> bool:
    """What the SDKs and our redaction will do with it: `urlsplit` and its port must not raise (an unclosed
    IPv6 bracket, a port that is no number would otherwise fail the first invocation, not the setting)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return False
    return bool(parts.hostname)


def dead_letter_container(value: str, problems: list[tuple[str, str]]) -> tuple[str, str]:
    """DLP_DEADLETTER_CONTAINER -> (container name, account URL or "" for the app's own storage)."""
    from urllib.parse import urlsplit

    if not value:
        return "", ""
    account, name = "", value
    if "://" in value:
        if not url_parses(value):
            problems.append(("DLP_DEADLETTER_CONTAINER", "a URL must be https://<account host>/<container>"))
            return "", ""
        parts = urlsplit(value)
        segments = [s for s in parts.path.split("/") if s]
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment or len(segments) != 1:
            problems.append(("DLP_DEADLETTER_CONTAINER", "a URL must be https://<account host>/<container>, "
                                                         "with no query (no SAS: the managed identity reads it)"))
            return "", ""
        account, name = f"https://{parts.netloc}", segments[0]
    if not CONTAINER_RE.match(name):
        problems.append(("DLP_DEADLETTER_CONTAINER", "must name a blob container (3-63 lower-case letters, digits "
                                                     "and single hyphens, starting with a letter or digit)"))
        return "", ""
    return name, account
