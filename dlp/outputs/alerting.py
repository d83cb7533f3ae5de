"""Alerting on registry state changes: the pipeline's Notifier (issue 5).

For each evaluation: reduce it to an alert state (dlp.outputs.alerts.states), compare it with the
registry's stored state, and only on a change commit the new state (ETag-guarded, so two
instances seeing the same change send one alert), then send. The commit comes first: a send
that fails after it is kept in the outbox (kind "alerts") and retried by `drain()` (the
sweep and the outbox timer call it) and by the next `notify` that sends something, so an
alert is not lost and never blocks or undoes a remediation. Nothing here raises.

Volume: an event changes one registry: one card, one mail. A call with several changes
(`digest=True` from the sweep, or more than `TEAMS_DIGEST_OVER`) sends one digest card, and
email sends at most one mail per call (a digest), because Azure-managed sender domains
allow 5 mails a minute and 10 an hour.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from dlp.azure.state import partition_of
from dlp.domain.model import A_EXPOSURE, Evaluation
from dlp.outputs.alerts.alert import Alert, build_alert, system_alert, undeliverable_alert, window_alert_id
from dlp.outputs.alerts.batch import Batch, MemoryOutbox
from dlp.outputs.alerts.channel import Channel, DeliveryError
from dlp.outputs.alerts.states import S_EXPOSED, Observed, Stored, decide, observe
from dlp.outputs.alerts.store import Kept, claim_deadline, kept_row_key

log = logging.getLogger("dlp.alerting")

OUTBOX_KIND = "alerts"
DEAD_KIND = "alerts-undeliverable"
BULK_READ_OVER = 3          # more registries than this in one call: one query of all alert rows, not point reads
COMMIT_TRIES = 4            # re-read and re-decide when another instance committed first
TEAMS_DIGEST_OVER = 3       # more changes than this in one call: one digest card instead of a card each
MIN_SEND_S = 1.5            # with less budget left, do not start a send: keep the alert for the next drain
KEEP_RESERVE_S = 1.0        # kept back from a send's deadline, to keep the alert in the outbox if the send fails
DRAIN_LIMIT = 20            # outbox items per drain
NOTIFY_DRAIN_LIMIT = 5      # fewer when draining inside an event invocation
DRAIN_BUDGET_S = 120.0      # the outbox timer's time for alerts
FAR_FUTURE = 4.0e9           # a wall-clock time past every claim (year 2096)
MAX_ATTEMPTS = 48           # then the item moves to DEAD_KIND for a person to look at (never dropped)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NullNotifier:
    """Neither Teams nor email configured: alerts are off (said once, at start)."""

    def notify(self, evaluations: Sequence[Evaluation], *, digest: bool = False, record_pending: bool = False) -> None:
        return None

    def drain(self) -> int:
        return 0

    def announce(self, key: str, signature: str, alert: Alert, *, remind_after: timedelta) -> bool:
        return False


@dataclass
class _Due:
    """An alert this call committed, with its kept copies per channel (none when the state store failed)."""

    alert: Alert
    registry_id: str
    stored: Stored | None = None
    kept: dict[str, Any] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)


class AlertNotifier:
    """State machine + channels + outbox, all injected (tests point them at emulators and Azurite)."""

    def __init__(self, store: Any, channels: Sequence[Channel], outbox: Any, *,
                 clock: Callable[[], datetime] = _utcnow):
        self._store = store
        self._channels = {channel.name: channel for channel in channels}
        self._outbox = outbox
        self._clock = clock
        self._owner = uuid.uuid4().hex       # this instance, in the claims it takes
        self._unsaved: list[Batch] = []     # failed sends the outbox could not take either: retried first
        self._kept = False                  # this process kept something since its last drain
        self._lock = threading.Lock()

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    # the Notifier interface ---------------------------------------------------------------------
    def notify(self, evaluations: Sequence[Evaluation], *, digest: bool = False, record_pending: bool = False) -> None:
        """Alert on the state changes among `evaluations`. Never raises. `record_pending`: the evaluations could
        not be recorded (the alerts say so; the record follows when storage or Log Analytics is back)."""
        try:
            dues, unsent = self._transitions(evaluations, record_pending)
            failed = self._send_dues(dues, digest=digest) if dues else set()
            if unsent and not failed:                   # a redelivery finds what a crashed invocation kept
                self._resend(unsent, failed)
            with self._lock:
                backlog = self._kept or bool(self._unsaved)
            if (dues or backlog) and not failed:      # a channel that just failed is left to the timer
                self.drain(NOTIFY_DRAIN_LIMIT, scan=backlog)
        except Exception as exc:                        # alerting must never break what the pipeline did
            log.error("alerting failed (%s); the evaluations are recorded", _reason(exc))

    def drain(self, limit: int = DRAIN_LIMIT, *, scan: bool = True) -> int:
        """Send what earlier calls could not; returns how many messages went out. Never raises.

        A channel that fails is not tried again within the same drain. `scan=False` (an event invocation that
        knows of nothing kept) leaves the kept copies of every registry to the timer: that read is a table scan."""
        sent = self._retry_unsaved()
        failed: set[str] = set()
        try:
            rows = self._store.backlog(limit, time.time()) if scan else []
        except Exception as exc:
            log.warning("kept alerts unavailable (%s); tried again later", _reason(exc))
            rows = []
        with self._lock:
            self._kept = False
        sent += self._send_kept(rows, failed)
        try:
            items = self._outbox.pending(OUTBOX_KIND, limit)
        except Exception as exc:
            log.warning("alert outbox unavailable (%s); tried again later", _reason(exc))
            return sent
        for item in items:
            if not _time_to_send():
                with self._lock:
                    self._kept = True
                break
            sent += self._redeliver(item, failed)
        return sent

    def kept(self, registry_ids: Sequence[str] = ()) -> list[Any]:
        """What is kept for a later send (transactional copies of these registries, or of all when none are
        given, and the outbox's items): for tests and inspection."""
        rows = self._kept_of(registry_ids, claimable=False) if registry_ids else self._store.backlog(10_000, FAR_FUTURE)
        return [*rows, *self._outbox.pending(OUTBOX_KIND, 10_000)]

    def keep_notice(self, marker: str, name: str, detail: str) -> bool:
        """Keep a notice about the responder itself for every channel, once per `marker` across instances (a
        marker row and the kept notices in one transaction); the drain sends it. False: already announced."""
        notice = system_alert(marker.replace("|", "-"), name, detail)
        notices = [(channel, Batch(channel, (notice,), False).to_json()) for channel in self._channels]
        announced = self._store.announce(marker, notices)
        if announced:
            with self._lock:
                self._kept = True
        return announced

    def announce(self, key: str, signature: str, alert: Alert, *, remind_after: timedelta) -> bool:
        """Send an alert that is not about a registry (a misconfigured output) once across instances: committed
        under `key` with `signature` like a registry's state; the same signature again only after `remind_after`.
        True when this call sent it (or kept it in the outbox). Never raises."""
        try:
            try:
                previous = self._store.get(key)
            except Exception as exc:      # storage down: better a repeated alert than a lost one
                log.warning("alert state unavailable (%s): announcing without de-duplication", _reason(exc))
                self.deliver([alert])
                return True
            if previous is not None and previous.signature == signature and not _older(previous.since, remind_after,
                                                                                         self._clock()):
                return False
            keep = self._copies(alert)
            committed = self._store.commit(key, previous, Stored(alert.state, signature, alert.alert_id, alert.at),
                                           keep, owner=self._owner, claim_until=claim_deadline())
            if committed is None:
                return False                # another instance announced it
            self._send_dues([self._due(alert, key, committed, keep)], digest=False)
            return True
        except Exception as exc:
            log.error("announcement %s failed (%s)", alert.state, _reason(exc))
            return False

    # state machine ------------------------------------------------------------------------------
    def transitions(self, evaluations: Sequence[Evaluation]) -> list[Alert]:
        """Commit every state change; return the alerts whose commit this call won (to be sent)."""
        return [due.alert for due in self._transitions(evaluations, False)[0]]

    def _transitions(self, evaluations: Sequence[Evaluation], record_pending: bool
                     ) -> tuple[list[_Due], list[tuple[str, Stored]]]:
        # A window found in change history is news on its own (its record de-duplicates it, dlp/responder/timeline.py) and
        # leaves the registry's stored state alone: it is compliant again, and its next evaluation must not say so.
        windows = [_Due(build_alert(e, None, S_EXPOSED, alert_id=window_alert_id(e), at=self._clock().astimezone(
            timezone.utc).isoformat()), e.registry_id) for e in evaluations if e.outcome.action == A_EXPOSURE]
        observed = [(evaluation, seen) for evaluation in evaluations if (seen := observe(evaluation)) is not None]
        if not observed:
            return windows, []
        known = self._read([evaluation.registry_id for evaluation, _ in observed])
        dues: list[_Due] = []
        unsent: list[tuple[str, Stored]] = []
        for evaluation, seen in observed:
            due = self._transition(evaluation, seen, known, record_pending)
            if due is not None:
                dues.append(due)
            elif known is not None and (stored := known.get(partition_of(evaluation.registry_id))) and stored.unsent:
                unsent.append((evaluation.registry_id, stored))
        return dues + windows, unsent

    def _read(self, registry_ids: list[str]) -> dict[str, Stored | None] | None:
        """Stored states by partition key (one bulk query when many); None when storage failed."""
        try:
            if len(set(registry_ids)) > BULK_READ_OVER:
                rows = self._store.get_all()
                return {partition_of(r): rows.get(partition_of(r)) for r in registry_ids}
            return {partition_of(r): self._store.get(r) for r in registry_ids}
        except Exception as exc:
            log.warning("alert state unavailable (%s): alerting without de-duplication", _reason(exc))
            return None

    def _transition(self, evaluation: Evaluation, seen: Observed, known: dict[str, Stored | None] | None,
                    record_pending: bool) -> _Due | None:
        now = self._clock().astimezone(timezone.utc).isoformat()

        def due(previous: Stored | None, alert_id: str, new: tuple[str, ...] = ()) -> _Due:
            alert = build_alert(evaluation, previous, seen.state, alert_id=alert_id, at=now, escalation=new)
            if record_pending:
                alert = replace(alert, record_pending=True)
            return _Due(alert, evaluation.registry_id)

        if known is None:       # storage is down: better a repeated alert than a lost one
            return due(None, str(uuid.uuid4())) if decide(None, seen).alert else None
        key = partition_of(evaluation.registry_id)
        previous = known.get(key)
        for _ in range(COMMIT_TRIES):
            decision = decide(previous, seen)
            if not decision.write:
                return None
            alert_id = str(uuid.uuid4()) if decision.alert else (previous.alert_id if previous else "")
            pending = due(previous, alert_id, decision.new) if decision.alert else None
            keep = self._copies(pending.alert) if pending else []
            try:
                committed = self._store.commit(evaluation.registry_id, previous,
                                               Stored(seen.state, decision.signature or seen.signature, alert_id, now),
                                               keep, owner=self._owner, claim_until=claim_deadline())
            except Exception as exc:
                log.warning("alert state of %s not saved (%s): alerting without de-duplication",
                            evaluation.registry_id, _reason(exc))
                return pending
            if committed is not None:
                known[key] = committed
                if pending is None:
                    return None
                return self._due(pending.alert, evaluation.registry_id, committed, keep)
            try:                # another instance committed first: decide again from what it wrote
                previous = self._store.get(evaluation.registry_id)
            except Exception as exc:
                log.warning("alert state of %s not re-read (%s); the instance that committed alerts",
                            evaluation.registry_id, _reason(exc))
                return None
            known[key] = previous
        log.warning("alert state of %s kept changing; no alert from this evaluation", evaluation.registry_id)
        return None

    def _copies(self, alert: Alert) -> list[tuple[str, Any]]:
        """One kept copy per channel, committed with the state change (the transactional outbox)."""
        return [(name, Batch(name, (alert,), False).to_json()) for name in self._channels]

    def _due(self, alert: Alert, key: str, committed: Stored, keep: Sequence[tuple[str, Any]]) -> _Due:
        etags = committed.kept_etags or (None,) * len(keep)
        partition = partition_of(key)
        return _Due(alert, key, committed, {name: Kept(partition, kept_row_key(alert.alert_id, name), name, payload,
                                                       owner=self._owner, etag=etag)
                                            for (name, payload), etag in zip(keep, etags, strict=False)})

    # delivery -----------------------------------------------------------------------------------
    def batches(self, alerts: Sequence[Alert], *, digest: bool = False) -> list[Batch]:
        """One message per channel per call, except Teams, which gives a few changes a card each."""
        return [batch for name in self._channels for batch in _channel_batches(name, alerts, digest)]

    def deliver(self, alerts: Sequence[Alert], *, digest: bool = False) -> set[str]:
        """Send alerts that have no kept copy; whatever fails is kept in the outbox. Returns the channels that failed."""
        return self._send_dues([_Due(alert, alert.registry_id) for alert in alerts], digest=digest)

    def _send_dues(self, dues: Sequence[_Due], *, digest: bool) -> set[str]:
        """Send each batch. A failure frees the kept copies for the drain (or, for alerts the state store could
        not keep, writes them to the outbox). Then the kept copies that went out are forgotten."""
        failed: set[str] = set()
        by_alert = {id(due.alert): due for due in dues}
        for batch in self.batches([due.alert for due in dues], digest=digest):
            mine = [by_alert[id(alert)] for alert in batch.alerts]
            if batch.channel in failed or not _time_to_send():
                self._not_sent(batch, mine, "not sent: the channel just failed or the invocation's budget is spent")
                continue
            try:
                with _keeping_time_to_keep():
                    self._channels[batch.channel].send(batch.alerts, digest=batch.digest)
            except Exception as exc:
                error = _reason(exc)
                log.warning("alert %s not delivered (%s); kept for the next drain", batch.key, error)
                self._not_sent(batch, mine, error)
                failed.add(batch.channel)
                continue
            log.info("alert %s sent: %s", batch.key, ", ".join(f"{a.registry_name} {a.state}" for a in batch.alerts))
            for due in mine:
                due.delivered.add(batch.channel)
                kept = due.kept.get(batch.channel)
                if kept is not None:
                    self._forget(kept)
        for due in dues:
            if due.stored is not None and due.kept and set(due.kept) <= due.delivered:
                try:
                    self._store.settle(due.registry_id, due.stored)
                except Exception as exc:
                    log.debug("alert row of %s not settled (%s)", due.registry_id, _reason(exc))
        return failed

    def _not_sent(self, batch: Batch, dues: Sequence[_Due], error: str) -> None:
        unkept = []
        for due in dues:
            kept = due.kept.get(batch.channel)
            if kept is None:
                unkept.append(due.alert)
                continue
            try:        # free the claim now: the drain need not wait for it to expire
                self._store.failed(kept, error, dead=False)
            except Exception as exc:
                log.warning("kept alert %s not updated (%s); sent once its claim expires", kept.key, _reason(exc))
        with self._lock:
            self._kept = True
        if unkept:
            self._keep(Batch(batch.channel, tuple(unkept), batch.digest), error)

    def _forget(self, kept: Any) -> None:
        try:
            self._store.delivered(kept)
        except Exception as exc:    # sent but still kept: may go out again (email de-duplicates by operation id)
            log.warning("delivered alert %s not removed (%s); it may be sent again", kept.key, _reason(exc))

    def _resend(self, unsent: Sequence[tuple[str, Stored]], failed: set[str]) -> None:
        """Send the copies an earlier invocation kept for these registries; once none is left, clear the alert
        row's `Unsent` (with its ETag) so later events of the registry do not look again."""
        for registry_id, stored in unsent:
            rows = self._kept_of([registry_id], claimable=False)
            if any(row.claimed_until > time.time() for row in rows):
                continue                                # another instance is sending them now
            delivered: list[Any] = []
            self._send_kept(rows, failed, delivered)
            if len(delivered) == len(rows):
                try:
                    self._store.settle(registry_id, stored)
                except Exception as exc:
                    log.debug("alert row of %s not settled (%s)", registry_id, _reason(exc))

    def _kept_of(self, registry_ids: Sequence[str], *, claimable: bool = True) -> list[Any]:
        rows: list[Any] = []
        for registry_id in dict.fromkeys(registry_ids):
            try:
                rows += [k for k in self._store.kept(registry_id) if not claimable or k.claimed_until <= time.time()]
            except Exception as exc:
                log.warning("kept alerts of %s unavailable (%s)", registry_id, _reason(exc))
        return rows

    def _send_kept(self, rows: Sequence[Any], failed: set[str], delivered: list[Any] | None = None) -> int:
        """Claim kept copies (ETag-guarded: another instance draining at the same time gets None), send them by
        channel, forget what went out, count the failures; a copy out of attempts is given up on, with a notice
        on every other channel."""
        sent = 0
        claimed: dict[str, list[tuple[Any, Alert]]] = {}
        for row in rows:
            if not _time_to_send():
                with self._lock:
                    self._kept = True
                break
            try:
                mine = self._store.claim(row, self._owner, claim_deadline())
            except Exception as exc:
                log.warning("kept alert %s not claimed (%s)", row.key, _reason(exc))
                continue
            if mine is None:
                continue                    # another instance has it
            try:
                batch = Batch.from_json(mine.payload)
            except (KeyError, TypeError, ValueError) as exc:
                self._give_up(mine, f"not an alert batch ({type(exc).__name__})")
                continue
            if mine.channel not in self._channels:
                self._give_up(mine, f"channel {mine.channel} is no longer configured")
                continue
            claimed.setdefault(mine.channel, []).extend((mine, alert) for alert in batch.alerts)
        for channel, pairs in claimed.items():
            for batch in _channel_batches(channel, [alert for _, alert in pairs], False):
                rows_of = [row for row, alert in pairs if alert in batch.alerts]
                if channel in failed or not _time_to_send():
                    for row in rows_of:
                        self._retry_later(row, "not sent: the channel just failed or the budget is spent")
                    continue
                try:
                    with _keeping_time_to_keep():
                        self._channels[channel].send(batch.alerts, digest=batch.digest)
                except Exception as exc:
                    failed.add(channel)
                    error = _reason(exc)
                    log.warning("kept alert %s still not delivered: %s", batch.key, error)
                    for row in rows_of:
                        self._retry_later(row, error)
                    continue
                for row in rows_of:
                    self._forget(row)
                if delivered is not None:
                    delivered += rows_of
                log.info("kept alert %s delivered", batch.key)
                sent += 1
        return sent

    def _retry_later(self, row: Any, error: str) -> None:
        if row.attempts + 1 >= MAX_ATTEMPTS:
            self._give_up(row, error)
            return
        with self._lock:
            self._kept = True
        try:
            self._store.failed(row, error, dead=False)
        except Exception as exc:
            log.warning("kept alert %s not updated (%s); sent again once its claim expires", row.key, _reason(exc))

    def _give_up(self, row: Any, error: str) -> None:
        """Out of attempts (or unreadable): kept as undeliverable for a person, counted by /api/health, and
        announced on every other channel (the notice is kept in the same transaction, so it goes out once)."""
        log.error("kept alert %s undeliverable on %s after %d attempt(s): %s", row.key, row.channel, row.attempts + 1,
                  error)
        notice = undeliverable_alert(row, error)
        notices = [(name, Batch(name, (notice,), False).to_json()) for name in self._channels if name != row.channel]
        try:
            self._store.failed(row, error, dead=True, notices=notices)
        except Exception as exc:
            log.warning("kept alert %s not set aside (%s)", row.key, _reason(exc))

    def _keep(self, batch: Batch, error: str) -> None:
        from dlp.outputs.outbox import PayloadTooLarge

        try:
            self._outbox.put(OUTBOX_KIND, batch.key, batch.to_json(), error=error)
        except PayloadTooLarge:
            if len(batch.alerts) > 1:          # a huge sweep digest: keep it as two smaller digests
                half = len(batch.alerts) // 2
                self._keep(Batch(batch.channel, batch.alerts[:half], True), error)
                self._keep(Batch(batch.channel, batch.alerts[half:], True), error)
                return
            log.error("alert %s is too large for the outbox; held in memory and retried first", batch.key)
            with self._lock:
                self._unsaved.append(batch)
            return
        except Exception as exc:
            log.error("alert %s could not be kept in the outbox (%s); held in memory and retried first",
                      batch.key, _reason(exc))
            with self._lock:
                self._unsaved.append(batch)
            return
        with self._lock:
            self._kept = True

    def _retry_unsaved(self) -> int:
        with self._lock:
            batches, self._unsaved = self._unsaved, []
        sent = 0
        for batch in batches:
            try:
                self._channels[batch.channel].send(batch.alerts, digest=batch.digest)
                sent += 1
            except Exception as exc:
                self._keep(batch, _reason(exc))
        return sent

    def _redeliver(self, item: Any, failed: set[str]) -> int:
        try:
            batch = Batch.from_json(item.payload)
        except (KeyError, TypeError, ValueError) as exc:
            self._set_aside(item, f"not an alert batch ({type(exc).__name__})")
            return 0
        channel = self._channels.get(batch.channel)
        if channel is None:
            self._set_aside(item, f"channel {batch.channel} is no longer configured")
            return 0
        if batch.channel in failed:
            return 0
        try:
            channel.send(batch.alerts, digest=batch.digest)
        except Exception as exc:
            failed.add(batch.channel)
            error = _reason(exc)
            log.warning("kept alert %s still not delivered (attempt %d): %s", batch.key, item.attempts + 1, error)
            try:
                if item.attempts + 1 >= MAX_ATTEMPTS:
                    self._outbox.move(item, DEAD_KIND, error)
                else:
                    self._outbox.retry_later(item, error)
            except Exception as store_exc:
                log.warning("alert outbox not updated (%s)", _reason(store_exc))
            with self._lock:
                self._kept = True
            return 0
        try:
            self._outbox.remove(item)
        except Exception as exc:    # sent but still kept: may go out again (email de-duplicates by operation id)
            log.warning("delivered alert %s not removed from the outbox (%s)", batch.key, _reason(exc))
        log.info("kept alert %s delivered", batch.key)
        return 1

    def _set_aside(self, item: Any, error: str) -> None:
        log.error("alert outbox item %s set aside as %s: %s", item.key, DEAD_KIND, error)
        try:
            self._outbox.move(item, DEAD_KIND, error)
        except Exception as exc:
            log.warning("alert outbox not updated (%s)", _reason(exc))


@contextmanager
def _keeping_time_to_keep() -> Iterator[None]:
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


def _channel_batches(name: str, alerts: Sequence[Alert], digest: bool) -> list[Batch]:
    if not alerts:
        return []
    if name == "teams" and not digest and len(alerts) <= TEAMS_DIGEST_OVER:
        return [Batch(name, (alert,), False) for alert in alerts]
    return [Batch(name, tuple(alerts), digest or len(alerts) > 1)]


def _older(since: str, age: timedelta, now: datetime) -> bool:
    """`since` (ISO 8601) lies more than `age` before `now`; an unreadable time counts as old."""
    from dlp.domain.exposure import parse_time

    moment = parse_time(since)
    return moment is None or now - moment > age


def _time_to_send() -> bool:
    from dlp.azure.budget import remaining

    left = remaining()
    return left is None or left >= MIN_SEND_S


def _reason(exc: BaseException) -> str:
    """Why, without secrets: a channel's own message, else the classified failure (status, code, first line)."""
    from dlp.azure.errors import classify
    from dlp.outputs.alerts.redact import scrub

    return scrub(exc if isinstance(exc, DeliveryError) else classify(exc))


def build_channels(settings: Any, credential: Any) -> list[Channel]:
    """The configured channels; a new one is a module in dlp/outputs/alerts/ and two lines here."""
    channels: list[Channel] = []
    if settings.teams_enabled:
        from dlp.outputs.alerts.teams import TeamsChannel

        channels.append(TeamsChannel(settings.teams_webhook_url, docs_base=settings.rule_docs_url))
    if settings.email_enabled:
        from dlp.outputs.alerts.acs import EmailChannel

        channels.append(EmailChannel(settings.email_endpoint, credential, settings.email_sender, settings.email_to,
                                     docs_base=settings.rule_docs_url))
    return channels


def build_notifier(settings: Any, credential: Any, table_service: Any = None) -> Any:
    """Called once per process by dlp.runtime, with the app's TableServiceClient (None without storage)."""
    channels = build_channels(settings, credential)
    if not channels:
        log.warning("alerts are off: neither DLP_TEAMS_WEBHOOK_URL nor DLP_EMAIL_ENDPOINT/SENDER/TO is set")
        return NullNotifier()
    if table_service is not None:
        from dlp.outputs.alerts.store import TableAlertStore
        from dlp.outputs.outbox import Outbox

        store: Any = TableAlertStore(table_service)
        outbox: Any = Outbox(table_service)
    else:
        from dlp.outputs.alerts.store import MemoryAlertStore

        store, outbox = MemoryAlertStore(), MemoryOutbox()
    log.info("alerts on: %s", ", ".join(channel.name for channel in channels))
    return AlertNotifier(store, channels, outbox)


def drain_outbox(notifier: Any) -> int:
    """The outbox timer's work for alerts: re-send what the process's notifier kept (0 when alerts are off)."""
    from dlp.azure.budget import Budget

    with Budget.of(DRAIN_BUDGET_S).active():
        return notifier.drain()
