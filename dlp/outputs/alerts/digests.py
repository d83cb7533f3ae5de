"""Grouped digests: the alerts a group held, sent as one message per channel once its window ends (issue 22).

Who flushes: the queue message the notifier scheduled for the window's end (`alert-digest` on the durable-retry
queue), the outbox timer (every due group, a scan), and the next notify of an instance that held alerts itself.
Any of them may run at once on several instances; a group is flushed like this:

1. take the group's lock (an ETag-guarded update of its row; another instance holding it: skip);
2. read the digests already kept for the group: their members are excluded (and forgotten), because a digest is
   committed before its members are deleted;
3. compose one digest per channel (chunked to fit a kept row) from the held copies that are due, with a row key
   derived from its members (the same members always give the same key, so two composers cannot both keep it);
4. commit the digests together with the release of the lock (one transaction, guarded by the group row's ETag:
   a group row changed meanwhile, by a new alert of the burst, means compose again with it);
5. forget the members, then send the digests like any kept copy (claimed first; a failed send is retried by the
   drain, with the same alerts and so the same email operation id).

A crash after 4 leaves digests whose claim expires and that the drain sends (their members forgotten first); a
crash before 4 leaves the held copies, due, for the next flush. Nothing is lost and nothing is sent twice, except a
Teams card posted by an instance that died before it could mark it sent (the webhook has no idempotency key).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from dlp.outputs.alerts.alert import Alert
from dlp.outputs.alerts.batch import Batch
from dlp.outputs.alerts.kept import Group, Kept, claim_deadline, digest_row_key, pack
from dlp.outputs.alerts.sending import Sender, reason, time_to_send

log = logging.getLogger("dlp.alerting")

MAX_MEMBERS = 100          # alerts per digest copy (a kept row holds 60 KB compressed; its member list 32 K chars)
COMMIT_TRIES = 5           # the group row changed under us (a new alert of the burst): compose again
_NAMESPACE = uuid.UUID("2d7b6f0a-53c1-4c2e-9a0e-6f1d3b8c4e57")


class Digests:
    """Flushes groups for one process; `sender` sends what it commits."""

    def __init__(self, store: Any, sender: Sender):
        self._store = store
        self._sender = sender

    def flush(self, partitions: Sequence[str] | None, failed: set[str]) -> int:
        """Flush these groups (None: every group with held alerts due now); returns the messages sent."""
        now = time.time()
        try:
            groups = list(partitions) if partitions is not None else self._store.due_groups(now)
        except Exception as exc:
            log.warning("held alerts unavailable (%s); tried again later", reason(exc))
            return 0
        sent = 0
        for partition in dict.fromkeys(groups):
            if not time_to_send():
                self._sender.note_backlog()
                break
            try:
                sent += self._flush(partition, failed)
            except Exception as exc:         # storage failed half-way: what is kept stays kept
                log.warning("digest of group %s not composed (%s); tried again later", partition, reason(exc))
                self._sender.note_backlog()
        return sent

    def _flush(self, partition: str, failed: set[str]) -> int:
        group = self._store.group_at(partition)
        if group is None:           # its row is gone (deleted by hand): what it held goes out without it
            stray = [row for row in self._store.held(partition) if row.hold_until <= time.time()]
            return self._sender.send_kept(stray, failed)
        owner = self._sender.owner
        if group.flush_owner and group.flush_owner != owner and group.flush_until > time.time():
            return 0                                    # another instance is composing it
        locked = self._store.lock_group(group, owner, claim_deadline())
        if locked is None:
            return 0
        for _ in range(COMMIT_TRIES):
            pending = self._store.digests(partition)
            listed = {member for digest in pending for member in digest.members}
            now = time.time()
            members = []
            for row in self._store.held(partition):
                if (row.partition, row.row_key) in listed:
                    self._sender.forget(row)            # its digest is kept already (a flush died before forgetting)
                elif row.hold_until <= now:
                    members.append(row)
            waiting = [d for d in pending if d.claimed_until <= now or d.owner == owner]
            rows = self._compose(locked, members)
            made = self._store.commit_digest(locked, rows, owner, claim_deadline())
            if made is not None:
                for row in members:
                    self._sender.forget(row)
                if made:
                    log.info("digest of %s kept: %d alert(s) in %d message(s)", locked.label or partition,
                             len(members), len(made))
                return self._sender.send_kept([*waiting, *made], failed)
            current = self._store.group_at(partition)
            if current is None or current.flush_owner != owner:
                return 0                                # our lock expired and someone else took it
            locked = current
        log.warning("digest of group %s not committed: its row kept changing; the next flush composes it", partition)
        return 0

    def _compose(self, group: Group, members: Sequence[Kept]) -> list[tuple[str, str, Any, tuple[tuple[str, str], ...]]]:
        """(row key, channel, payload, members) per digest copy: one per channel, chunked to fit a kept row."""
        by_channel: dict[str, list[tuple[Kept, Alert]]] = {}
        for row in members:
            try:
                alert = Batch.from_json(row.payload).alerts[0]
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self._sender.give_up(row, f"not an alert batch ({type(exc).__name__})")
                continue
            by_channel.setdefault(row.channel, []).append((row, alert))
        rows = []
        for channel, pairs in by_channel.items():
            pairs.sort(key=lambda pair: (pair[1].at, pair[1].alert_id))
            for chunk in _chunks(pairs, MAX_MEMBERS):
                rows += self._fit(group, channel, chunk)
        return rows

    def _fit(self, group: Group, channel: str, pairs: list[tuple[Kept, Alert]]
             ) -> list[tuple[str, str, Any, tuple[tuple[str, str], ...]]]:
        alerts = tuple(alert for _, alert in pairs)
        folded = tuple(alert.alert_id for row, alert in pairs if row.folded)
        batch = Batch(channel, alerts, True, note(group, alerts, folded), folded)
        payload = batch.to_json()
        try:
            pack(payload)
        except ValueError:
            if len(pairs) == 1:
                raise
            half = len(pairs) // 2
            return self._fit(group, channel, pairs[:half]) + self._fit(group, channel, pairs[half:])
        ids = ",".join(sorted(alert.alert_id for alert in alerts))
        digest_id = str(uuid.uuid5(_NAMESPACE, f"{group.partition}|{channel}|{ids}"))
        return [(digest_row_key(digest_id, channel), channel, payload,
                 tuple((row.partition, row.row_key) for row, _ in pairs))]


def note(group: Group, alerts: Sequence[Alert], folded: Sequence[str]) -> str:
    """What the digest is, in one sentence: whose burst, when, and how many changes are summed up."""
    times = sorted(a.at for a in alerts if a.at)
    span = f" between {_clock(times[0])} and {_clock(times[-1])} UTC" if times else ""
    who = group.label or "one caller"
    whose = f"by {who}" if group.key.startswith("caller:") else f"on {who}"
    text = (f"Grouped alerts {whose}: {len(alerts)} change{'s' if len(alerts) != 1 else ''}{span}. The first alert "
            "of a burst goes out at once; the rest follow in one digest per channel.")
    if folded:
        text += (f" {len(folded)} change{'s' if len(folded) != 1 else ''} beyond the alert caps "
                 f"{'are' if len(folded) != 1 else 'is'} summed up, not listed in full (every one is in Log Analytics).")
    return text


def _clock(moment: str) -> str:
    try:
        return datetime.fromisoformat(moment).astimezone(timezone.utc).strftime("%H:%M:%S")
    except ValueError:
        return moment[:19]


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
