"""Change history as the responder reads it: one registry's records and windows, each close judged by provenance.

Resource Graph's `resourcechanges` (dlp.azure.graph) gives the rows; dlp.domain.exposure turns them into windows;
dlp.domain.provenance decides which closes were the responder's writes, against the registry's intents. The
delayed check, the sweep, the settling of orphaned intents and the opener of a re-check's window all read it here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from dlp.domain import exposure, provenance
from dlp.domain.model import Target, registry_key

log = logging.getLogger("dlp.timeline")

RETENTION = timedelta(days=14)        # Resource Graph keeps change history this long
CONFIRM_MARGIN = timedelta(minutes=10)   # a replayed event's write is in history around the event's time

# The delayed check looks this far before the event's time for the opening write: a window may have been open for hours
# (audit mode, an exemption, the breaker holding) and its record must name who opened it. The claims keep a
# window found again from being recorded twice; one registry's day of history is a page at most.
LOOKBACK_S = 24 * 3600


@dataclass(frozen=True)
class History:
    """One registry's change records (oldest first) and its windows, their closes judged by provenance."""

    records: tuple[exposure.ChangeRecord, ...] = ()
    windows: tuple[exposure.Window, ...] = ()


def responder_of(services: Any) -> provenance.Responder:
    identity = getattr(services, "identity", None)
    return identity.responder() if identity is not None else provenance.Responder()


def read_history(services: Any, since: datetime, **query: Any) -> dict[str, History]:
    """Change history since `since` (one Resource Graph query a page), per registry key, with each window's close
    judged by provenance against the registry's intents (one Table query per registry whose history names the
    responder's identity: no other close can be ours). Intents that cannot be read make every close anyone's: a
    window recorded twice beats a window hidden."""
    from dlp.azure.graph import graph_for

    rows = [row for page in graph_for(services).changes(since, **query) for row in page.rows]
    responder = responder_of(services)
    found: dict[str, History] = {}
    for key, records in exposure.histories(rows).items():
        intents: list[Any] = []
        if any(responder.named(r.changed_by) for r in records):
            try:
                intents = services.state.remediations_since(records[0].registry_id, since - provenance.SKEW)
            except Exception as exc:
                log.warning("intents of %s unreadable (%s): its closes are recorded as anyone's",
                            records[0].registry_id, exc)
        closes = provenance.responder_closes(records, intents, responder)
        found[key] = History(tuple(records), exposure.registry_windows(records, closes))
    return found


def confirm_callers(services: Any, targets: Sequence[Target], budget_s: float = 10.0) -> list[Target]:
    """Targets whose claims came from a file or a dead-letter blob (anyone who can write the blob could forge them)
    stay unverified unless change history names the same caller for the same correlation ID (provenance.confirmed):
    one query for all their registries, within `budget_s` (none when that is under a second: enforcement comes first,
    and an unconfirmed caller is only shown as unverified). Never raises: history that cannot be read confirms
    nobody."""
    from dlp.azure.budget import Budget

    unverified = [t for t in targets if t.context.caller and not t.context.caller_verified]
    if not unverified or budget_s < 1.0:
        return list(targets)
    now = services.clock()
    times = [exposure.parse_time(t.context.event_time) for t in unverified]
    since = min([t for t in times if t is not None], default=now - timedelta(seconds=LOOKBACK_S))
    since = max(since - CONFIRM_MARGIN, now - RETENTION)
    try:
        with Budget.of(budget_s).active():
            found = read_history(services, since, registry_ids=sorted({t.registry_id for t in unverified}))
    except Exception as exc:
        log.warning("change history unreadable (%s): the callers of %d replayed event(s) stay unverified",
                    exc, len(unverified))
        return list(targets)
    def judged(target: Target) -> Target:
        records = found.get(registry_key(target.registry_id), History()).records
        if target in unverified and provenance.confirmed(target.context, records):
            return replace(target, context=replace(target.context, caller_verified=True))
        return target

    return [judged(target) for target in targets]


__all__ = ["LOOKBACK_S", "History", "confirm_callers", "read_history", "responder_of"]
