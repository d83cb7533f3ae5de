"""A remediation intent: the durable note written before every PATCH, so that no write of ours goes unrecorded.

It is also the revert-war breaker's count (one intent per write attempt) and the evidence dlp.domain.provenance
weighs: the write it announces goes out with the intent's evaluation id as its correlation ID, between `written`
and `deadline` (the writing invocation's budget end).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from dlp.domain.model import Change

PENDING = "pending"          # written; the outcome not recorded yet
# What became of an intent once resolved: `recorded` (its remediation was recorded), `lapsed` (provenance showed it
# never landed), `not-applied` (nothing was written: the lease was lost), or the action recorded.
LAPSED = "lapsed"
NOT_APPLIED = "not-applied"
RECORDED = "recorded"
# An intent in one of these states has no record of its own: a close of its write, if change history shows one after
# all, is nobody's remediation record and must be recorded as a window like anyone's (never hidden as "ours").
UNRECORDED = (LAPSED, NOT_APPLIED)


@dataclass(frozen=True)
class Intent:
    """One write attempt on one registry, as the state store keeps it."""

    when: str                            # written, ISO 8601 UTC (before the PATCH left)
    caller: str                          # who made the drift it reverts (the triggering event's caller)
    evaluation_id: str                   # = the PATCH's x-ms-correlation-request-id
    changes: tuple[Change, ...] = ()     # the planned property changes (old -> new)
    trigger: str = ""
    event_id: str = ""
    correlation_id: str = ""             # the triggering write's correlation ID (not ours)
    mode: str = ""
    status: str = ""                     # PENDING until the outcome is recorded, then what became of it
    until: float = 0.0                   # wall clock (epoch s): the writing invocation's budget ends
    row_key: str = ""
    own_event: str = ""                  # the event skipped as this write's own (one-shot, set under an ETag)
    opened_at: str = ""                  # the drift it reverts: when and by whom it was opened, when known
    opened_by: str = ""
    etag: str = ""                       # the row's version as read (conditional updates)
    looked_at: float = 0.0               # wall clock: the last look that could not settle it (the timer rotates)

    @property
    def pending(self) -> bool:
        return self.status == PENDING

    @property
    def recorded_or_pending(self) -> bool:
        """Its remediation is (or will be) recorded under its evaluation id: a close of its write is covered."""
        return self.status not in UNRECORDED

    @property
    def written(self) -> datetime | None:
        try:
            moment = datetime.fromisoformat(self.when)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

    @property
    def deadline(self) -> datetime | None:
        """When the writing invocation's budget ended (an orphaned intent has 0: long past)."""
        if self.until <= 0:
            return self.written
        try:
            return datetime.fromtimestamp(self.until, timezone.utc)
        except (OverflowError, OSError, ValueError):      # a damaged row: the intent's time is unknown
            return None


__all__ = ["LAPSED", "NOT_APPLIED", "PENDING", "RECORDED", "UNRECORDED", "Intent"]
