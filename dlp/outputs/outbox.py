"""A durable outbox in Azure Table storage: what could not be delivered now, kept until it is.

Why: a Log Analytics (or Teams, or email) outage must not erase the record of a remediation.
Event Grid's redelivery would re-evaluate a registry that is by then compliant, so whatever
failed to go out is written here before the invocation completes, and sent again later.

Any JSON value can be kept, under a *kind* (the PartitionKey: "findings", "findings-rejected",
"alerts", ...), so every component shares one table (`OUTBOX_TABLE` in the app's storage).
One entity per item:

  PartitionKey  kind
  RowKey        "<created UTC, sortable>|<key>|<random>"  (oldest first; the key is for people reading it)
  Key, Created, Attempts, LastError, Size (JSON bytes), Parts
  P0, P1, ...   the payload as gzip-compressed JSON, cut into binary properties

Table storage limits an entity to 1 MiB and a property to 64 KiB, so the compressed payload is
cut into 64 KiB parts and capped at `MAX_PAYLOAD_BYTES` (Azurite counts binary properties as
their base64 text, so 8 parts is what fits both); callers with more to keep split it first
(see `dlp.outputs.recording`). Delivery out of the outbox is at least once: two instances draining at
the same time may both send an item, so consumers de-duplicate (the findings carry
EvaluationId + RuleId for that).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dlp.azure.state import LazyTable
from dlp.settings import OUTBOX_TABLE

log = logging.getLogger("dlp.outbox")

PART_BYTES = 64 * 1024                  # Table storage's limit for one binary property
MAX_PARTS = 8
MAX_PAYLOAD_BYTES = PART_BYTES * MAX_PARTS
MAX_ERROR_CHARS = 1000                  # LastError is for people: the service's message, cut short
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
_KEY_UNSAFE = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")   # characters Table storage refuses in keys


class OutboxError(Exception):
    """The outbox could not be read or written (storage down, refused, misconfigured)."""


class PayloadTooLarge(ValueError):
    """The compressed payload does not fit one entity: split it before `put`."""


@dataclass(frozen=True)
class Item:
    """One kept payload. `row_key` is the storage handle that `remove`, `retry_later` and `move` use."""

    kind: str
    key: str
    payload: Any
    created: str          # ISO 8601 UTC
    attempts: int
    last_error: str
    row_key: str


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Outbox:
    """Items per kind in one Azure Table; every method is safe to call from several threads.

    `service` is an azure.data.tables TableServiceClient (the composition root's, which carries the
    budget-bounded retry policy). Storage failures surface as OutboxError.
    """

    def __init__(self, service: Any, table: str = OUTBOX_TABLE, *, clock: Callable[[], datetime] = _utcnow):
        self._client = LazyTable(service, table)
        self._clock = clock

    @property
    def table_name(self) -> str:
        return self._client.name

    # writing ------------------------------------------------------------------------------------
    def put(self, kind: str, key: str, payload: Any, *, error: str = "", attempts: int = 0) -> Item:
        """Keep `payload` (any JSON value) under `kind`. Raises OutboxError if storage did not take it,
        PayloadTooLarge if it cannot fit one entity. Two puts with the same key keep two items."""
        _check_kind(kind)
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        packed = gzip.compress(data, mtime=0)
        if len(packed) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(f"{len(packed)} compressed bytes > {MAX_PAYLOAD_BYTES}: split the payload")
        created = self._clock().astimezone(timezone.utc)
        row_key = f"{created.strftime('%Y%m%dT%H%M%S%fZ')}|{_safe_key(key)}|{uuid.uuid4().hex[:8]}"
        parts = [packed[i:i + PART_BYTES] for i in range(0, len(packed), PART_BYTES)] or [b""]
        entity: dict[str, Any] = {
            "PartitionKey": kind, "RowKey": row_key, "Key": key[:1024], "Created": created.isoformat(),
            "Attempts": attempts, "LastError": error[:MAX_ERROR_CHARS], "Size": len(data), "Parts": len(parts),
        }
        entity.update({f"P{i}": part for i, part in enumerate(parts)})
        self._call("keep an item", lambda table: table.create_entity(entity))
        return Item(kind, key, payload, created.isoformat(), attempts, error[:MAX_ERROR_CHARS], row_key)

    def remove(self, item: Item) -> None:
        """Forget a delivered item. Already gone (another instance sent it) is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        def delete(table: Any) -> None:
            try:
                table.delete_entity(item.kind, item.row_key)
            except ResourceNotFoundError:
                pass

        self._call("remove an item", delete)

    def retry_later(self, item: Item, error: str) -> Item:
        """Count a failed attempt and keep the reason, for whoever inspects the table."""
        from azure.data.tables import UpdateMode

        attempts = item.attempts + 1
        patch = {"PartitionKey": item.kind, "RowKey": item.row_key, "Attempts": attempts,
                 "LastError": error[:MAX_ERROR_CHARS]}
        self._call("update an item", lambda table: table.update_entity(patch, mode=UpdateMode.MERGE))
        return Item(item.kind, item.key, item.payload, item.created, attempts, error[:MAX_ERROR_CHARS], item.row_key)

    def move(self, item: Item, kind: str, error: str = "") -> Item:
        """Put the item under another kind (e.g. out of the retry path into "findings-rejected").
        Written before it is removed, so a failure in between leaves a copy, never nothing."""
        moved = self.put(kind, item.key, item.payload, error=error or item.last_error, attempts=item.attempts + 1)
        self.remove(item)
        return moved

    # reading ------------------------------------------------------------------------------------
    def pending(self, kind: str, limit: int = 100) -> list[Item]:
        """Up to `limit` items of `kind`, oldest first. An entity that cannot be decoded is reported and
        left in place (never dropped)."""
        _check_kind(kind)

        def query(table: Any) -> list[Item]:
            items: list[Item] = []
            entities = table.query_entities("PartitionKey eq @kind", parameters={"kind": kind},
                                            results_per_page=min(max(limit, 1), 1000))
            for entity in entities:
                item = _decode(kind, entity)
                if item is not None:
                    items.append(item)
                if len(items) >= limit:
                    break
            return items

        return self._call("read items", query)

    def count(self, kind: str) -> int:
        """How many items of `kind` are kept (reads keys only; for health checks and tests)."""
        _check_kind(kind)
        return self._call("count items", lambda table: sum(
            1 for _ in table.query_entities("PartitionKey eq @kind", parameters={"kind": kind}, select=["RowKey"])))

    def _call(self, what: str, action: Callable[[Any], Any]) -> Any:
        from azure.core.exceptions import AzureError

        from dlp.azure.budget import BudgetExhausted
        from dlp.azure.errors import classify

        try:
            return action(self._client())
        except (AzureError, BudgetExhausted, OSError) as exc:
            raise OutboxError(f"could not {what} in table {self._client.name}: {classify(exc)}") from exc


def _check_kind(kind: str) -> None:
    if not _KIND.match(kind):
        raise ValueError(f"outbox kind must be letters, digits and dashes (1-63), not {kind!r}")


def _safe_key(key: str) -> str:
    return _KEY_UNSAFE.sub("_", key)[:200]


def _decode(kind: str, entity: Any) -> Item | None:
    row_key = str(entity.get("RowKey", ""))
    try:
        parts = int(entity.get("Parts") or 0)
        packed = b"".join(bytes(entity[f"P{i}"]) for i in range(parts))
        payload = json.loads(gzip.decompress(packed).decode("utf-8"))
    except (KeyError, TypeError, ValueError, OSError, EOFError) as exc:
        log.error("outbox item %s/%s cannot be decoded (%s); left in the table for inspection", kind, row_key,
                  type(exc).__name__)
        return None
    return Item(kind, str(entity.get("Key", "")), payload, str(entity.get("Created", "")),
                int(entity.get("Attempts") or 0), str(entity.get("LastError", "")), row_key)


__all__ = ["MAX_PAYLOAD_BYTES", "Item", "Outbox", "OutboxError", "PayloadTooLarge"]
