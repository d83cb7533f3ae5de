"""The alert store's contract inside one process (no storage configured: the CLI, the demo, benchmarks of it).

Same semantics as dlp/outputs/alerts/store.py's TableAlertStore, ETags included, so the notifier cannot tell them
apart; it de-duplicates per instance only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from dlp.azure.state import partition_of
from dlp.outputs.alerts.kept import (
    OPS_PARTITION,
    Group,
    Hold,
    Kept,
    fair_order,
    group_partition,
    kept_row_key,
    notice_id,
)
from dlp.outputs.alerts.states import Stored


def _created() -> str:
    return datetime.now(timezone.utc).isoformat()


class MemoryAlertStore:
    """Alert rows, kept copies and group rows in dictionaries, behind one lock."""

    def __init__(self) -> None:
        self._rows: dict[str, Stored] = {}
        self._kept: dict[tuple[str, str], Kept] = {}
        self._groups: dict[str, Group] = {}
        self._markers: set[str] = set()
        self._version = 0
        self._lock = threading.Lock()

    def _tag(self) -> str:
        self._version += 1
        return str(self._version)

    # alert rows --------------------------------------------------------------------------------------------
    def get(self, registry_id: str) -> Stored | None:
        with self._lock:
            return self._rows.get(partition_of(registry_id))

    def get_all(self) -> dict[str, Stored]:
        with self._lock:
            return dict(self._rows)

    def commit(self, registry_id: str, previous: Stored | None, new: Stored, keep: Sequence[tuple[str, Any]] = (),
               *, owner: str = "", claim_until: float = 0.0, hold: Hold | None = None) -> Stored | None:
        key = partition_of(registry_id)
        with self._lock:
            current = self._rows.get(key)
            if (current.etag if current else None) != (previous.etag if previous else None):
                return None
            etags = []
            for channel, payload in keep:
                row = kept_row_key(new.alert_id, channel)
                etags.append(self._tag())
                self._kept[(key, row)] = Kept(
                    key, row, channel, payload, claimed_until=0.0 if hold else claim_until, owner=owner,
                    etag=etags[-1], held=hold is not None, hold_until=hold.until if hold else 0.0,
                    group=hold.group if hold else "", folded=bool(hold and hold.folded), created=_created())
            stored = Stored(new.state, new.signature, new.alert_id, new.since, self._tag(),
                            new.alert_id if keep and hold is None else "", tuple(etags), new.tally)
            self._rows[key] = stored
            return stored

    def settle(self, registry_id: str, stored: Stored) -> None:
        key = partition_of(registry_id)
        with self._lock:
            current = self._rows.get(key)
            if current is not None and current.etag == stored.etag and current.unsent:
                self._rows[key] = replace(current, unsent="", etag=self._tag())

    # kept copies -------------------------------------------------------------------------------------------
    def kept(self, registry_id: str) -> list[Kept]:
        key = partition_of(registry_id)
        with self._lock:
            return [k for (p, _), k in sorted(self._kept.items()) if p == key and not k.dead]

    def backlog(self, limit: int, now: float) -> list[Kept]:
        with self._lock:
            rows = [k for k in self._kept.values() if not k.dead and not k.held and k.claimed_until <= now]
        return fair_order(rows, limit)

    def undeliverable(self) -> int:
        with self._lock:
            return sum(1 for k in self._kept.values() if k.dead)

    def claim(self, kept: Kept, owner: str, until: float) -> Kept | None:
        return self._swap(kept, lambda k: replace(k, owner=owner, claimed_until=until))

    def failed(self, kept: Kept, error: str, *, dead: bool, notices: Sequence[tuple[str, Any]] = ()) -> Kept | None:
        updated = self._swap(kept, lambda k: replace(k, attempts=k.attempts + 1, last_error=error, claimed_until=0.0,
                                                     dead=dead))
        if updated is not None:
            with self._lock:
                for channel, payload in notices:
                    row = kept_row_key(notice_id(kept), channel)
                    self._kept[(kept.partition, row)] = Kept(kept.partition, row, channel, payload, etag=self._tag(),
                                                             created=_created())
        return updated

    def delivered(self, kept: Kept) -> None:
        with self._lock:
            self._kept.pop((kept.partition, kept.row_key), None)

    def announce(self, marker: str, notices: Sequence[tuple[str, Any]]) -> bool:
        with self._lock:
            if (OPS_PARTITION, marker) in self._kept or marker in self._markers:
                return False
            self._markers.add(marker)
            for channel, payload in notices:
                row = kept_row_key(marker.replace("|", "-"), channel)
                self._kept[(OPS_PARTITION, row)] = Kept(OPS_PARTITION, row, channel, payload, etag=self._tag(),
                                                        created=_created())
            return True

    def _swap(self, kept: Kept, change: Any) -> Kept | None:
        with self._lock:
            current = self._kept.get((kept.partition, kept.row_key))
            if current is None or current.etag != kept.etag:
                return None
            updated = replace(change(current), etag=self._tag())
            self._kept[(kept.partition, kept.row_key)] = updated
            return updated

    # groups and their digests (by the group's partition) ---------------------------------------------------
    def group(self, key: str) -> Group | None:
        return self.group_at(group_partition(key))

    def group_at(self, partition: str) -> Group | None:
        with self._lock:
            return self._groups.get(partition)

    def save_group(self, previous: Group | None, new: Group) -> Group | None:
        with self._lock:
            current = self._groups.get(new.partition)
            if (current.etag if current else None) != (previous.etag if previous else None):
                return None
            saved = replace(new, flush_owner=current.flush_owner if current else "",
                            flush_until=current.flush_until if current else 0.0, etag=self._tag())
            self._groups[new.partition] = saved
            return saved

    def lock_group(self, group: Group, owner: str, until: float) -> Group | None:
        with self._lock:
            current = self._groups.get(group.partition)
            if current is None or current.etag != group.etag:
                return None
            locked = replace(current, flush_owner=owner, flush_until=until, etag=self._tag())
            self._groups[group.partition] = locked
            return locked

    def due_groups(self, now: float) -> list[str]:
        with self._lock:
            rows = sorted((k for k in self._kept.values() if k.held and not k.dead and k.hold_until <= now),
                          key=lambda k: k.hold_until)
        return list(dict.fromkeys(k.group for k in rows))

    def held(self, partition: str) -> list[Kept]:
        with self._lock:
            return [k for k in self._kept.values() if k.held and not k.dead and k.group == partition]

    def digests(self, partition: str) -> list[Kept]:
        with self._lock:
            return [k for (p, _), k in sorted(self._kept.items()) if p == partition and k.is_digest]

    def commit_digest(self, group: Group, rows: Sequence[tuple[str, str, Any, tuple[tuple[str, str], ...]]],
                      owner: str, claim_until: float) -> list[Kept] | None:
        """Keep the digest copies (row key, channel, payload, members) and free the group's lock, together."""
        with self._lock:
            current = self._groups.get(group.partition)
            if current is None or current.etag != group.etag:
                return None
            self._groups[group.partition] = replace(current, flush_owner="", flush_until=0.0, etag=self._tag())
            made = []
            for row_key, channel, payload, members in rows:
                kept = Kept(group.partition, row_key, channel, payload, claimed_until=claim_until, owner=owner,
                            etag=self._tag(), members=members, created=_created())
                self._kept[(group.partition, row_key)] = kept
                made.append(kept)
            return made


__all__ = ["MemoryAlertStore"]
