"""Where each registry's alert state lives, so every instance agrees on what was already said.

Azure Table storage, the same table as the breaker and leases (`dlpstate`), one row per
registry: PartitionKey `partition_of(registry_id)`, RowKey "alert". A transition is committed
with the row's ETag (`IfNotModified`, or create-if-absent), so when two invocations see the
same change at once exactly one commit succeeds and only that one sends the alert.

Reads: one point read per registry for an event, or one query for every "alert" row when
many registries are evaluated at once (the sweep): registries that never left compliant have
no row at all, so they cost nothing beyond that single query. A deleted registry keeps a
"gone" row (a tombstone written with the same ETag check) rather than a deleted one: a
delete of a missing row succeeds silently in the SDK, so it could not tell two instances
apart, and the final notice must go out once.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Protocol

from dlp.alerts.states import Stored
from dlp.azure.state import LazyTable, partition_of
from dlp.settings import STATE_TABLE

ALERT_ROW = "alert"


class AlertStore(Protocol):
    def get(self, registry_id: str) -> Stored | None: ...
    def get_all(self) -> dict[str, Stored]: ...
    def commit(self, registry_id: str, previous: Stored | None, new: Stored) -> Stored | None: ...


class MemoryAlertStore:
    """The same contract inside one process (no storage configured): de-duplicates per instance only."""

    def __init__(self) -> None:
        self._rows: dict[str, Stored] = {}
        self._version = 0
        self._lock = threading.Lock()

    def get(self, registry_id: str) -> Stored | None:
        with self._lock:
            return self._rows.get(partition_of(registry_id))

    def get_all(self) -> dict[str, Stored]:
        with self._lock:
            return dict(self._rows)

    def commit(self, registry_id: str, previous: Stored | None, new: Stored) -> Stored | None:
        key = partition_of(registry_id)
        with self._lock:
            current = self._rows.get(key)
            if (current.etag if current else None) != (previous.etag if previous else None):
                return None
            self._version += 1
            stored = Stored(new.state, new.signature, new.alert_id, new.since, str(self._version))
            self._rows[key] = stored
            return stored


class TableAlertStore:
    """Alert rows in Azure Table storage; `service` is the composition root's TableServiceClient."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._client = LazyTable(service, table)

    @staticmethod
    def _stored(entity: Any) -> Stored:
        return Stored(str(entity.get("State", "")), str(entity.get("Signature", "")), str(entity.get("AlertId", "")),
                      str(entity.get("Since", "")), entity.metadata.get("etag"))

    def get(self, registry_id: str) -> Stored | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._stored(self._client().get_entity(partition_of(registry_id), ALERT_ROW))
        except ResourceNotFoundError:
            return None

    def get_all(self) -> dict[str, Stored]:
        """Every registry's alert row in one query (paged by the service, 1,000 rows a page)."""
        rows = self._client().query_entities("RowKey eq @row", parameters={"row": ALERT_ROW},
                                             select=["PartitionKey", "State", "Signature", "AlertId", "Since"])
        return {str(entity["PartitionKey"]): self._stored(entity) for entity in rows}

    def commit(self, registry_id: str, previous: Stored | None, new: Stored) -> Stored | None:
        """Write `new` only if the row is still `previous`; the committed value, or None when another won."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": partition_of(registry_id), "RowKey": ALERT_ROW, "State": new.state,
                  "Signature": new.signature, "AlertId": new.alert_id, "Since": new.since,
                  "RegistryId": registry_id[:1024], "Updated": datetime.now(timezone.utc).isoformat()}
        table = self._client()
        try:
            if previous is None or previous.etag is None:
                meta = table.create_entity(entity)
            else:
                meta = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=previous.etag,
                                           match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return None
        except Exception as exc:
            if getattr(exc, "status_code", None) == 412:     # precondition failed: another instance committed
                return None
            raise
        return Stored(new.state, new.signature, new.alert_id, new.since, (meta or {}).get("etag"))
