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

Grouping (issue 22, dlp/outputs/alerts/grouping.py): an alert held for its group's digest is kept the same way,
in the same transaction, but *held* (`Held`, `HoldUntil`, `Group`: the group's partition) and unclaimed; the
drain leaves it alone. Each group has a row (PartitionKey `group|<digest of its key>`, RowKey "group") with its
burst, its caps and the lock of whoever composes its digest (`FlushOwner`, `FlushUntil`, ETag-guarded). A digest is
kept in the group's partition, RowKey "out|digest-<id>|<channel>", with the (partition, row key) of the held copies
it replaces (`Members`), in ONE transaction with the release of the lock: committed before it is sent, sent like
any kept copy (claimed first), and its members are deleted before it goes out.

Fair draining: the drain reads the kept rows' keys and ages (no payload), orders them oldest first one registry at
a time (`kept.fair_order`), and reads the payloads of the few it will send.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol

from dlp.azure.state import LazyTable, partition_of
from dlp.outputs.alerts.groups_table import TableGroups
from dlp.outputs.alerts.kept import (
    ALERT_ROW,
    DIGEST_PREFIX,
    KEPT_END,
    KEPT_PREFIX,
    MAX_KEPT_BYTES,
    OPS_PARTITION,
    Hold,
    Kept,
    claim_deadline,
    digest_row_key,
    fair_order,
    kept_row_key,
    notice_id,
    pack,
    tally_fields,
    tally_of,
    unpack,
)
from dlp.outputs.alerts.memory import MemoryAlertStore
from dlp.outputs.alerts.states import Stored
from dlp.settings import STATE_TABLE

_KEPT_COLUMNS = ["PartitionKey", "RowKey", "Channel", "Attempts", "LastError", "ClaimUntil", "Owner", "Dead", "Held",
                 "HoldUntil", "Group", "Folded", "Created"]


class AlertStore(Protocol):
    def get(self, registry_id: str) -> Stored | None: ...
    def get_all(self) -> dict[str, Stored]: ...
    def commit(self, registry_id: str, previous: Stored | None, new: Stored) -> Stored | None: ...


class TableAlertStore(TableGroups):
    """Alert rows in Azure Table storage; `service` is the composition root's TableServiceClient."""

    def __init__(self, service: Any, table: str = STATE_TABLE):
        self._client = LazyTable(service, table)

    @staticmethod
    def _stored(entity: Any) -> Stored:
        return Stored(str(entity.get("State", "")), str(entity.get("Signature", "")), str(entity.get("AlertId", "")),
                      str(entity.get("Since", "")), entity.metadata.get("etag"), str(entity.get("Unsent") or ""),
                      tally=tally_of(entity))

    def get(self, registry_id: str) -> Stored | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._stored(self._client().get_entity(partition_of(registry_id), ALERT_ROW))
        except ResourceNotFoundError:
            return None

    def get_all(self) -> dict[str, Stored]:
        """Every registry's alert row in one query (paged by the service, 1,000 rows a page)."""
        rows = self._client().query_entities("RowKey eq @row", parameters={"row": ALERT_ROW},
                                             select=["PartitionKey", "State", "Signature", "AlertId", "Since", "Unsent",
                                                     "TallyLast", "TallyStart", "TallyCount", "TallyTold"])
        return {str(entity["PartitionKey"]): self._stored(entity) for entity in rows}

    def commit(self, registry_id: str, previous: Stored | None, new: Stored, keep: Sequence[tuple[str, Any]] = (),
               *, owner: str = "", claim_until: float = 0.0, hold: Hold | None = None) -> Stored | None:
        """Write `new` only if the row is still `previous`; the committed value, or None when another won.

        With `keep` ((channel, payload) pairs), the kept rows are created in the same transaction, claimed by
        `owner` until `claim_until` (or, with `hold`, held for their group's digest and unclaimed): the state
        change and the alerts it owes are written together or not at all."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import TableTransactionError, UpdateMode

        pk = partition_of(registry_id)
        etags: tuple[str | None, ...] = ()
        unsent = new.alert_id if keep and hold is None else ""
        entity = {"PartitionKey": pk, "RowKey": ALERT_ROW, "State": new.state,
                  "Signature": new.signature, "AlertId": new.alert_id, "Since": new.since,
                  "RegistryId": registry_id[:1024], "Updated": datetime.now(timezone.utc).isoformat(),
                  "Unsent": unsent, **tally_fields(new.tally)}
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
                         "Payload": pack(payload), "Attempts": 0, "LastError": "",
                         "ClaimUntil": 0.0 if hold else claim_until, "Owner": owner, "Dead": False,
                         "RegistryId": registry_id[:1024], "Created": new.since, "Held": hold is not None,
                         "HoldUntil": hold.until if hold else 0.0, "Group": hold.group if hold else "",
                         "Folded": bool(hold and hold.folded)}
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
        return Stored(new.state, new.signature, new.alert_id, new.since, (meta or {}).get("etag"), unsent,
                      etags if keep else (), new.tally)

    # the kept rows ------------------------------------------------------------------------------
    @staticmethod
    def _kept(entity: Any) -> Kept:
        try:
            payload = unpack(entity["Payload"])
        except (KeyError, TypeError, ValueError, OSError, EOFError):
            payload = None
        try:
            members = tuple((str(p), str(r)) for p, r in json.loads(entity.get("Members") or "[]"))
        except (ValueError, TypeError):
            members = ()
        return Kept(str(entity["PartitionKey"]), str(entity["RowKey"]), str(entity.get("Channel", "")), payload,
                    int(entity.get("Attempts") or 0), str(entity.get("LastError") or ""),
                    float(entity.get("ClaimUntil") or 0.0), str(entity.get("Owner") or ""), bool(entity.get("Dead")),
                    entity.metadata.get("etag"), bool(entity.get("Held")), float(entity.get("HoldUntil") or 0.0),
                    str(entity.get("Group") or ""), bool(entity.get("Folded")), members,
                    str(entity.get("Created") or ""))

    def kept(self, registry_id: str) -> list[Kept]:
        """The registry's kept alerts not given up on (one query of its partition), held ones included."""
        rows = self._client().query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high and Dead eq false",
            parameters={"pk": partition_of(registry_id), "low": KEPT_PREFIX, "high": KEPT_END})
        return [self._kept(entity) for entity in rows]

    def backlog(self, limit: int, now: float) -> list[Kept]:
        """Up to `limit` kept copies whose claim has expired and that wait for no digest, in fair order: a scan of
        the kept rows' keys and ages, then one point read per copy returned."""
        from azure.core.exceptions import ResourceNotFoundError

        rows = self._client().query_entities(
            "RowKey ge @low and RowKey lt @high and Dead eq false and ClaimUntil le @now",
            parameters={"low": KEPT_PREFIX, "high": KEPT_END, "now": float(now)}, select=_KEPT_COLUMNS,
            results_per_page=1000)
        waiting = [self._kept(entity) for entity in rows if not entity.get("Held")]
        found = []
        for row in fair_order(waiting, limit):
            try:
                found.append(self._kept(self._client().get_entity(row.partition, row.row_key)))
            except ResourceNotFoundError:
                continue                    # sent and forgotten by another instance meanwhile
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
                 "Payload": pack(payload), "Attempts": 0, "LastError": "", "ClaimUntil": 0.0, "Owner": "",
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
                 "Channel": channel, "Payload": pack(payload), "Attempts": 0, "LastError": "", "ClaimUntil": 0.0,
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


__all__ = ["ALERT_ROW", "DIGEST_PREFIX", "KEPT_END", "KEPT_PREFIX", "MAX_KEPT_BYTES", "OPS_PARTITION", "AlertStore",
           "Kept", "MemoryAlertStore", "TableAlertStore", "claim_deadline", "digest_row_key", "kept_row_key",
           "notice_id"]
