"""The values both alert stores keep (dlp/outputs/alerts/store.py in Table storage, memory.py in a process).

* `Kept`: one channel's copy of an alert, or of a grouped digest, kept until that channel took it.
* `Group`: a group's row (a caller's alerts, or a registry's when no caller is known): its burst and caps
  (dlp/outputs/alerts/grouping.py) and the lock of whoever is composing its digest.

And the one fair order in which kept copies are drained (`fair_order`): oldest first across every partition,
one registry at a time, so no resource-group name decides whose alerts wait.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dlp.outputs.alerts.alert import notice_id
from dlp.outputs.alerts.grouping import Burst, Tally

__all__ = ["ALERT_ROW", "DIGEST_PREFIX", "GROUP_ROW", "KEPT_END", "KEPT_PREFIX", "OPS_PARTITION", "Group", "Hold", "Kept",
           "claim_deadline", "digest_row_key", "fair_order", "group_partition", "kept_row_key", "notice_id", "pack",
           "tally_fields", "tally_of", "unpack"]

ALERT_ROW = "alert"
GROUP_ROW = "group"
OPS_PARTITION = "ops"            # notices about the responder itself (poison messages), and their markers
GROUP_PREFIX = "group|"          # a group's partition: GROUP_PREFIX + a digest of its key
KEPT_PREFIX = "out|"
KEPT_END = "out}"                 # just past every "out|..." key
DIGEST_PREFIX = KEPT_PREFIX + "digest-"
MAX_KEPT_BYTES = 60 * 1024        # one binary property (64 KiB), with room to spare


@dataclass(frozen=True)
class Kept:
    """One channel's copy of one alert (a batch of one: {"channel", "digest", "alerts"}) or of a digest, kept until
    that channel took it. `etag` guards the next claim or update. A *held* copy waits for its group's digest until
    `hold_until`; a digest copy lists the held copies it replaced (`members`: (partition, row key) pairs)."""

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
    held: bool = False
    hold_until: float = 0.0
    group: str = ""                   # the group's partition (held copies)
    folded: bool = False
    members: tuple[tuple[str, str], ...] = ()
    created: str = ""

    @property
    def key(self) -> str:
        return self.row_key[len(KEPT_PREFIX):]

    @property
    def alert_id(self) -> str:
        return self.key.rsplit("|", 1)[0]

    @property
    def is_digest(self) -> bool:
        return self.row_key.startswith(DIGEST_PREFIX)


@dataclass(frozen=True)
class Group:
    """A group's row: `key` is "caller:<caller>" or "registry:<registry key>"; `label` is what people read."""

    key: str
    label: str = ""
    burst: Burst = field(default_factory=Burst)
    flush_owner: str = ""
    flush_until: float = 0.0
    etag: str | None = None

    @property
    def partition(self) -> str:
        return group_partition(self.key)


@dataclass(frozen=True)
class Hold:
    """How the kept copies of one committed alert wait (none: sent at once)."""

    until: float
    group: str                        # the group's partition
    folded: bool = False


def group_partition(key: str) -> str:
    """A digest of the key: a caller's name may hold characters Table keys refuse, and any length."""
    return GROUP_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


def kept_row_key(alert_id: str, channel: str) -> str:
    return f"{KEPT_PREFIX}{alert_id}|{channel}"


def digest_row_key(digest_id: str, channel: str) -> str:
    return f"{DIGEST_PREFIX}{digest_id}|{channel}"


def pack(payload: Any) -> bytes:
    packed = gzip.compress(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), mtime=0)
    if len(packed) > MAX_KEPT_BYTES:
        raise ValueError(f"alert too large to keep ({len(packed)} compressed bytes)")
    return packed


def unpack(data: Any) -> Any:
    return json.loads(gzip.decompress(bytes(data)).decode("utf-8"))


def tally_fields(tally: Tally | None) -> dict[str, Any]:
    """A tally as row properties (the alert row's and the group row's)."""
    tally = tally or Tally()
    return {"TallyLast": float(tally.last), "TallyStart": float(tally.start), "TallyCount": int(tally.count),
            "TallyTold": tally.to_text()}


def tally_of(entity: Any) -> Tally:
    return Tally(float(entity.get("TallyLast") or 0.0), float(entity.get("TallyStart") or 0.0),
                 int(entity.get("TallyCount") or 0), Tally.told_from(str(entity.get("TallyTold") or "")))


def fair_order(rows: Sequence[Kept], limit: int) -> list[Kept]:
    """Oldest first across every partition, one partition (registry) at a time: each round takes the oldest copy
    of each partition, partitions ordered by that copy's age. A registry with a thousand kept copies cannot make
    the others wait, and neither can a resource-group name that sorts first."""
    queues: dict[str, list[Kept]] = {}
    for row in sorted(rows, key=lambda k: (k.created or "~", k.partition, k.row_key)):
        queues.setdefault(row.partition, []).append(row)
    ordered: list[Kept] = []
    while queues and len(ordered) < limit:
        heads = sorted(queues, key=lambda p: (queues[p][0].created or "~", p))
        for partition in heads:
            ordered.append(queues[partition].pop(0))
            if not queues[partition]:
                del queues[partition]
            if len(ordered) >= limit:
                break
    return ordered


def claim_deadline(slack_s: float = 5.0) -> float:
    """Wall-clock end of a claim taken now: the invocation's budget, plus slack for its last write."""
    from dlp.azure.budget import remaining

    left = remaining()
    return time.time() + (60.0 if left is None else left) + slack_s
