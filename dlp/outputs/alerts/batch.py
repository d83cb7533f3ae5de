"""One message for one channel, as sent and as kept in the outbox; and an in-memory outbox.

The outbox payload is the alerts themselves (not the rendered card or mail), so a retry
renders exactly what the first attempt would have, and the email operation id, derived
from the alert ids, is the same on every attempt.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from dlp.outputs.alerts.alert import Alert

_NAMESPACE = uuid.UUID("a7f4f0de-2b7c-4a8e-8f53-3f5c9d0e6a21")


@dataclass(frozen=True)
class Batch:
    channel: str
    alerts: tuple[Alert, ...]
    digest: bool
    note: str = ""                    # a grouped digest: whose burst, when (dlp/outputs/alerts/digests.py)
    folded: tuple[str, ...] = ()      # ids of the alerts summed up rather than listed (over a cap)

    @property
    def key(self) -> str:
        """Stable name for logs and the outbox: the alert id, or a UUID derived from all of them."""
        ids = sorted(a.alert_id for a in self.alerts)
        return f"{self.channel}|{ids[0] if len(ids) == 1 else uuid.uuid5(_NAMESPACE, ','.join(ids))}"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"channel": self.channel, "digest": self.digest,
                                "alerts": [a.to_json() for a in self.alerts]}
        if self.note:
            body["note"] = self.note
        if self.folded:
            body["folded"] = list(self.folded)
        return body

    @classmethod
    def from_json(cls, body: Any) -> Batch:
        """Raises KeyError / TypeError / ValueError for a payload that is not a batch."""
        alerts = tuple(Alert.from_json(a) for a in body["alerts"])
        if not alerts:
            raise ValueError("a batch without alerts")
        return cls(str(body["channel"]), alerts, bool(body.get("digest")), str(body.get("note") or ""),
                   tuple(str(i) for i in body.get("folded") or ()))


@dataclass(frozen=True)
class KeptItem:
    """Shaped like dlp.outputs.outbox.Item, so the notifier handles both outboxes alike."""

    kind: str
    key: str
    payload: Any
    created: str
    attempts: int
    last_error: str
    row_key: str


class MemoryOutbox:
    """dlp.outputs.outbox.Outbox's contract kept in this process only (no storage configured: CLI, demo)."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def put(self, kind: str, key: str, payload: Any, *, error: str = "", attempts: int = 0) -> Any:
        item = KeptItem(kind, key, payload, datetime.now(timezone.utc).isoformat(), attempts, error, uuid.uuid4().hex)
        with self._lock:
            self._items.append(item)
        return item

    def pending(self, kind: str, limit: int = 100) -> list[Any]:
        with self._lock:
            return [i for i in self._items if i.kind == kind][:limit]

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(1 for i in self._items if i.kind == kind)

    def remove(self, item: Any) -> None:
        with self._lock:
            self._items = [i for i in self._items if i.row_key != item.row_key]

    def retry_later(self, item: Any, error: str) -> Any:
        updated = replace(item, attempts=item.attempts + 1, last_error=error)
        with self._lock:
            self._items = [updated if i.row_key == item.row_key else i for i in self._items]
        return updated

    def move(self, item: Any, kind: str, error: str = "") -> Any:
        moved = self.put(kind, item.key, item.payload, error=error or item.last_error, attempts=item.attempts + 1)
        self.remove(item)
        return moved
