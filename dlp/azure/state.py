"""Per-registry state shared by every instance: breaker counts and the remediation lease.

Azure Table storage (the Function App's AzureWebJobsStorage), one partition per registry:
  RowKey "lease"            who may write the registry now (deleted on release)
  RowKey "rem|<utc>|<id>"   one row per write attempt (written before the PATCH), counted by the breaker; it is
                            also the remediation's intent (issue 12): the planned changes, trigger, caller and
                            event, Status "pending" until the outcome is recorded, so that a remediation whose
                            invocation died after the PATCH is found and recorded (`verified-later`), not lost
  RowKey "alert"            the registry's alert state (dlp/outputs/alerts/store.py)
  RowKey "recheck|<utc>"    a re-check scheduled on the durable-retry queue for that moment (breaker window end)
  RowKey "exp|<key>"        one exposure window recorded (or being recorded) from change history (dlp/responder/timeline.py)
Partition "sweep", RowKey "exposure-cursor": where the last sweep's change-history query began.
`dlp.azure.memory_state.MemoryState` is the same contract inside one process (CLI, demo, no storage configured).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from dlp.domain.intent import PENDING, Intent
from dlp.domain.model import Change, registry_key
from dlp.settings import STATE_TABLE

LEASE_ROW = "lease"
LEASE_POLL_S = 0.25          # while another instance writes: each poll costs one create + one read
REMEDIATION_PREFIX = "rem|"
REMEDIATION_END = "rem}"      # just past every "rem|..." key
RECHECK_PREFIX = "recheck|"
BREAKER_WINDOW = timedelta(hours=1)
EXPOSURE_PREFIX = "exp|"
ORPHAN_SCAN = 500                   # orphaned intents read per timer tick to pick the least recently looked at
CLAIM_TTL = timedelta(minutes=10)   # a claim on a window by a process that died is taken over after this
CURSOR_PARTITION, CURSOR_ROW = "sweep", "exposure-cursor"


def partition_of(registry_id: str) -> str:
    """Table keys may not contain '/', so registry IDs use '|' (IDs never contain it)."""
    return registry_key(registry_id).replace("/", "|")




def intent_entity(intent: Intent) -> dict[str, Any]:
    """An intent as its Table row's columns."""
    return {"When": intent.when, "Caller": intent.caller[:256], "EvaluationId": intent.evaluation_id,
            "Changes": json.dumps([c.to_json() for c in intent.changes]), "Trigger": intent.trigger,
            "EventId": intent.event_id[:256], "CorrelationId": intent.correlation_id[:256], "Mode": intent.mode,
            "Status": intent.status, "Until": float(intent.until), "OwnEvent": intent.own_event[:256],
            "OpenedAt": intent.opened_at[:64], "LookedAt": float(intent.looked_at),
            "OpenedBy": intent.opened_by[:256]}


def intent_of(row: Any) -> Intent:
    """A Table row (or a MemoryState dict) back as an Intent; damaged columns read as empty."""
    try:
        changes = tuple(Change(str(c["property"]), str(c["old"]), str(c["new"]))
                        for c in json.loads(row.get("Changes") or "[]") if isinstance(c, dict))
    except (ValueError, KeyError, TypeError):
        changes = ()
    metadata = getattr(row, "metadata", None) or {}
    try:
        until = float(row.get("Until") or 0.0)
    except (TypeError, ValueError):
        until = 0.0
    return Intent(str(row.get("When", "")), str(row.get("Caller", "")), str(row.get("EvaluationId", "")), changes,
                  str(row.get("Trigger") or ""), str(row.get("EventId") or ""), str(row.get("CorrelationId") or ""),
                  str(row.get("Mode") or ""), str(row.get("Status") or ""), until, str(row.get("RowKey", "")),
                  str(row.get("OwnEvent") or ""), str(row.get("OpenedAt") or ""),
                  str(row.get("OpenedBy") or ""), str(metadata.get("etag") or ""), _number(row.get("LookedAt")))


def _number(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def remediation_row(record: Intent) -> str:
    when = datetime.fromisoformat(record.when).astimezone(timezone.utc)
    return f"{REMEDIATION_PREFIX}{when.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{record.evaluation_id[:12]}"


@dataclass(frozen=True)
class Lease:
    """Permission to write one registry until `expires` (wall clock); released by delete."""

    registry_id: str
    owner: str
    etag: str | None = None
    waited: bool = False     # another writer held it first: what was read before may be stale


class StateStore(Protocol):
    def recent_remediations(self, registry_id: str, now: datetime) -> list[Intent]: ...
    def remediations_since(self, registry_id: str, since: datetime) -> list[Intent]: ...
    def record_remediation(self, registry_id: str, record: Intent) -> str: ...
    def pending_intents(self, registry_id: str) -> list[Intent]: ...
    def resolve_intent(self, registry_id: str, row_key: str, status: str) -> None: ...
    def orphan_intent(self, registry_id: str, row_key: str) -> None: ...
    def mark_own_event(self, registry_id: str, intent: Intent, event_id: str) -> bool: ...
    def note_look(self, registry_id: str, row_key: str, at: float) -> None: ...
    def orphaned_intents(self, now: float, limit: int) -> list[tuple[str, Intent]]: ...
    def acquire(self, registry_id: str, *, ttl_s: float, wait_s: float) -> Lease | None: ...
    def release(self, lease: Lease) -> None: ...
    def extend(self, lease: Lease, *, ttl_s: float) -> Lease | None: ...
    def recheck_scheduled(self, registry_id: str, when: str) -> bool: ...
    def mark_recheck(self, registry_id: str, when: str) -> None: ...
    def claim_exposure(self, registry_id: str, key: str, owner: str, now: datetime) -> bool: ...
    def finish_exposure(self, registry_id: str, key: str) -> None: ...
    def exposure_cursor(self) -> str: ...
    def set_exposure_cursor(self, value: str) -> None: ...


def claim_stale(claimed_at: str, now: datetime) -> bool:
    try:
        return datetime.fromisoformat(claimed_at) <= now - CLAIM_TTL
    except ValueError:
        return True


class LocalLocks:
    """In-process locks per registry, so threads of one worker queue up without hammering storage."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class LazyTable:
    """A table client made on first use (creating the table then), shared by every thread.

    State, outbox and alert store all call `LazyTable(...)()` so import and start-up stay cheap."""

    def __init__(self, service: Any, name: str):
        self._service = service
        self.name = name
        self._table: Any = None
        self._guard = threading.Lock()

    def __call__(self) -> Any:
        with self._guard:
            if self._table is None:
                self._service.create_table_if_not_exists(self.name)
                self._table = self._service.get_table_client(self.name)
            return self._table


def _refusals_defer(method: Any) -> Any:
    """A 403/404 from Table storage escaping a state call becomes StorageRefused (transient: deferred)."""
    import functools

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import HttpResponseError

        from dlp.azure.errors import StorageRefused, classify

        try:
            return method(*args, **kwargs)
        except HttpResponseError as exc:
            if exc.status_code in (403, 404):
                raise StorageRefused(classify(exc)) from exc
            raise

    return call


class TableState:
    """Azure Table storage implementation; the lease uses ETags so two instances never both write."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._client = LazyTable(service, table)
        self._locks = LocalLocks()
        self.owner = uuid.uuid4().hex

    @classmethod
    def from_settings(cls, settings: Any, credential: Any) -> TableState:
        return cls(table_service(settings, credential))

    @_refusals_defer
    def recent_remediations(self, registry_id: str, now: datetime) -> list[Intent]:
        return self.remediations_since(registry_id, now - BREAKER_WINDOW)

    @_refusals_defer
    def remediations_since(self, registry_id: str, since: datetime) -> list[Intent]:
        """The breaker rows (write attempts, each with its intent's evaluation id) written since `since`."""
        low = REMEDIATION_PREFIX + since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows = self._client().query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": partition_of(registry_id), "low": low, "high": REMEDIATION_PREFIX + "~"})
        return [intent_of(r) for r in rows]

    @_refusals_defer
    def record_remediation(self, registry_id: str, record: Intent) -> str:
        """The breaker's count and the remediation's intent, in one row written before the PATCH."""
        row = remediation_row(record)
        self._client().upsert_entity({"PartitionKey": partition_of(registry_id), "RowKey": row,
                                      "RegistryId": registry_id[:1024], **intent_entity(record)})
        return row

    @_refusals_defer
    def pending_intents(self, registry_id: str) -> list[Intent]:
        """Intents of this registry whose outcome was never recorded (one query of its partition)."""
        rows = self._client().query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high and Status eq @pending",
            parameters={"pk": partition_of(registry_id), "low": REMEDIATION_PREFIX, "high": REMEDIATION_END,
                        "pending": PENDING})
        return [intent_of(r) for r in rows]

    @_refusals_defer
    def resolve_intent(self, registry_id: str, row_key: str, status: str) -> None:
        from azure.data.tables import UpdateMode

        self._client().update_entity({"PartitionKey": partition_of(registry_id), "RowKey": row_key, "Status": status},
                                     mode=UpdateMode.MERGE)

    @_refusals_defer
    def orphan_intent(self, registry_id: str, row_key: str) -> None:
        """The writer gives up on recording (its invocation fails): whoever comes next may take the intent. Its
        budget is taken as ending now (its write, if any, left before), which provenance's time checks keep."""
        from azure.data.tables import UpdateMode

        self._client().update_entity({"PartitionKey": partition_of(registry_id), "RowKey": row_key,
                                      "Until": time.time()}, mode=UpdateMode.MERGE)

    @_refusals_defer
    def mark_own_event(self, registry_id: str, intent: Intent, event_id: str) -> bool:
        """Use the intent's one-shot own-write skip for `event_id`, under the row's ETag: of two instances handling
        events with our correlation ID, one wins; a redelivery of the winning event wins again."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        table, key = self._client(), partition_of(registry_id)
        current = intent
        for _ in range(2):
            if current.own_event:
                return current.own_event == event_id
            if not current.etag:
                current = intent_of(table.get_entity(key, intent.row_key))
                continue
            try:
                table.update_entity({"PartitionKey": key, "RowKey": intent.row_key, "OwnEvent": event_id[:256]},
                                    mode=UpdateMode.MERGE, etag=current.etag,
                                    match_condition=MatchConditions.IfNotModified)
                return True
            except ResourceModifiedError:          # changed since read: read it again, decide once more
                current = intent_of(table.get_entity(key, intent.row_key))
            except ResourceNotFoundError:
                return False
        return False

    @_refusals_defer
    def note_look(self, registry_id: str, row_key: str, at: float) -> None:
        """A look that could not settle the intent yet: the timer asks the others first next time."""
        from azure.data.tables import UpdateMode

        self._client().update_entity({"PartitionKey": partition_of(registry_id), "RowKey": row_key, "LookedAt": at},
                                     mode=UpdateMode.MERGE)

    @_refusals_defer
    def orphaned_intents(self, now: float, limit: int) -> list[tuple[str, Intent]]:
        """(registry ID, intent) of registries whose writing invocation's budget ended unrecorded (a scan): the `limit`
        least recently looked at among the first ORPHAN_SCAN of them, so intents that cannot be settled yet do not
        keep the others waiting."""
        rows = self._client().query_entities(
            "RowKey ge @low and RowKey lt @high and Status eq @pending and Until lt @now",
            parameters={"low": REMEDIATION_PREFIX, "high": REMEDIATION_END, "pending": PENDING,
                        "now": float(now)})
        found = []
        for row in rows:
            found.append((str(row.get("RegistryId") or ""), intent_of(row)))
            if len(found) >= max(limit, ORPHAN_SCAN):
                break
        found.sort(key=lambda pair: pair[1].looked_at)
        return [(registry_id, intent) for registry_id, intent in found if registry_id][:limit]

    @_refusals_defer
    def recheck_scheduled(self, registry_id: str, when: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._client().get_entity(partition_of(registry_id), RECHECK_PREFIX + when)
        except ResourceNotFoundError:
            return False
        return True

    @_refusals_defer
    def mark_recheck(self, registry_id: str, when: str) -> None:
        self._client().upsert_entity({"PartitionKey": partition_of(registry_id), "RowKey": RECHECK_PREFIX + when})

    @_refusals_defer
    def acquire(self, registry_id: str, *, ttl_s: float, wait_s: float) -> Lease | None:
        """One create_entity when nobody holds it; an expired holder is taken over with its ETag."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        key = partition_of(registry_id)
        lock = self._locks.get(key)
        deadline = time.monotonic() + max(0.0, wait_s)
        waited = not lock.acquire(blocking=False)
        if waited and not lock.acquire(timeout=max(0.0, wait_s)):
            return None
        try:
            table = self._client()      # inside the try: a failure here must not keep the lock for ever
            while True:
                mine = {"PartitionKey": key, "RowKey": LEASE_ROW, "Owner": self.owner, "Expires": time.time() + ttl_s}
                try:
                    meta = table.create_entity(mine)
                    return Lease(registry_id, self.owner, meta.get("etag"), waited)
                except ResourceExistsError:
                    pass
                try:
                    current = table.get_entity(key, LEASE_ROW)
                    if float(current.get("Expires") or 0.0) <= time.time():
                        meta = table.update_entity(mine, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                                   match_condition=MatchConditions.IfNotModified)
                        return Lease(registry_id, self.owner, meta.get("etag"), True)
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
                if time.monotonic() >= deadline:
                    lock.release()
                    return None
                waited = True
                time.sleep(LEASE_POLL_S)
        except BaseException:
            lock.release()
            raise

    @_refusals_defer
    def extend(self, lease: Lease, *, ttl_s: float) -> Lease | None:
        """Keep the lease `ttl_s` longer, if it is still ours: None when another instance took it over (it had
        expired), which an ETag-conditional replace detects; still ours even if it had expired meanwhile."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        mine = {"PartitionKey": partition_of(lease.registry_id), "RowKey": LEASE_ROW, "Owner": self.owner,
                "Expires": time.time() + ttl_s}
        try:
            meta = self._client().update_entity(mine, mode=UpdateMode.REPLACE, etag=lease.etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return dataclasses.replace(lease, etag=meta.get("etag"))

    def release(self, lease: Lease) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError

        try:
            self._client().delete_entity(partition_of(lease.registry_id), LEASE_ROW, etag=lease.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except AzureError:
            pass   # expired and taken over: the new holder re-reads anyway
        finally:
            self._locks.get(partition_of(lease.registry_id)).release()

    def claim_exposure(self, registry_id: str, key: str, owner: str, now: datetime) -> bool:
        """As MemoryState.claim_exposure; one create, plus a read (and an ETag-guarded update) when a row exists."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        table = self._client()
        mine = {"PartitionKey": partition_of(registry_id), "RowKey": EXPOSURE_PREFIX + key, "State": "claimed",
                "Owner": owner[:128], "ClaimedAt": now.isoformat()}
        try:
            table.create_entity(mine)
            return True
        except ResourceExistsError:
            pass
        try:
            current = table.get_entity(mine["PartitionKey"], mine["RowKey"])
        except ResourceNotFoundError:      # rows are never deleted: answer "not mine" rather than loop
            return False
        if current.get("State") == "done":
            return False
        if current.get("Owner") != mine["Owner"] and not claim_stale(str(current.get("ClaimedAt", "")), now):
            return False
        try:
            table.update_entity(mine, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                match_condition=MatchConditions.IfNotModified)
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False

    def finish_exposure(self, registry_id: str, key: str) -> None:
        self._client().upsert_entity({"PartitionKey": partition_of(registry_id), "RowKey": EXPOSURE_PREFIX + key,
                                      "State": "done", "Owner": "", "ClaimedAt": ""})

    def exposure_cursor(self) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return str(self._client().get_entity(CURSOR_PARTITION, CURSOR_ROW).get("Since", ""))
        except ResourceNotFoundError:
            return ""

    def set_exposure_cursor(self, value: str) -> None:
        self._client().upsert_entity({"PartitionKey": CURSOR_PARTITION, "RowKey": CURSOR_ROW, "Since": value})


def table_service(settings: Any, credential: Any) -> Any:
    """TableServiceClient for AzureWebJobsStorage: connection string locally, managed identity in Azure.

    azure-data-tables always builds its own TablesRetryPolicy (a `retry_policy` kwarg is ignored),
    so the budget is kept by a per-attempt hook (timeouts cut to what is left), few retries, a short
    backoff cap, and a transport whose backoff sleeps stop at the deadline (`dlp.azure.budget.budget_transport`)."""
    from azure.data.tables import TableServiceClient

    from dlp.azure.budget import budget_transport, storage_request_hook, storage_response_hook

    options = {"retry_total": 3, "retry_backoff_factor": 0.2, "retry_backoff_max": 2,
               "connection_timeout": 5, "read_timeout": 10, "raw_request_hook": storage_request_hook,
               "raw_response_hook": storage_response_hook, "transport": budget_transport()}
    if settings.storage_connection_string:
        return TableServiceClient.from_connection_string(settings.storage_connection_string, **options)
    return TableServiceClient(endpoint=settings.storage_table_uri, credential=credential, **options)
