"""Which registries the responder knows in each resource group: what the sweep listed last, and which have state.

Why (issue 22): a registry that leaves the monitored scope (moved away, deleted with its resource group, or simply no
longer listed) must be alerted, and a resource-group event (`moveResources`, a resource-group delete) names only the
resource group. So the sweep remembers the registries it listed in scope, one row per resource group in the state
table (PartitionKey "inventory", RowKey the folded resource-group ID with '|' for '/', the names in `Names0..n`);
and every registry that ever alerted has an alert row (dlp/outputs/alerts/store.py) whose partition key begins with
its resource group's, so one range query finds those too.

A registry created after the last sweep that never alerted is in neither: if it leaves before the next sweep,
nobody knew it was there (docs/operations.md says so).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from dlp.azure.state import LazyTable, partition_of
from dlp.ids import key
from dlp.settings import STATE_TABLE

PARTITION = "inventory"
ALERT_ROW = "alert"               # dlp.outputs.alerts.kept.ALERT_ROW (the azure layer cannot import outputs)
REGISTRIES = "/providers/Microsoft.ContainerRegistry/registries/"
CHUNK_CHARS = 30_000               # a string property holds 32 K characters
MAX_CHUNKS = 30                    # ~60,000 names of one resource group in one row (an entity holds 1 MiB)


def group_key(resource_group_id: str) -> str:
    """The row key of a resource group: its folded ID, '|' for '/' (Table keys refuse '/')."""
    return key(resource_group_id).replace("/", "|")


def group_of(registry_id: str) -> str:
    """The resource-group ID of a registry ID (its first four segments, as written)."""
    return "/".join(registry_id.split("/")[:5])


def registry_in(resource_group_id: str, name: str) -> str:
    return resource_group_id.rstrip("/") + REGISTRIES + name


class MemoryInventory:
    """The same contract in one process (no storage): the sweep's memory only."""

    def __init__(self) -> None:
        self._groups: dict[str, tuple[str, list[str]]] = {}
        self._lock = threading.Lock()

    def listed(self) -> dict[str, tuple[str, list[str]]]:
        with self._lock:
            return {k: (rg, list(names)) for k, (rg, names) in self._groups.items()}

    def save(self, resource_group_id: str, names: Sequence[str]) -> None:
        with self._lock:
            if names:
                self._groups[group_key(resource_group_id)] = (resource_group_id, sorted(set(names)))
            else:
                self._groups.pop(group_key(resource_group_id), None)

    def forget(self, registry_ids: Iterable[str]) -> None:
        for registry_id in registry_ids:
            rg = group_of(registry_id)
            with self._lock:
                found = self._groups.get(group_key(rg))
                if found:
                    name = key(registry_id.rsplit("/", 1)[-1])
                    self._groups[group_key(rg)] = (found[0], [n for n in found[1] if key(n) != name])

    def known_in(self, resource_group_id: str) -> list[tuple[str, str]]:
        with self._lock:
            found = self._groups.get(group_key(resource_group_id))
        return [(registry_in(found[0], name), "") for name in found[1]] if found else []


class TableInventory:
    """Inventory rows in the state table; `service` is the composition root's TableServiceClient."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._client = LazyTable(service, table)

    def listed(self) -> dict[str, tuple[str, list[str]]]:
        """Every remembered resource group: its key -> (ID as listed, registry names). One partition query."""
        rows = self._client().query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})
        return {str(row["RowKey"]): (str(row.get("ResourceGroup") or ""), _names(row)) for row in rows}

    def save(self, resource_group_id: str, names: Sequence[str]) -> None:
        """Replace what is remembered of one resource group (the row goes when no name is left)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        row_key = group_key(resource_group_id)
        if not names:
            try:
                self._client().delete_entity(PARTITION, row_key)
            except ResourceNotFoundError:
                pass
            return
        text = "\n".join(sorted(set(names)))
        chunks = [text[i:i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)][:MAX_CHUNKS]
        entity = {"PartitionKey": PARTITION, "RowKey": row_key, "ResourceGroup": resource_group_id[:1024],
                  "Chunks": len(chunks), "Updated": datetime.now(timezone.utc).isoformat(),
                  **{f"Names{i}": chunk for i, chunk in enumerate(chunks)}}
        self._client().upsert_entity(entity, mode=UpdateMode.REPLACE)

    def forget(self, registry_ids: Iterable[str]) -> None:
        """Drop registries that left (read, filter, write back: only the sweep and scope checks write here)."""
        from azure.core.exceptions import ResourceNotFoundError

        by_group: dict[str, set[str]] = {}
        for registry_id in registry_ids:
            by_group.setdefault(group_of(registry_id), set()).add(key(registry_id.rsplit("/", 1)[-1]))
        for resource_group_id, gone in by_group.items():
            try:
                row = self._client().get_entity(PARTITION, group_key(resource_group_id))
            except ResourceNotFoundError:
                continue
            names = _names(row)
            kept = [n for n in names if key(n) not in gone]
            if len(kept) != len(names):
                self.save(str(row.get("ResourceGroup") or resource_group_id), kept)

    def known_in(self, resource_group_id: str) -> list[tuple[str, str]]:
        """(registry ID, alert state or "") of every registry remembered in the resource group or with an alert row
        there: the sweep's row, then one range query over the alert rows' partition keys."""
        from azure.core.exceptions import ResourceNotFoundError

        found: dict[str, tuple[str, str]] = {}
        try:
            row = self._client().get_entity(PARTITION, group_key(resource_group_id))
            for name in _names(row):
                registry_id = registry_in(str(row.get("ResourceGroup") or resource_group_id), name)
                found[key(registry_id)] = (registry_id, "")
        except ResourceNotFoundError:
            pass
        low = partition_of(resource_group_id.rstrip("/") + REGISTRIES)
        rows = self._client().query_entities(
            "PartitionKey ge @low and PartitionKey lt @high and RowKey eq @row",
            parameters={"low": low, "high": low[:-1] + chr(ord(low[-1]) + 1), "row": ALERT_ROW},
            select=["RegistryId", "State"])
        for entity in rows:
            registry_id = str(entity.get("RegistryId") or "")
            if registry_id:
                found[key(registry_id)] = (registry_id, str(entity.get("State") or ""))
        return list(found.values())


def _names(row: Any) -> list[str]:
    chunks = int(row.get("Chunks") or 0)
    text = "".join(str(row.get(f"Names{i}") or "") for i in range(chunks))
    return [name for name in text.split("\n") if name]


__all__ = ["MemoryInventory", "TableInventory", "group_key", "group_of", "registry_in"]
