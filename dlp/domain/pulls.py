"""What was pulled, by whom and from where, while a registry was open: registry resource-log rows -> counted,
de-duplicated, grouped pulls inside one exposure window.

Why: an exposure window says a registry was open for 93 seconds; the next question is "did anything leave?".
ACR answers it in its resource logs (diagnostic categories `ContainerRegistryRepositoryEvents` and
`ContainerRegistryLoginEvents`, sent to a Log Analytics workspace). The query (dlp/azure/logs_query.py) only
selects rows; everything that decides what counts happens here, so it is tested without Log Analytics.

Pure: no clock, no I/O, no settings. Every value from a log row is hostile text (a repository or tag name, an
identity) and goes through `display_text` before anyone sees it.

Columns used (Azure Monitor table reference, learn.microsoft.com/azure/azure-monitor/reference/tables/
containerregistryrepositoryevents and .../containerregistryloginevents): `TimeGenerated`, `Type` (the table),
`OperationName` ("Pull" for a manifest pull), `Repository`, `Tag`, `Digest`, `Identity`, `CallerIpAddress` (may
carry a ":port"), `ResultType`, `CorrelationId`; the login table has no Repository / Tag / Digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dlp.domain.exposure import display_text, iso, parse_time
from dlp.domain.model import PULLS_COUNTED, PULLS_OFF, PULLS_PENDING, PULLS_UNKNOWN, Pull, Pulls

REPOSITORY_EVENTS = "ContainerRegistryRepositoryEvents"
LOGIN_EVENTS = "ContainerRegistryLoginEvents"
PULL_OPERATION = "pull"
MAX_DETAILS = 20          # pulls kept in ExposurePullDetails and the alert
MAX_ARTIFACTS = 5         # artifacts named per caller in a sentence
MAX_CALLERS = 5           # callers named in a sentence
MAX_PICTURE = 500         # callers / artifacts remembered for "did the picture change"
NOT_CONFIGURED = "registry logs are not configured (DLP_REGISTRY_LOGS_WORKSPACE)"
# Outcome.reason of the alert a later look sends (dlp/responder/impact.py): the pulls grew, or stayed unknown
REASON_FOUND = "pulls-found"
REASON_UNKNOWN = "pulls-unknown"
LOOK_REASONS = (REASON_FOUND, REASON_UNKNOWN)


@dataclass(frozen=True)
class Picture:
    """What an alert has said about a window's pulls: how many, who from where, which artifacts. A later look is
    news when it adds to any of them (more pulls, a new caller or IP, a new artifact)."""

    count: int = 0
    callers: frozenset[str] = field(default_factory=frozenset)     # "identity|ip"
    artifacts: frozenset[str] = field(default_factory=frozenset)

    def news(self, told: Picture) -> tuple[str, ...]:
        """What this picture adds to `told`, in words ("2 more pulls", "a new caller: ..."); () when nothing."""
        out = []
        if self.count > told.count:
            more = self.count - told.count
            out.append(f"{more} more pull{'s' if more != 1 else ''}" if told.count else
                       f"{self.count} pull{'s' if self.count != 1 else ''}")
        for caller in sorted(self.callers - told.callers)[:MAX_CALLERS]:
            identity, _, ip = caller.partition("|")
            out.append(f"a new caller: {_who(identity, ip)}")
        return tuple(out)

    def merged(self, other: Picture) -> Picture:
        return Picture(max(self.count, other.count), _cap(self.callers | other.callers),
                       _cap(self.artifacts | other.artifacts))

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "callers": sorted(self.callers), "artifacts": sorted(self.artifacts)}

    @classmethod
    def from_json(cls, body: Any) -> Picture:
        if not isinstance(body, Mapping):
            return cls()
        count = body.get("count")
        return cls(count if isinstance(count, int) and count >= 0 else 0,
                   frozenset(str(c) for c in body.get("callers") or () if isinstance(c, str)),
                   frozenset(str(a) for a in body.get("artifacts") or () if isinstance(a, str)))


def _cap(items: frozenset[str]) -> frozenset[str]:
    return items if len(items) <= MAX_PICTURE else frozenset(sorted(items)[:MAX_PICTURE])


@dataclass(frozen=True)
class _Row:
    at: datetime
    table: str
    operation: str
    repository: str
    tag: str
    digest: str
    identity: str
    caller_ip: str
    result: str
    correlation_id: str

    @property
    def reference(self) -> str:
        return f":{self.tag}" if self.tag else (f"@{self.digest}" if self.digest else "")

    @property
    def key(self) -> str:
        """The same log row seen twice (a duplicate delivery, two overlapping queries) counts once."""
        raw = "\x1f".join((iso(self.at), self.repository, self.tag, self.digest, self.identity, self.caller_ip,
                           self.correlation_id))
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def refused(self) -> bool:
        """A pull the registry answered with an HTTP error (401, 403, 404, ...) moved nothing out."""
        return self.result.isdigit() and int(self.result) >= 400


def caller_ip(value: Any) -> str:
    """`CallerIpAddress` without the ":port" ACR may append ("198.51.100.7:51234", "[2001:db8::1]:443")."""
    text = display_text(value, 64)
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::\d+)?", text)
    if bracketed:
        return bracketed.group(1)
    v4 = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3}):\d+", text)
    return v4.group(1) if v4 else text


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return parse_time(value)


def parse_rows(rows: Iterable[Any]) -> list[_Row]:
    """Log rows (mappings of column -> value, as the adapter or a test gives them) -> parsed rows; rows without a
    time are dropped (never raises)."""
    out = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        at = _time(row.get("TimeGenerated"))
        if at is None:
            continue
        table = str(row.get("Type") or (REPOSITORY_EVENTS if row.get("Repository") else LOGIN_EVENTS))
        out.append(_Row(at, table, str(row.get("OperationName") or "").strip().lower(),
                        display_text(row.get("Repository"), 256), display_text(row.get("Tag"), 128),
                        display_text(row.get("Digest"), 80), display_text(row.get("Identity")),
                        caller_ip(row.get("CallerIpAddress")), str(row.get("ResultType") or "").strip()[:16],
                        str(row.get("CorrelationId") or "")[:128]))
    return out


def count(rows: Iterable[Any], opened_at: datetime, closed_at: datetime, *, truncated: bool = False
          ) -> tuple[Pulls, Picture]:
    """The pulls inside [opened_at, closed_at] (both included), de-duplicated, oldest first; pulls outside the
    window are never counted or named. `truncated`: the query hit its row bound, so the count is a lower bound."""
    parsed = [r for r in parse_rows(rows) if opened_at <= r.at <= closed_at]
    pulls: dict[str, _Row] = {}
    refused = 0
    for row in sorted(parsed, key=lambda r: r.at):
        if row.table.lower() != REPOSITORY_EVENTS.lower() or row.operation != PULL_OPERATION:
            continue
        if row.refused:
            refused += 1
            continue
        pulls.setdefault(row.key, row)
    found = list(pulls.values())
    pullers = {(r.identity, r.caller_ip) for r in found}
    logins = [r for r in parsed if r.table.lower() == LOGIN_EVENTS.lower() and (r.identity, r.caller_ip) not in pullers
              and not r.refused]
    details = tuple(Pull(iso(r.at), r.repository, r.reference, r.identity, r.caller_ip) for r in found[:MAX_DETAILS])
    picture = Picture(len(found), _cap(frozenset(f"{r.identity}|{r.caller_ip}" for r in found)),
                      _cap(frozenset(r.repository + r.reference for r in found)))
    sentence = _sentence(found, truncated) + _logins(logins) + (
        f" ({refused} refused pull{'s' if refused != 1 else ''} not counted)" if refused else "")
    return Pulls(PULLS_COUNTED, len(found), details, "", sentence, truncated), picture


def _who(identity: str, ip: str) -> str:
    if ip and identity:
        return f"{ip} ({identity})"
    return ip or identity or "an unknown caller"


def _sentence(found: list[_Row], truncated: bool) -> str:
    if not found:
        return "no pulls recorded"
    groups: dict[tuple[str, str], list[_Row]] = {}
    for row in found:
        groups.setdefault((row.caller_ip, row.identity), []).append(row)
    parts = []
    for (ip, identity), rows in list(groups.items())[:MAX_CALLERS]:
        artifacts = list(dict.fromkeys(r.repository + r.reference for r in rows))
        named = ", ".join(artifacts[:MAX_ARTIFACTS]) + (f" and {len(artifacts) - MAX_ARTIFACTS} more"
                                                         if len(artifacts) > MAX_ARTIFACTS else "")
        parts.append(f"{len(rows)} pull{'s' if len(rows) != 1 else ''} from {_who(identity, ip)}: {named}")
    if len(groups) > MAX_CALLERS:
        parts.append(f"and {len(groups) - MAX_CALLERS} more callers")
    prefix = "at least " if truncated else ""
    return prefix + "; ".join(parts)


def _logins(logins: list[_Row]) -> str:
    if not logins:
        return ""
    who = list(dict.fromkeys(_who(r.identity, r.caller_ip) for r in logins))
    return "; logins without a pull: " + ", ".join(who[:MAX_CALLERS]) + (
        f" and {len(who) - MAX_CALLERS} more" if len(who) > MAX_CALLERS else "")


def unknown(reason: str) -> Pulls:
    """The logs could not be read for this window: never a zero."""
    why = display_text(reason, 300) or "the registry logs could not be read"
    return Pulls(PULLS_UNKNOWN, None, (), why, f"pulls unknown: {why}")


def pending(first_look: datetime) -> Pulls:
    """Not looked up yet: resource logs arrive minutes after the pull."""
    when = iso(first_look)
    return Pulls(PULLS_PENDING, None, (), f"first look at {when}",
                 f"pulls not looked up yet (registry logs arrive minutes late; first look at {when})")


def off() -> Pulls:
    return Pulls(PULLS_OFF, None, (), NOT_CONFIGURED, f"pulls unknown: {NOT_CONFIGURED}")


def with_note(pulls: Pulls, note: str) -> Pulls:
    """`pulls` with a note on what happens next (counted so far, another look at ...)."""
    return Pulls(pulls.status, pulls.count, pulls.details, display_text(note, 300), pulls.sentence, pulls.truncated)


__all__ = ["LOGIN_EVENTS", "LOOK_REASONS", "MAX_DETAILS", "REASON_FOUND", "REASON_UNKNOWN", "REPOSITORY_EVENTS",
           "Picture", "caller_ip", "count", "off", "parse_rows", "pending", "unknown", "with_note"]
