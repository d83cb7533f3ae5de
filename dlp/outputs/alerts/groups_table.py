"""The group rows and digests of the Table alert store (dlp/outputs/alerts/store.py explains the layout).

A mixin of TableAlertStore: it uses that store's table client (`self._client`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from dlp.outputs.alerts.grouping import Burst
from dlp.outputs.alerts.kept import (
    DIGEST_PREFIX,
    GROUP_ROW,
    KEPT_END,
    KEPT_PREFIX,
    Group,
    Kept,
    group_partition,
    pack,
    tally_fields,
    tally_of,
)


def _precondition_failed(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) in (409, 412)


class TableGroups:
    """Group rows (burst, caps, digest lock) and digest copies."""

    _client: Any

    @staticmethod
    def _kept(entity: Any) -> Kept:      # provided by TableAlertStore
        raise NotImplementedError

    # groups and their digests (by the group's partition) -------------------------------------------------------
    @staticmethod
    def _group(entity: Any) -> Group:
        burst = Burst(tally_of(entity), float(entity.get("WindowEnd") or 0.0), float(entity.get("Span") or 0.0),
                      float(entity.get("Scheduled") or 0.0))
        return Group(str(entity.get("Key") or ""), str(entity.get("Label") or ""), burst,
                     str(entity.get("FlushOwner") or ""), float(entity.get("FlushUntil") or 0.0),
                     entity.metadata.get("etag"))

    def group(self, key: str) -> Group | None:
        return self.group_at(group_partition(key))

    def group_at(self, partition: str) -> Group | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._group(self._client().get_entity(partition, GROUP_ROW))
        except ResourceNotFoundError:
            return None

    def save_group(self, previous: Group | None, new: Group) -> Group | None:
        """Write the group's burst and caps if its row is still `previous` (create it when None); None when
        another instance changed it first. The lock fields are left as they are (MERGE)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": new.partition, "RowKey": GROUP_ROW, "Key": new.key[:1024], "Label": new.label[:512],
                  "WindowEnd": float(new.burst.window_end), "Span": float(new.burst.span),
                  "Scheduled": float(new.burst.scheduled), **tally_fields(new.burst.tally),
                  "Updated": datetime.now(timezone.utc).isoformat()}
        try:
            if previous is None or previous.etag is None:
                meta = self._client().create_entity(entity)
            else:
                meta = self._client().update_entity(entity, mode=UpdateMode.MERGE, etag=previous.etag,
                                                    match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return None
        except Exception as exc:
            if _precondition_failed(exc):
                return None
            raise
        kept_lock = previous or Group(new.key)
        return replace(new, flush_owner=kept_lock.flush_owner, flush_until=kept_lock.flush_until,
                       etag=(meta or {}).get("etag"))

    def lock_group(self, group: Group, owner: str, until: float) -> Group | None:
        """Take the right to compose the group's digest (ETag-guarded): None when another instance took it."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            meta = self._client().update_entity({"PartitionKey": group.partition, "RowKey": GROUP_ROW,
                                                 "FlushOwner": owner, "FlushUntil": float(until)},
                                                mode=UpdateMode.MERGE, etag=group.etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        except Exception as exc:
            if _precondition_failed(exc):
                return None
            raise
        return replace(group, flush_owner=owner, flush_until=until, etag=(meta or {}).get("etag"))

    def due_groups(self, now: float) -> list[str]:
        """The partitions of the groups with held copies due by `now`, earliest first (a scan of the kept rows)."""
        rows = self._client().query_entities(
            "RowKey ge @low and RowKey lt @high and Held eq true and Dead eq false and HoldUntil le @now",
            parameters={"low": KEPT_PREFIX, "high": KEPT_END, "now": float(now)}, select=["Group", "HoldUntil"])
        ordered = sorted((float(e.get("HoldUntil") or 0.0), str(e.get("Group") or "")) for e in rows)
        return list(dict.fromkeys(partition for _, partition in ordered if partition))

    def held(self, partition: str) -> list[Kept]:
        """The copies held for the group's digest (any registry's partition)."""
        rows = self._client().query_entities(
            "RowKey ge @low and RowKey lt @high and Held eq true and Dead eq false and Group eq @group",
            parameters={"low": KEPT_PREFIX, "high": KEPT_END, "group": partition})
        return [self._kept(entity) for entity in rows]

    def digests(self, partition: str) -> list[Kept]:
        """The group's digests kept and not yet delivered."""
        rows = self._client().query_entities(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            parameters={"pk": partition, "low": DIGEST_PREFIX, "high": KEPT_END})
        return [self._kept(entity) for entity in rows]

    def commit_digest(self, group: Group, rows: Sequence[tuple[str, str, Any, tuple[tuple[str, str], ...]]],
                      owner: str, claim_until: float) -> list[Kept] | None:
        """Keep the digest copies ((row key, channel, payload, members)), claimed by `owner`, and free the group's
        lock, in ONE transaction guarded by the group row's ETag: None when the group row changed meanwhile."""
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError, UpdateMode

        now = datetime.now(timezone.utc).isoformat()
        entities = [{"PartitionKey": group.partition, "RowKey": row_key, "Channel": channel, "Payload": pack(payload),
                     "Attempts": 0, "LastError": "", "ClaimUntil": float(claim_until), "Owner": owner, "Dead": False,
                     "Held": False, "Members": json.dumps([list(m) for m in members], separators=(",", ":")),
                     "Created": now} for row_key, channel, payload, members in rows]
        try:
            results = self._client().submit_transaction([
                ("update", {"PartitionKey": group.partition, "RowKey": GROUP_ROW, "FlushOwner": "", "FlushUntil": 0.0},
                 {"mode": UpdateMode.MERGE, "etag": group.etag, "match_condition": MatchConditions.IfNotModified}),
                *(("create", entity) for entity in entities)])
        except TableTransactionError as exc:
            if exc.status_code in (404, 409, 412):
                return None
            raise
        return [Kept(group.partition, row_key, channel, payload, claimed_until=claim_until, owner=owner,
                     etag=(meta or {}).get("etag"), members=members, created=now)
                for (row_key, channel, payload, members), meta in zip(rows, results[1:], strict=True)]
