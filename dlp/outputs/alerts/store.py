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

The transactional outbox (issue 12): a state change that alerts is committed together with one
"kept" row per channel, RowKey "out|<alert id>|<channel>", in the registry's partition and in ONE
entity-group transaction (`submit_transaction`): the decision and the alert to send are durable
together or not at all. The row is created claimed by the committing instance until its budget
ends; it is deleted once its channel took the alert. Whoever finds a row whose claim expired (the
drain timer, or a redelivery of the registry's event) claims it with an ETag-guarded update before
sending, so two instances draining at once send it once. A row still failing after MAX_ATTEMPTS is
marked `Dead` (kept for a person, counted by /api/health) instead of being retried.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from dlp.azure.state import LazyTable, partition_of
from dlp.outputs.alerts.states import Stored
from dlp.settings import STATE_TABLE

ALERT_ROW = "alert"
OPS_PARTITION = "ops"            # notices about the responder itself (poison messages), and their markers
KEPT_PREFIX = "out|"
KEPT_END = "out}"                 # just past every "out|..." key
MAX_KEPT_BYTES = 60 * 1024        # one binary property (64 KiB), with room to spare


@dataclass(frozen=True)
class Kept:
    """One channel's copy of one alert, kept until that channel took it (a batch of one: {"channel", "digest",
    "alerts"}). `etag` guards the next claim or update."""

    partition: str
    row_key: str
    channel: str
    payload: Any
    attempts: int = 0
    last_error: str = ""
    claimed_until: float = 0.0        # wall clock (time.time()); 0: free to claim
    owner: str = ""
    dead: bool = False
    etag: str | None = None

    @property
    def key(self) -> str:
        return self.row_key[len(KEPT_PREFIX):]

    @property
    def alert_id(self) -> str:
        return self.key.rsplit("|", 1)[0]


def kept_row_key(alert_id: str, channel: str) -> str:
    return f"{KEPT_PREFIX}{alert_id}|{channel}"


def _pack(payload: Any) -> bytes:
    packed = gzip.compress(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), mtime=0)
    if len(packed) > MAX_KEPT_BYTES:
        raise ValueError(f"alert too large to keep ({len(packed)} compressed bytes)")
    return packed


def _unpack(data: Any) -> Any:
    return json.loads(gzip.decompress(bytes(data)).decode("utf-8"))


class AlertStore(Protocol):
    def get(self, registry_id: str) -> Stored | None: ...
    def get_all(self) -> dict[str, Stored]: ...
    def commit(self, registry_id: str, previous: Stored | None, new: Stored) -> Stored | None: ...


class MemoryAlertStore:
    """The same contract inside one process (no storage configured): de-duplicates per instance only."""

    def __init__(self) -> None:
        self._rows: dict[str, Stored] = {}
        self._kept: dict[tuple[str, str], Kept] = {}
        self._markers: set[str] = set()
        self._version = 0
        self._lock = threading.Lock()

    def _tag(self) -> str:
        self._version += 1
        return str(self._version)

    def get(self, registry_id: str) -> Stored | None:
        with self._lock:
            return self._rows.get(partition_of(registry_id))

    def get_all(self) -> dict[str, Stored]:
        with self._lock:
            return dict(self._rows)

    def commit(self, registry_id: str, previous: Stored | None, new: Stored, keep: Sequence[tuple[str, Any]] = (),
               *, owner: str = "", claim_until: float = 0.0) -> Stored | None:
        key = partition_of(registry_id)
        with self._lock:
            current = self._rows.get(key)
            if (current.etag if current else None) != (previous.etag if previous else None):
                return None
            etags = []
            for channel, payload in keep:
                row = kept_row_key(new.alert_id, channel)
                etags.append(self._tag())
                self._kept[(key, row)] = Kept(key, row, channel, payload, claimed_until=claim_until, owner=owner,
                                              etag=etags[-1])
            stored = Stored(new.state, new.signature, new.alert_id, new.since, self._tag(),
                            new.alert_id if keep else "", tuple(etags))
            self._rows[key] = stored
            return stored

    def kept(self, registry_id: str) -> list[Kept]:
        key = partition_of(registry_id)
        with self._lock:
            return [k for (p, _), k in sorted(self._kept.items()) if p == key and not k.dead]

    def backlog(self, limit: int, now: float) -> list[Kept]:
        with self._lock:
            return [k for _, k in sorted(self._kept.items()) if not k.dead and k.claimed_until <= now][:limit]

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
                    self._kept[(kept.partition, row)] = Kept(kept.partition, row, channel, payload, etag=self._tag())
        return updated

    def delivered(self, kept: Kept) -> None:
        with self._lock:
            self._kept.pop((kept.partition, kept.row_key), None)

    def settle(self, registry_id: str, stored: Stored) -> None:
        key = partition_of(registry_id)
        with self._lock:
            current = self._rows.get(key)
            if current is not None and current.etag == stored.etag and current.unsent:
                self._rows[key] = replace(current, unsent="", etag=self._tag())

    def announce(self, marker: str, notices: Sequence[tuple[str, Any]]) -> bool:
        with self._lock:
            if (OPS_PARTITION, marker) in self._kept or marker in self._markers:
                return False
            self._markers.add(marker)
            for channel, payload in notices:
                row = kept_row_key(marker.replace("|", "-"), channel)
                self._kept[(OPS_PARTITION, row)] = Kept(OPS_PARTITION, row, channel, payload, etag=self._tag())
            return True

    def _swap(self, kept: Kept, change: Any) -> Kept | None:
        with self._lock:
            current = self._kept.get((kept.partition, kept.row_key))
            if current is None or current.etag != kept.etag:
                return None
            updated = replace(change(current), etag=self._tag())
            self._kept[(kept.partition, kept.row_key)] = updated
            return updated


class TableAlertStore:
    """Alert rows in Azure Table storage; `service` is the composition root's TableServiceClient."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._client = LazyTable(service, table)

    @staticmethod
    def _stored(entity: Any) -> Stored:
        return Stored(str(entity.get("State", "")), str(entity.get("Signature", "")), str(entity.get("AlertId", "")),
                      str(entity.get("Since", "")), entity.metadata.get("etag"), str(entity.get("Unsent") or ""))

    def get(self, registry_id: str) -> Stored | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._stored(self._client().get_entity(partition_of(registry_id), ALERT_ROW))
        except ResourceNotFoundError:
            return None

    def get_all(self) -> dict[str, Stored]:
        """Every registry's alert row in one query (paged by the service, 1,000 rows a page)."""
        rows = self._client().query_entities("RowKey eq @row", parameters={"row": ALERT_ROW},
                                             select=["PartitionKey", "State", "Signature", "AlertId", "Since", "Unsent"])
        return {str(entity["PartitionKey"]): self._stored(entity) for entity in rows}

    def commit(self, registry_id: str, previous: Stored | None, new: Stored, keep: Sequence[tuple[str, Any]] = (),
               *, owner: str = "", claim_until: float = 0.0) -> Stored | None:
        """Write `new` only if the row is still `previous`; the committed value, or None when another won.

        With `keep` ((channel, payload) pairs), the kept rows are created in the same transaction, claimed by
        `owner` until `claim_until`: the state change and the alerts it owes are written together or not at all."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import TableTransactionError, UpdateMode

        pk = partition_of(registry_id)
        etags: tuple[str | None, ...] = ()
        entity = {"PartitionKey": pk, "RowKey": ALERT_ROW, "State": new.state,
                  "Signature": new.signature, "AlertId": new.alert_id, "Since": new.since,
                  "RegistryId": registry_id[:1024], "Updated": datetime.now(timezone.utc).isoformat(),
                  "Unsent": new.alert_id if keep else ""}
        table = self._client()
        create = previous is None or previous.etag is None
        try:
            if not keep:
                if create:
                    meta = table.create_entity(entity)
                else:
                    meta = table.update_entity(entity, mode=UpdateMode.REPLACE, etag=previous.etag,
                                               match_condition=MatchConditions.IfNotModified)
            else:
                rows = [{"PartitionKey": pk, "RowKey": kept_row_key(new.alert_id, channel), "Channel": channel,
                         "Payload": _pack(payload), "Attempts": 0, "LastError": "", "ClaimUntil": claim_until,
                         "Owner": owner, "Dead": False, "RegistryId": registry_id[:1024], "Created": new.since}
                        for channel, payload in keep]
                first: tuple[Any, ...] = ("create", entity) if create else (
                    "update", entity, {"mode": UpdateMode.REPLACE, "etag": previous.etag,
                                       "match_condition": MatchConditions.IfNotModified})
                results = table.submit_transaction([first, *(("create", row) for row in rows)])
                meta = results[0]
                etags = tuple((m or {}).get("etag") for m in results[1:])
        except TableTransactionError as exc:
            if exc.status_code in (409, 412):       # the alert row changed or appeared: another instance won
                return None
            raise
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return None
        except Exception as exc:
            if getattr(exc, "status_code", None) == 412:     # precondition failed: another instance committed
                return None
            raise
        return Stored(new.state, new.signature, new.alert_id, new.since, (meta or {}).get("etag"),
                      new.alert_id if keep else "", etags if keep else ())

    # the kept rows ------------------------------------------------------------------------------
    @staticmethod
    def _kept(entity: Any) -> Kept | None:
        try:
            payload = _unpack(entity["Payload"])
        except (KeyError, TypeError, ValueError, OSError, EOFError):
            payload = None
        return Kept(str(entity["PartitionKey"]), str(entity["RowKey"]), str(entity.get("Channel", "")), payload,
                    int(entity.get("Attempts") or 0), str(entity.get("LastError") or ""),
                    float(entity.get("ClaimUntil") or 0.0), str(entity.get("Owner") or ""), bool(entity.get("Dead")),
                    entity.metadata.get("etag"))

    def kept(self, registry_id: str) -> list[Kept]:
        """The registry's kept alerts not given up on (one query of its partition)."""
        rows = self._client().query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high and Dead eq false",
            parameters={"pk": partition_of(registry_id), "low": KEPT_PREFIX, "high": KEPT_END})
        return [k for k in map(self._kept, rows) if k is not None]

    def backlog(self, limit: int, now: float) -> list[Kept]:
        """Kept alerts of every registry whose claim has expired (a scan of the state table's kept rows)."""
        rows = self._client().query_entities(
            "RowKey ge @low and RowKey lt @high and Dead eq false and ClaimUntil le @now",
            parameters={"low": KEPT_PREFIX, "high": KEPT_END, "now": float(now)}, results_per_page=min(limit, 1000))
        found = []
        for entity in rows:
            kept = self._kept(entity)
            if kept is not None:
                found.append(kept)
            if len(found) >= limit:
                break
        return found

    def undeliverable(self) -> int:
        rows = self._client().query_entities("RowKey ge @low and RowKey lt @high and Dead eq true",
                                             parameters={"low": KEPT_PREFIX, "high": KEPT_END}, select=["RowKey"])
        return sum(1 for _ in rows)

    def claim(self, kept: Kept, owner: str, until: float) -> Kept | None:
        """Take the row for a send (ETag-guarded): None when another instance took or removed it first."""
        return self._merge(kept, {"Owner": owner, "ClaimUntil": until})

    def failed(self, kept: Kept, error: str, *, dead: bool, notices: Sequence[tuple[str, Any]] = ()) -> Kept | None:
        """Count a failed attempt and free the row for the next drain (or give up on it: `dead`). `notices`
        ((channel, payload)) are kept in the same transaction: whoever gives up on the row announces it, once."""
        changes = {"Attempts": kept.attempts + 1, "LastError": error[:1000], "ClaimUntil": 0.0, "Dead": dead}
        if not notices:
            return self._merge(kept, changes)
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError, UpdateMode

        rows = [{"PartitionKey": kept.partition, "RowKey": kept_row_key(notice_id(kept), channel), "Channel": channel,
                 "Payload": _pack(payload), "Attempts": 0, "LastError": "", "ClaimUntil": 0.0, "Owner": "",
                 "Dead": False, "Created": datetime.now(timezone.utc).isoformat()} for channel, payload in notices]
        try:
            results = self._client().submit_transaction([
                ("update", {"PartitionKey": kept.partition, "RowKey": kept.row_key, **changes},
                 {"mode": UpdateMode.MERGE, "etag": kept.etag, "match_condition": MatchConditions.IfNotModified}),
                *(("create", row) for row in rows)])
        except TableTransactionError as exc:
            if exc.status_code in (404, 409, 412):
                return None
            raise
        return replace(kept, attempts=kept.attempts + 1, last_error=error[:1000], claimed_until=0.0, dead=dead,
                       etag=(results[0] or {}).get("etag"))

    def delivered(self, kept: Kept) -> None:
        """The channel took it: forget the row (already gone is fine)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._client().delete_entity(kept.partition, kept.row_key)
        except ResourceNotFoundError:
            pass

    def settle(self, registry_id: str, stored: Stored) -> None:
        """Every kept copy of the row's alert went out: clear `Unsent` unless the row changed since (then a
        later redelivery spends one query to find nothing)."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        if not stored.etag:
            return
        try:
            self._client().update_entity({"PartitionKey": partition_of(registry_id), "RowKey": ALERT_ROW, "Unsent": ""},
                                         mode=UpdateMode.MERGE, etag=stored.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except Exception as exc:
            if getattr(exc, "status_code", None) not in (404, 412):
                raise

    def announce(self, marker: str, notices: Sequence[tuple[str, Any]]) -> bool:
        """Keep notices about the responder itself (partition OPS_PARTITION) once per marker: the marker row and
        the kept notices in one transaction, so two instances announce it once. False: already announced."""
        from azure.data.tables import TableTransactionError

        now = datetime.now(timezone.utc).isoformat()
        rows = [{"PartitionKey": OPS_PARTITION, "RowKey": kept_row_key(marker.replace("|", "-"), channel),
                 "Channel": channel, "Payload": _pack(payload), "Attempts": 0, "LastError": "", "ClaimUntil": 0.0,
                 "Owner": "", "Dead": False, "Created": now} for channel, payload in notices]
        try:
            self._client().submit_transaction([("create", {"PartitionKey": OPS_PARTITION, "RowKey": marker,
                                                           "Created": now}),
                                               *(("create", row) for row in rows)])
        except TableTransactionError as exc:
            if exc.status_code == 409:
                return False
            raise
        return True

    def _merge(self, kept: Kept, changes: dict[str, Any]) -> Kept | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            meta = self._client().update_entity({"PartitionKey": kept.partition, "RowKey": kept.row_key, **changes},
                                                mode=UpdateMode.MERGE, etag=kept.etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        except Exception as exc:
            if getattr(exc, "status_code", None) == 412:
                return None
            raise
        return replace(kept, owner=str(changes.get("Owner", kept.owner)),
                       claimed_until=float(changes.get("ClaimUntil", kept.claimed_until)),
                       attempts=int(changes.get("Attempts", kept.attempts)),
                       last_error=str(changes.get("LastError", kept.last_error)),
                       dead=bool(changes.get("Dead", kept.dead)), etag=(meta or {}).get("etag"))


def notice_id(kept: Kept) -> str:
    """The id of the notice that a kept alert could not be delivered (derived: the same on every instance)."""
    return "undeliverable-" + kept.alert_id[:80]


def claim_deadline(slack_s: float = 5.0) -> float:
    """Wall-clock end of a claim taken now: the invocation's budget, plus slack for its last write."""
    from dlp.azure.budget import remaining

    left = remaining()
    return time.time() + (60.0 if left is None else left) + slack_s
