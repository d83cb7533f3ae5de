"""Per-registry state shared by every instance: breaker counts and the remediation lease.

Azure Table storage (the Function App's AzureWebJobsStorage), one partition per registry:
  RowKey "lease"            who may write the registry now, and when it was last released
  RowKey "rem|<utc>|<id>"   one row per remediation, counted by the revert-war breaker
`MemoryState` is the same contract inside one process (CLI, demo, storage not configured).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from dlp.model import registry_key
from dlp.settings import STATE_TABLE

LEASE_ROW = "lease"
REMEDIATION_PREFIX = "rem|"
BREAKER_WINDOW = timedelta(hours=1)


def partition_of(registry_id: str) -> str:
    """Table keys may not contain '/', so registry IDs use '|' (IDs never contain it)."""
    return registry_key(registry_id).replace("/", "|")


@dataclass(frozen=True)
class Remediation:
    when: str               # ISO 8601 UTC
    caller: str
    evaluation_id: str


@dataclass(frozen=True)
class LeaseInfo:
    acquired: bool
    stale: bool             # another holder released it after `since`: re-read before writing


class StateStore(Protocol):
    def recent_remediations(self, registry_id: str, now: datetime) -> list[Remediation]: ...
    def record_remediation(self, registry_id: str, record: Remediation) -> None: ...
    def lease(self, registry_id: str, *, since: float, ttl_s: float, wait_s: float) -> Any: ...


class _LocalLocks:
    """In-process locks per registry, so threads of one worker queue up without hammering storage."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class MemoryState:
    """Single-process state (CLI `scan --remediate`, demo). Not shared across instances."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Remediation]] = {}
        self._released: dict[str, float] = {}
        self._locks = _LocalLocks()
        self._guard = threading.Lock()

    def recent_remediations(self, registry_id: str, now: datetime) -> list[Remediation]:
        cutoff = (now - BREAKER_WINDOW).isoformat()
        with self._guard:
            return [r for r in self._rows.get(partition_of(registry_id), []) if r.when >= cutoff]

    def record_remediation(self, registry_id: str, record: Remediation) -> None:
        with self._guard:
            self._rows.setdefault(partition_of(registry_id), []).append(record)

    @contextmanager
    def lease(self, registry_id: str, *, since: float, ttl_s: float, wait_s: float) -> Iterator[LeaseInfo]:
        key = partition_of(registry_id)
        lock = self._locks.get(key)
        if not lock.acquire(timeout=max(0.0, wait_s)):
            yield LeaseInfo(False, False)
            return
        try:
            yield LeaseInfo(True, self._released.get(key, 0.0) > since)
        finally:
            self._released[key] = time.time()
            lock.release()


class TableState:
    """Azure Table storage implementation; the lease uses ETags so two instances never both write."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._service = service
        self._table_name = table
        self._table: Any = None
        self._guard = threading.Lock()
        self._locks = _LocalLocks()
        self.owner = uuid.uuid4().hex

    @classmethod
    def from_settings(cls, settings: Any, credential: Any) -> TableState:
        return cls(table_service(settings, credential))

    def _client(self) -> Any:
        with self._guard:
            if self._table is None:
                self._service.create_table_if_not_exists(self._table_name)
                self._table = self._service.get_table_client(self._table_name)
            return self._table

    def recent_remediations(self, registry_id: str, now: datetime) -> list[Remediation]:
        low = REMEDIATION_PREFIX + (now - BREAKER_WINDOW).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows = self._client().query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": partition_of(registry_id), "low": low, "high": REMEDIATION_PREFIX + "~"})
        return [Remediation(str(r.get("When", "")), str(r.get("Caller", "")), str(r.get("EvaluationId", "")))
                for r in rows]

    def record_remediation(self, registry_id: str, record: Remediation) -> None:
        when = datetime.fromisoformat(record.when).astimezone(timezone.utc)
        row = f"{REMEDIATION_PREFIX}{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{record.evaluation_id[:12]}"
        self._client().upsert_entity({"PartitionKey": partition_of(registry_id), "RowKey": row,
                                      "When": record.when, "Caller": record.caller[:256],
                                      "EvaluationId": record.evaluation_id})

    @contextmanager
    def lease(self, registry_id: str, *, since: float, ttl_s: float, wait_s: float) -> Iterator[LeaseInfo]:
        key = partition_of(registry_id)
        lock = self._locks.get(key)
        deadline = time.monotonic() + max(0.0, wait_s)
        if not lock.acquire(timeout=max(0.0, wait_s)):
            yield LeaseInfo(False, False)
            return
        try:
            info, etag = self._acquire(key, since, ttl_s, deadline)
            try:
                yield info
            finally:
                if info.acquired:
                    self._release(key, etag)
        finally:
            lock.release()

    def _acquire(self, key: str, since: float, ttl_s: float, deadline: float) -> tuple[LeaseInfo, str | None]:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        table = self._client()
        while True:
            now = time.time()
            mine = {"PartitionKey": key, "RowKey": LEASE_ROW, "Owner": self.owner, "Expires": now + ttl_s,
                    "Released": 0.0}
            try:
                current = table.get_entity(key, LEASE_ROW)
            except ResourceNotFoundError:
                try:
                    meta = table.create_entity(mine)
                    return LeaseInfo(True, False), meta.get("etag")
                except ResourceExistsError:
                    current = None
            if current is not None:
                released = float(current.get("Released") or 0.0)
                if float(current.get("Expires") or 0.0) <= now:
                    mine["Released"] = released
                    try:
                        meta = table.update_entity(mine, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                                   match_condition=MatchConditions.IfNotModified)
                        return LeaseInfo(True, released > since), meta.get("etag")
                    except (ResourceModifiedError, ResourceNotFoundError):
                        pass
            if time.monotonic() >= deadline:
                return LeaseInfo(False, False), None
            time.sleep(0.1)

    def _release(self, key: str, etag: str | None) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": key, "RowKey": LEASE_ROW, "Owner": "", "Expires": 0.0, "Released": time.time()}
        try:
            self._client().update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                         match_condition=MatchConditions.IfNotModified)
        except AzureError:
            pass   # lost the lease to expiry: the other holder re-reads anyway


def table_service(settings: Any, credential: Any) -> Any:
    """TableServiceClient for AzureWebJobsStorage: connection string locally, managed identity in Azure.

    azure-data-tables always builds its own TablesRetryPolicy (a `retry_policy` kwarg is ignored),
    so the budget is kept by few retries, a short backoff cap and short transport timeouts."""
    from azure.data.tables import TableServiceClient

    options = {"retry_total": 3, "retry_backoff_factor": 0.2, "retry_backoff_max": 2,
               "connection_timeout": 5, "read_timeout": 10}
    if settings.storage_connection_string:
        return TableServiceClient.from_connection_string(settings.storage_connection_string, **options)
    return TableServiceClient(endpoint=settings.storage_table_uri, credential=credential, **options)
