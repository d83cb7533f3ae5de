"""Sending alerts and what was kept of them: the delivery half of the notifier (dlp/outputs/alerting.py).

`Sender` sends the alerts a notify call committed (`send_dues`), the kept copies whose claim expired (`send_kept`,
grouped digests included: their members are forgotten before the digest goes out), and the older outbox's items
(`redeliver`). A failure frees the copy for the next drain; a copy out of attempts is given up on, with a notice on
every other channel. Nothing here raises into the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dlp.outputs.alerts.alert import Alert, undeliverable_alert
from dlp.outputs.alerts.batch import Batch
from dlp.outputs.alerts.channel import Channel, DeliveryError
from dlp.outputs.alerts.kept import Kept, claim_deadline
from dlp.outputs.alerts.states import Stored

log = logging.getLogger("dlp.alerting")

OUTBOX_KIND = "alerts"
DEAD_KIND = "alerts-undeliverable"
TEAMS_DIGEST_OVER = 3       # more changes than this in one call: one digest card instead of a card each
MIN_SEND_S = 1.5            # with less budget left, do not start a send: keep the alert for the next drain
KEEP_RESERVE_S = 1.0        # kept back from a send's deadline, to keep the alert in the outbox if the send fails
MAX_ATTEMPTS = 48           # then the item moves to DEAD_KIND for a person to look at (never dropped)


@dataclass
class Due:
    """An alert a notify call committed, with its kept copies per channel (none when the state store failed)."""

    alert: Alert
    registry_id: str
    stored: Stored | None = None
    kept: dict[str, Any] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)
    held: bool = False          # kept for its group's digest: not sent now


class Sender:
    """The channels, the store of kept copies and the older outbox, for one process."""

    def __init__(self, store: Any, channels: Sequence[Channel], outbox: Any, owner: str):
        self.store = store
        self.channels = {channel.name: channel for channel in channels}
        self.outbox = outbox
        self.owner = owner
        self._unsaved: list[Batch] = []     # failed sends the outbox could not take either: retried first
        self._backlog = False               # this process kept something since its last drain
        self._lock = threading.Lock()

    # what this process knows is waiting ----------------------------------------------------------------
    def note_backlog(self, value: bool = True) -> None:
        with self._lock:
            self._backlog = value

    def backlog(self) -> bool:
        with self._lock:
            return self._backlog or bool(self._unsaved)

    # a notify call's alerts ----------------------------------------------------------------------------
    def batches(self, alerts: Sequence[Alert], *, digest: bool = False) -> list[Batch]:
        """One message per channel per call, except Teams, which gives a few changes a card each."""
        return [batch for name in self.channels for batch in channel_batches(name, alerts, digest)]

    def send_dues(self, dues: Sequence[Due], *, digest: bool) -> set[str]:
        """Send each batch. A failure frees the kept copies for the drain (or, for alerts the state store could
        not keep, writes them to the outbox). Then the kept copies that went out are forgotten."""
        failed: set[str] = set()
        dues = [due for due in dues if not due.held]
        by_alert = {id(due.alert): due for due in dues}
        for batch in self.batches([due.alert for due in dues], digest=digest):
            mine = [by_alert[id(alert)] for alert in batch.alerts]
            if batch.channel in failed or not time_to_send():
                self._not_sent(batch, mine, "not sent: the channel just failed or the invocation's budget is spent")
                continue
            try:
                with keeping_time_to_keep():
                    deliver(self.channels[batch.channel], batch)
            except Exception as exc:
                error = reason(exc)
                log.warning("alert %s not delivered (%s); kept for the next drain", batch.key, error)
                self._not_sent(batch, mine, error)
                failed.add(batch.channel)
                continue
            log.info("alert %s sent: %s", batch.key, ", ".join(f"{a.registry_name} {a.state}" for a in batch.alerts))
            for due in mine:
                due.delivered.add(batch.channel)
                kept = due.kept.get(batch.channel)
                if kept is not None:
                    self.forget(kept)
        for due in dues:
            if due.stored is not None and due.kept and set(due.kept) <= due.delivered:
                try:
                    self.store.settle(due.registry_id, due.stored)
                except Exception as exc:
                    log.debug("alert row of %s not settled (%s)", due.registry_id, reason(exc))
        return failed

    def _not_sent(self, batch: Batch, dues: Sequence[Due], error: str) -> None:
        unkept = []
        for due in dues:
            kept = due.kept.get(batch.channel)
            if kept is None:
                unkept.append(due.alert)
                continue
            try:        # free the claim now: the drain need not wait for it to expire
                self.store.failed(kept, error, dead=False)
            except Exception as exc:
                log.warning("kept alert %s not updated (%s); sent once its claim expires", kept.key, reason(exc))
        self.note_backlog()
        if unkept:
            self.keep(Batch(batch.channel, tuple(unkept), batch.digest), error)

    def forget(self, kept: Any) -> None:
        try:
            self.store.delivered(kept)
        except Exception as exc:    # sent but still kept: may go out again (email de-duplicates by operation id)
            log.warning("delivered alert %s not removed (%s); it may be sent again", kept.key, reason(exc))

    # kept copies -------------------------------------------------------------------------------------------
    def send_kept(self, rows: Sequence[Any], failed: set[str], delivered: list[Any] | None = None) -> int:
        """Claim kept copies (ETag-guarded: another instance draining at the same time gets None), send them by
        channel, forget what went out, count the failures; a copy out of attempts is given up on, with a notice
        on every other channel. A digest copy is sent as it was committed, after its members are forgotten."""
        sent = 0
        claimed: dict[str, list[tuple[Any, Alert]]] = {}
        digests: list[tuple[Any, Batch]] = []
        for row in rows:
            if not time_to_send():
                self.note_backlog()
                break
            mine = self._claim(row)
            if mine is None:
                continue
            try:
                batch = Batch.from_json(mine.payload)
            except (KeyError, TypeError, ValueError) as exc:
                self.give_up(mine, f"not an alert batch ({type(exc).__name__})")
                continue
            if mine.channel not in self.channels:
                self.give_up(mine, f"channel {mine.channel} is no longer configured")
                continue
            if mine.is_digest:
                digests.append((mine, batch))
            else:
                claimed.setdefault(mine.channel, []).extend((mine, alert) for alert in batch.alerts)
        work = [(batch, [row]) for row, batch in digests]
        for channel, pairs in claimed.items():
            for batch in channel_batches(channel, [alert for _, alert in pairs], False):
                work.append((batch, [row for row, alert in pairs if alert in batch.alerts]))
        for batch, rows_of in work:
            if self._send_batch(batch, rows_of, failed):
                if delivered is not None:
                    delivered += rows_of
                sent += 1
        return sent

    def _claim(self, row: Any) -> Kept | None:
        try:
            return self.store.claim(row, self.owner, claim_deadline())
        except Exception as exc:
            log.warning("kept alert %s not claimed (%s)", row.key, reason(exc))
            return None

    def _send_batch(self, batch: Batch, rows: Sequence[Any], failed: set[str]) -> bool:
        if batch.channel in failed or not time_to_send():
            for row in rows:
                self.retry_later(row, "not sent: the channel just failed or the budget is spent")
            return False
        for row in rows:
            for partition, row_key in row.members:   # a digest replaces its members: they never go out alone
                self.forget(Kept(partition, row_key, row.channel, None))
        try:
            with keeping_time_to_keep():
                deliver(self.channels[batch.channel], batch)
        except Exception as exc:
            failed.add(batch.channel)
            error = reason(exc)
            log.warning("kept alert %s still not delivered: %s", batch.key, error)
            for row in rows:
                self.retry_later(row, error)
            return False
        for row in rows:
            self.forget(row)
        log.info("kept alert %s delivered", batch.key)
        return True

    def retry_later(self, row: Any, error: str) -> None:
        if row.attempts + 1 >= MAX_ATTEMPTS:
            self.give_up(row, error)
            return
        self.note_backlog()
        try:
            self.store.failed(row, error, dead=False)
        except Exception as exc:
            log.warning("kept alert %s not updated (%s); sent again once its claim expires", row.key, reason(exc))

    def give_up(self, row: Any, error: str) -> None:
        """Out of attempts (or unreadable): kept as undeliverable for a person, counted by /api/health, and
        announced on every other channel (the notice is kept in the same transaction, so it goes out once)."""
        log.error("kept alert %s undeliverable on %s after %d attempt(s): %s", row.key, row.channel, row.attempts + 1,
                  error)
        notice = undeliverable_alert(row, error)
        notices = [(name, Batch(name, (notice,), False).to_json()) for name in self.channels if name != row.channel]
        try:
            self.store.failed(row, error, dead=True, notices=notices)
        except Exception as exc:
            log.warning("kept alert %s not set aside (%s)", row.key, reason(exc))

    # the older outbox (alerts the state store could not keep) --------------------------------------------
    def keep(self, batch: Batch, error: str) -> None:
        from dlp.outputs.outbox import PayloadTooLarge

        try:
            self.outbox.put(OUTBOX_KIND, batch.key, batch.to_json(), error=error)
        except PayloadTooLarge:
            if len(batch.alerts) > 1:          # a huge sweep digest: keep it as two smaller digests
                half = len(batch.alerts) // 2
                self.keep(Batch(batch.channel, batch.alerts[:half], True), error)
                self.keep(Batch(batch.channel, batch.alerts[half:], True), error)
                return
            log.error("alert %s is too large for the outbox; held in memory and retried first", batch.key)
            with self._lock:
                self._unsaved.append(batch)
            return
        except Exception as exc:
            log.error("alert %s could not be kept in the outbox (%s); held in memory and retried first",
                      batch.key, reason(exc))
            with self._lock:
                self._unsaved.append(batch)
            return
        self.note_backlog()

    def retry_unsaved(self) -> int:
        with self._lock:
            batches, self._unsaved = self._unsaved, []
        sent = 0
        for batch in batches:
            try:
                deliver(self.channels[batch.channel], batch)
                sent += 1
            except Exception as exc:
                self.keep(batch, reason(exc))
        return sent

    def redeliver(self, item: Any, failed: set[str]) -> int:
        try:
            batch = Batch.from_json(item.payload)
        except (KeyError, TypeError, ValueError) as exc:
            self._set_aside(item, f"not an alert batch ({type(exc).__name__})")
            return 0
        channel = self.channels.get(batch.channel)
        if channel is None:
            self._set_aside(item, f"channel {batch.channel} is no longer configured")
            return 0
        if batch.channel in failed:
            return 0
        try:
            deliver(channel, batch)
        except Exception as exc:
            failed.add(batch.channel)
            error = reason(exc)
            log.warning("kept alert %s still not delivered (attempt %d): %s", batch.key, item.attempts + 1, error)
            try:
                if item.attempts + 1 >= MAX_ATTEMPTS:
                    self.outbox.move(item, DEAD_KIND, error)
                else:
                    self.outbox.retry_later(item, error)
            except Exception as store_exc:
                log.warning("alert outbox not updated (%s)", reason(store_exc))
            self.note_backlog()
            return 0
        try:
            self.outbox.remove(item)
        except Exception as exc:    # sent but still kept: may go out again (email de-duplicates by operation id)
            log.warning("delivered alert %s not removed from the outbox (%s)", batch.key, reason(exc))
        log.info("kept alert %s delivered", batch.key)
        return 1

    def _set_aside(self, item: Any, error: str) -> None:
        log.error("alert outbox item %s set aside as %s: %s", item.key, DEAD_KIND, error)
        try:
            self.outbox.move(item, DEAD_KIND, error)
        except Exception as exc:
            log.warning("alert outbox not updated (%s)", reason(exc))


@contextmanager
def keeping_time_to_keep() -> Iterator[None]:
    """Run a send on a deadline KEEP_RESERVE_S short of the invocation's: a channel that accepts the
    connection and never answers must still leave time to write the alert to the outbox (else it would
    only be held in this process's memory)."""
    from dlp.azure.budget import Budget, remaining

    left = remaining()
    if left is None:
        yield
        return
    with Budget(time.monotonic() + left - KEEP_RESERVE_S).active():
        yield


def deliver(channel: Channel, batch: Batch) -> None:
    """One send of a batch (a grouped digest's note and folded alerts only when it has them)."""
    if batch.note or batch.folded:
        channel.send(batch.alerts, digest=batch.digest, note=batch.note, folded=batch.folded)
    else:
        channel.send(batch.alerts, digest=batch.digest)


def channel_batches(name: str, alerts: Sequence[Alert], digest: bool) -> list[Batch]:
    if not alerts:
        return []
    if name == "teams" and not digest and len(alerts) <= TEAMS_DIGEST_OVER:
        return [Batch(name, (alert,), False) for alert in alerts]
    return [Batch(name, tuple(alerts), digest or len(alerts) > 1)]


def time_to_send() -> bool:
    from dlp.azure.budget import remaining

    left = remaining()
    return left is None or left >= MIN_SEND_S


def reason(exc: BaseException) -> str:
    """Why, without secrets: a channel's own message, else the classified failure (status, code, first line)."""
    from dlp.azure.errors import classify
    from dlp.outputs.alerts.redact import scrub

    return scrub(exc if isinstance(exc, DeliveryError) else classify(exc))
