"""Where the delayed pull looks of exposure windows keep their state (dlp/responder/impact.py).

One row per window with looks to come, in the state table (`dlpstate`), the registry's partition:
  RowKey "impact|<evaluation ID>"
  Payload parts P0.. (gzip JSON, fixed at creation): the window and the rows recorded for it, so a later look
                     re-records exactly those rows with the pull columns filled in
  Told       (JSON) what alerts have said of the pulls: count, callers, artifacts (dlp.domain.pulls.Picture)
  Recorded   (JSON) the Pulls last recorded (a look that finds the same records nothing)
  Looks      (JSON) look numbers done; Owner + ClaimedAt: the look being worked on (ETag-guarded)
Partition "registry-logs", RowKey "status": the workspace's last query error (GET /api/health).

`MemoryImpacts` is the same contract in one process (CLI, demo, storage not configured).
"""

from __future__ import annotations

import copy
import gzip
import json
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from dlp.azure.state import LazyTable, partition_of
from dlp.settings import STATE_TABLE

PREFIX = "impact|"
STATUS_PARTITION, STATUS_ROW = "registry-logs", "status"
PART_BYTES = 64 * 1024
MAX_PARTS = 8


@dataclass(frozen=True)
class Impact:
    registry_id: str
    evaluation_id: str
    payload: dict[str, Any]                       # {"window": {...}, "rows": [...]}: fixed at creation
    told: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, Any] = field(default_factory=dict)
    looks: tuple[int, ...] = ()
    owner: str = ""
    claimed_at: str = ""
    etag: str | None = None


def _pack(payload: dict[str, Any]) -> list[bytes]:
    data = gzip.compress(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), mtime=0)
    parts = [data[i:i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"impact payload of {len(data)} compressed bytes does not fit one entity")
    return parts


def _entity(impact: Impact, *, with_payload: bool) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": partition_of(impact.registry_id), "RowKey": PREFIX + impact.evaluation_id,
        "RegistryId": impact.registry_id[:1024], "Told": json.dumps(impact.told), "Recorded": json.dumps(impact.recorded),
        "Looks": json.dumps(list(impact.looks)), "Owner": impact.owner[:128], "ClaimedAt": impact.claimed_at}
    if with_payload:
        parts = _pack(impact.payload)
        entity["Parts"] = len(parts)
        entity.update({f"P{i}": part for i, part in enumerate(parts)})
    return entity


def _json(text: Any, default: Any) -> Any:
    try:
        value = json.loads(text) if isinstance(text, str) and text else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _from_entity(entity: Any) -> Impact:
    parts = int(entity.get("Parts") or 0)
    payload = json.loads(gzip.decompress(b"".join(bytes(entity[f"P{i}"]) for i in range(parts))).decode("utf-8"))
    return Impact(str(entity.get("RegistryId", "")), str(entity["RowKey"])[len(PREFIX):], payload,
                  _json(entity.get("Told"), {}), _json(entity.get("Recorded"), {}),
                  tuple(int(n) for n in _json(entity.get("Looks"), []) if isinstance(n, int)),
                  str(entity.get("Owner") or ""), str(entity.get("ClaimedAt") or ""), entity.metadata.get("etag"))


class MemoryImpacts:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[int, Impact]] = {}
        self._status: dict[str, Any] = {}
        self._guard = threading.Lock()

    def create(self, impact: Impact) -> bool:
        _pack(impact.payload)               # the same size limit as the table
        key = (partition_of(impact.registry_id), impact.evaluation_id)
        with self._guard:
            if key in self._rows:
                return False
            self._rows[key] = (1, replace(impact, etag="1"))
            return True

    def get(self, registry_id: str, evaluation_id: str) -> Impact | None:
        with self._guard:
            found = self._rows.get((partition_of(registry_id), evaluation_id))
        return copy.deepcopy(found[1]) if found else None

    def replace(self, impact: Impact) -> Impact | None:
        """Write the mutable fields if nobody else did since `impact` was read; None when someone did."""
        key = (partition_of(impact.registry_id), impact.evaluation_id)
        with self._guard:
            found = self._rows.get(key)
            if found is None or str(found[0]) != impact.etag:
                return None
            version = found[0] + 1
            stored = replace(impact, payload=found[1].payload, etag=str(version))
            self._rows[key] = (version, stored)
            return copy.deepcopy(stored)

    def query_status(self) -> dict[str, Any]:
        with self._guard:
            return dict(self._status)

    def set_query_status(self, status: dict[str, Any]) -> None:
        with self._guard:
            self._status = dict(status)


class TableImpacts:
    """The same in Azure Table storage (ETags guard every update)."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._client = LazyTable(service, table)

    def create(self, impact: Impact) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._client().create_entity(_entity(impact, with_payload=True))
        except ResourceExistsError:
            return False
        return True

    def get(self, registry_id: str, evaluation_id: str) -> Impact | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client().get_entity(partition_of(registry_id), PREFIX + evaluation_id)
        except ResourceNotFoundError:
            return None
        return _from_entity(entity)

    def replace(self, impact: Impact) -> Impact | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            meta = self._client().update_entity(_entity(impact, with_payload=False), mode=UpdateMode.MERGE,
                                                etag=impact.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return replace(impact, etag=meta.get("etag"))

    def query_status(self) -> dict[str, Any]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client().get_entity(STATUS_PARTITION, STATUS_ROW)
        except ResourceNotFoundError:
            return {}
        return _json(entity.get("Status"), {})

    def set_query_status(self, status: dict[str, Any]) -> None:
        self._client().upsert_entity({"PartitionKey": STATUS_PARTITION, "RowKey": STATUS_ROW,
                                      "Status": json.dumps(status)[:4000]})


__all__ = ["Impact", "MemoryImpacts", "TableImpacts"]
