"""Resource Graph's `resourcechanges` table for the emulated registries.

Every ARM write the emulator applies (a PATCH over HTTP, the responder's included, or `ArmEmulator.write`
for a write by someone else in a test) appends one change row in Resource Graph's shape
(learn.microsoft.com/azure/governance/resource-graph/changes/get-resource-changes):

    {"id": "<target>/providers/Microsoft.Resources/changes/<changeId>", "name": "<changeId>",
     "type": "microsoft.resources/changes", "subscriptionId", "resourceGroup", "tenantId",
     "properties": {"targetResourceId", "targetResourceType", "changeType": "Update",
        "changeAttributes": {"previousResourceSnapshotId", "newResourceSnapshotId", "correlationId",
                             "changedByType", "changesCount", "clientType", "changedBy", "operation",
                             "timestamp"},
        "changes": {"properties.publicNetworkAccess": {"previousValue", "newValue", "changeCategory",
                                                       "propertyChangeType", "isTruncated"}}}}

Written in the forms real rows take (public samples of service output; see docs/architecture.md):

* the change ID is `<Int64.MaxValue - .NET ticks of the previous snapshot>_<guid>`, zero-padded to 20 digits, so a
  LATER change has a SMALLER ID; snapshot IDs are `<the same kind of number>_<guid>_<n>_<unix seconds>`;
* values are text, booleans "True" / "False"; an Insert's `previousValue` and a Remove's `newValue` are JSON null;
* timestamps carry 7 fraction digits and `Z` ("2026-11-30T12:00:00.1234567Z");
* `changedBy` is "Unspecified" on creates and deletes (changedByType "Unspecified" too); a platform change
  (`record_system`, e.g. a failed update rolled back) says "System" with an all-zero correlation ID;
* `location` is the registry's.

A row becomes visible `lag_s` after the write (Azure documents "less than five minutes"); tests set the lag
they need. `link_snapshots = False` makes each change start from a fresh snapshot ID, as unlinked real rows do.

Queries (no KQL is run) are recognised by `resourcechanges` in the text and filtered by
`targetResourceId in~ ('<id>', ...)` and `changeTime >= datetime(<iso>)` / `changeTime < datetime(<iso>)`
when present, and by the request's subscriptions; rows come oldest first.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from dlp.emulator.registries import split_registry_id
from dlp.ids import fold  # ARM compares IDs ignoring A-Z case only

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
_IDS = re.compile(r"targetResourceId\s+in~?\s*\(([^)]*)\)", re.IGNORECASE)
_SINCE = re.compile(r"changeTime\s*>=?\s*datetime\(([^)]+)\)", re.IGNORECASE)
_UNTIL = re.compile(r"changeTime\s*<=?\s*datetime\(([^)]+)\)", re.IGNORECASE)


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
        return
    if isinstance(value, str):
        out[prefix] = value
    elif value is None:
        return
    elif isinstance(value, bool):
        out[prefix] = "True" if value else "False"     # .NET's spelling, as Resource Graph writes it
    else:
        out[prefix] = json.dumps(value, separators=(",", ":"))


def property_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Resource Graph's `changes` object between two registry bodies (leaf paths of `properties`, `sku`, `tags`)."""
    old: dict[str, str] = {}
    new: dict[str, str] = {}
    for name in ("properties", "sku", "tags"):
        _flatten(before.get(name) or {}, name, old)
        _flatten(after.get(name) or {}, name, new)
    changes: dict[str, dict[str, Any]] = {}
    for path in sorted(set(old) | set(new)):
        if old.get(path) == new.get(path):
            continue
        entry: dict[str, Any] = {"changeCategory": "System" if path == "properties.provisioningState" else "User",
                                 "isTruncated": "false"}
        if path not in old:
            entry.update(propertyChangeType="Insert", previousValue=None, newValue=new[path])
        elif path not in new:
            entry.update(propertyChangeType="Remove", previousValue=old[path], newValue=None)
        else:
            entry.update(propertyChangeType="Update", previousValue=old[path], newValue=new[path])
        changes[path] = entry
    return changes


INT64_MAX = 2**63 - 1
NO_CORRELATION = "00000000-0000-0000-0000-000000000000"
_EPOCH_TICKS = 621355968000000000       # .NET ticks (100 ns since 0001-01-01) at 1970-01-01


def ticks(moment: datetime) -> int:
    delta = moment.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return _EPOCH_TICKS + (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def change_id(previous_snapshot_at: datetime) -> str:
    """`<Int64.MaxValue - ticks>_<guid>`: a later change has a smaller ID."""
    return f"{INT64_MAX - ticks(previous_snapshot_at):020d}_{uuid.uuid4()}"


def snapshot_id(at: datetime) -> str:
    return f"{INT64_MAX - ticks(at):020d}_{uuid.uuid4()}_{uuid.uuid4().int % 4_000_000_000}_{int(at.timestamp())}"


def _iso(moment: datetime) -> str:
    """7 fraction digits and Z, as Resource Graph writes `timestamp` (100 ns precision; ours has 1 µs)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class ChangeLog:
    """Change rows of every emulated write, visible after `lag_s`."""

    def __init__(self) -> None:
        self.lag_s = 0.0
        self.link_snapshots = True
        self._rows: list[tuple[float, datetime, dict[str, Any]]] = []     # (visible at, timestamp, row)
        self._snapshots: dict[str, tuple[str, datetime]] = {}   # target (lower-case) -> its latest snapshot, taken at
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()
            self._snapshots.clear()
        self.lag_s = 0.0
        self.link_snapshots = True

    def record_system(self, before: Mapping[str, Any], after: Mapping[str, Any], *, at: datetime | None = None
                      ) -> dict[str, Any] | None:
        """A platform change (a failed update rolled back, a property Azure sets): "System", no correlation."""
        return self.record(before, after, changed_by="System", client_type="Unspecified", operation="Unspecified",
                           correlation_id=NO_CORRELATION, at=at, changed_by_type="System")

    def record(self, before: Mapping[str, Any], after: Mapping[str, Any], *, changed_by: str,
               client_type: str = "Azure Portal", operation: str = "microsoft.containerregistry/registries/write",
               correlation_id: str = "", at: datetime | None = None, changed_by_type: str = "User",
               change_type: str = "Update") -> dict[str, Any] | None:
        """Append the row of one applied write; None when it changed nothing (ARM records no change then)."""
        changes = property_changes(before, after) if change_type == "Update" else {}
        if change_type == "Update" and not changes:
            return None
        if change_type in ("Create", "Delete"):         # Azure does not say who created or deleted
            changed_by = changed_by_type = client_type = "Unspecified"
        target = str(after.get("id") or before.get("id"))
        sub, rg, _ = split_registry_id(target)
        moment = at or datetime.now(timezone.utc)
        with self._lock:        # snapshots chain: each change starts from the previous change's new snapshot
            known = self._snapshots.get(fold(target))
            previous_snapshot, previous_at = known or (snapshot_id(moment), moment)
            if not self.link_snapshots:     # the ID still encodes when the previous snapshot was taken
                previous_snapshot = snapshot_id(previous_at)
            new_snapshot = snapshot_id(moment)
            self._snapshots[fold(target)] = (new_snapshot, moment)
        name = change_id(min(previous_at, moment))
        row = {
            "id": f"{target}/providers/Microsoft.Resources/changes/{name}", "name": name,
            "type": "microsoft.resources/changes", "tenantId": TENANT_ID, "kind": "",
            "location": str(after.get("location") or before.get("location") or "westeurope"),
            "resourceGroup": fold(rg), "subscriptionId": sub, "managedBy": "", "sku": None, "plan": None,
            "tags": None, "identity": None, "zones": None, "extendedLocation": None,
            "properties": {
                "targetResourceId": target, "targetResourceType": "microsoft.containerregistry/registries",
                "changeType": change_type,
                "changeAttributes": {
                    "previousResourceSnapshotId": previous_snapshot, "newResourceSnapshotId": new_snapshot,
                    "correlationId": correlation_id or str(uuid.uuid4()), "changedByType": changed_by_type,
                    "changesCount": len(changes), "clientType": client_type, "changedBy": changed_by,
                    "operation": operation, "timestamp": _iso(moment)},
                "changes": changes,
            },
        }
        with self._lock:
            self._rows.append((time.time() + self.lag_s, moment, row))
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Every row recorded so far, visible or not (for tests)."""
        with self._lock:
            return [row for _, _, row in self._rows]

    def matching(self, query: str, subscriptions: Iterable[str] | None) -> list[dict[str, Any]]:
        ids = {fold(v.strip().strip("'\"")) for m in _IDS.findall(query) for v in m.split(",") if v.strip()}
        since = _parse(_SINCE.search(query))
        until = _parse(_UNTIL.search(query))
        subs = {fold(s) for s in subscriptions} if subscriptions else None
        now = time.time()
        with self._lock:
            found = [(moment, row) for visible, moment, row in self._rows if visible <= now]
        out = []
        for moment, row in found:               # in the order applied (Resource Graph orders by the query's `order by`)
            target = fold(row["properties"]["targetResourceId"])
            if ids and target not in ids:
                continue
            if subs is not None and fold(row["subscriptionId"]) not in subs:
                continue
            if since is not None and moment < since:
                continue
            if until is not None and moment >= until:
                continue
            out.append({**row, "changeTime": row["properties"]["changeAttributes"]["timestamp"]})
        return out


def _parse(match: re.Match[str] | None) -> datetime | None:
    if match is None:
        return None
    text = match.group(1).strip().strip("'\"")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
