"""The state store's contract inside one process (CLI `scan --remediate`, demo, storage not configured).

The same methods and answers as dlp.azure.state.TableState, with no storage behind them: nothing is shared across
instances, so leases, breaker counts and claims hold for this process only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from dlp.azure.state import BREAKER_WINDOW, Lease, LocalLocks, claim_stale, partition_of, remediation_row
from dlp.domain.intent import PENDING, Intent


class MemoryState:
    """Single-process state (CLI `scan --remediate`, demo). Not shared across instances."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Intent]] = {}
        self._ids: dict[str, str] = {}
        self._released: dict[str, float] = {}
        self._rechecks: set[tuple[str, str]] = set()
        self._locks = LocalLocks()
        self._guard = threading.Lock()
        self._windows: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._cursor = ""

    def recent_remediations(self, registry_id: str, now: datetime) -> list[Intent]:
        return self.remediations_since(registry_id, now - BREAKER_WINDOW)

    def remediations_since(self, registry_id: str, since: datetime) -> list[Intent]:
        cutoff = since.isoformat()
        with self._guard:
            return [r for r in self._rows.get(partition_of(registry_id), []) if r.when >= cutoff]

    def record_remediation(self, registry_id: str, record: Intent) -> str:
        row = remediation_row(record)
        with self._guard:
            self._rows.setdefault(partition_of(registry_id), []).append(replace(record, row_key=row))
            self._ids[partition_of(registry_id)] = registry_id
        return row

    def pending_intents(self, registry_id: str) -> list[Intent]:
        with self._guard:
            return [r for r in self._rows.get(partition_of(registry_id), []) if r.status == PENDING]

    def resolve_intent(self, registry_id: str, row_key: str, status: str) -> None:
        key = partition_of(registry_id)
        with self._guard:
            self._rows[key] = [replace(r, status=status) if r.row_key == row_key else r for r in self._rows.get(key, [])]

    def orphan_intent(self, registry_id: str, row_key: str) -> None:
        self._update(registry_id, row_key, until=min(time.time(), self._until(registry_id, row_key)))

    def mark_own_event(self, registry_id: str, intent: Intent, event_id: str) -> bool:
        """Use the intent's one-shot own-write skip for `event_id`: False when another event used it."""
        key = partition_of(registry_id)
        with self._guard:
            for index, row in enumerate(self._rows.get(key, [])):
                if row.row_key == intent.row_key:
                    if row.own_event and row.own_event != event_id:
                        return False
                    self._rows[key][index] = replace(row, own_event=event_id)
                    return True
        return False

    def _until(self, registry_id: str, row_key: str) -> float:
        with self._guard:
            return next((r.until for r in self._rows.get(partition_of(registry_id), []) if r.row_key == row_key),
                        time.time())

    def _update(self, registry_id: str, row_key: str, **changes: Any) -> None:
        key = partition_of(registry_id)
        with self._guard:
            self._rows[key] = [replace(r, **changes) if r.row_key == row_key else r for r in self._rows.get(key, [])]

    def orphaned_intents(self, now: float, limit: int) -> list[tuple[str, Intent]]:
        with self._guard:
            found = [(self._ids[key], r) for key, rows in self._rows.items() for r in rows
                     if r.status == PENDING and r.until < now]
        return sorted(found, key=lambda pair: pair[1].looked_at)[:limit]

    def note_look(self, registry_id: str, row_key: str, at: float) -> None:
        self._update(registry_id, row_key, looked_at=at)

    def acquire(self, registry_id: str, *, ttl_s: float, wait_s: float) -> Lease | None:
        lock = self._locks.get(partition_of(registry_id))
        if lock.acquire(blocking=False):
            return Lease(registry_id, "memory")
        return Lease(registry_id, "memory", waited=True) if lock.acquire(timeout=max(0.0, wait_s)) else None

    def release(self, lease: Lease) -> None:
        self._locks.get(partition_of(lease.registry_id)).release()

    def extend(self, lease: Lease, *, ttl_s: float) -> Lease | None:
        return lease            # one process: the lock does not expire

    def recheck_scheduled(self, registry_id: str, when: str) -> bool:
        with self._guard:
            return (partition_of(registry_id), when) in self._rechecks

    def mark_recheck(self, registry_id: str, when: str) -> None:
        with self._guard:
            self._rechecks.add((partition_of(registry_id), when))

    def claim_exposure(self, registry_id: str, key: str, owner: str, now: datetime) -> bool:
        """True when this owner may record the window: nobody did, the same owner is retrying, or a claim
        went stale. False once it is recorded or another owner is recording it now."""
        row = (partition_of(registry_id), key)
        with self._guard:
            found = self._windows.get(row)
            if found is not None and (found[0] == "done" or (found[1] != owner
                                                             and not claim_stale(found[2], now))):
                return False
            self._windows[row] = ("claimed", owner, now.isoformat())
            return True

    def finish_exposure(self, registry_id: str, key: str) -> None:
        with self._guard:
            self._windows[(partition_of(registry_id), key)] = ("done", "", "")

    def exposure_cursor(self) -> str:
        return self._cursor

    def set_exposure_cursor(self, value: str) -> None:
        self._cursor = value


__all__ = ["MemoryState"]
