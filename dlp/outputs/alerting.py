"""Alerting on registry state changes: the pipeline's Notifier (issues 5, 12, 22).

For each evaluation: reduce it to an alert state (dlp.outputs.alerts.states), compare it with the
registry's stored state, and only on a change commit the new state (ETag-guarded, so two
instances seeing the same change send one alert), then send. The commit comes first: a send
that fails after it is kept (the transactional outbox, dlp/outputs/alerts/store.py) and retried by
`drain()` (the sweep and the outbox timer call it) and by the next `notify` that sends something, so an
alert is not lost and never blocks or undoes a remediation. Nothing here raises.

Volume (issue 22): before the commit, each alert is counted for its registry and its group (the caller who made
the change, else the registry) and `dlp.outputs.alerts.grouping` decides: at once (the first of a burst, or a new
kind of exposure), held for the group's digest (the rest of a burst), or folded (over a cap). Held copies are
committed with the state change like any other and flushed by `dlp.outputs.alerts.digests`: at the window's end
(a queue message scheduled through `schedule`), by the outbox timer, or by this instance's next notify. Within one
call, several alerts sent at once still make one digest per channel (email: one mail per call).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from dlp.azure.state import partition_of
from dlp.domain.model import A_EXPOSURE, Evaluation, registry_key
from dlp.ids import fold
from dlp.outputs.alerts import grouping
from dlp.outputs.alerts.alert import Alert, build_alert, system_alert, window_alert_id
from dlp.outputs.alerts.batch import Batch, MemoryOutbox
from dlp.outputs.alerts.channel import Channel
from dlp.outputs.alerts.digests import Digests
from dlp.outputs.alerts.kept import Group, Hold, Kept, claim_deadline, kept_row_key
from dlp.outputs.alerts.sending import DEAD_KIND, OUTBOX_KIND, Due, Sender, reason, time_to_send
from dlp.outputs.alerts.states import S_EXPOSED, Observed, Stored, decide, observe

log = logging.getLogger("dlp.alerting")

BULK_READ_OVER = 3          # more registries than this in one call: one query of all alert rows, not point reads
COMMIT_TRIES = 4            # re-read and re-decide when another instance committed first
GROUP_TRIES = 12            # a burst's alerts race on their group's row: re-read and count again
DRAIN_LIMIT = 20            # kept copies per drain
NOTIFY_DRAIN_LIMIT = 5      # fewer when draining inside an event invocation
DRAIN_BUDGET_S = 120.0      # the outbox timer's time for alerts
FLUSH_BUDGET_S = 20.0       # a scheduled digest flush (queue message), when the app's budget is not given
FAR_FUTURE = 4.0e9           # a wall-clock time past every claim (year 2096)
DIGEST_KIND = "alert-digest"     # the `kind` of a digest flush message on the durable-retry queue
FLUSH_SLACK_S = 1.0         # a flush message becomes visible this long after the window's end
# Direct construction (tests of other features, tools): every alert at once, no caps. The app passes its settings.
UNGROUPED = grouping.Limits(window_s=0.0, registry_cap=10**9, caller_cap=10**9)

__all__ = ["DEAD_KIND", "DIGEST_KIND", "FAR_FUTURE", "OUTBOX_KIND", "AlertNotifier", "NullNotifier", "build_channels",
           "build_notifier", "drain_outbox", "flush_digests"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NullNotifier:
    """Neither Teams nor email configured: alerts are off (said once, at start)."""

    def notify(self, evaluations: Sequence[Evaluation], *, digest: bool = False, record_pending: bool = False) -> None:
        return None

    def drain(self) -> int:
        return 0

    def flush(self, partitions: Sequence[str] | None = None) -> int:
        return 0

    def announce(self, key: str, signature: str, alert: Alert, *, remind_after: timedelta) -> bool:
        return False


class AlertNotifier:
    """State machine + grouping + channels + outbox, all injected (tests point them at emulators and Azurite).

    `schedule(message, delay_s)` puts a digest flush on the durable-retry queue (None: the timer and the next
    notify flush); `limits` are the grouping window and caps (None: every alert at once, `UNGROUPED`)."""

    def __init__(self, store: Any, channels: Sequence[Channel], outbox: Any, *,
                 clock: Callable[[], datetime] = _utcnow, limits: grouping.Limits | None = None,
                 schedule: Callable[[dict[str, Any], float], Any] | None = None):
        self._store = store
        self._clock = clock
        self._owner = uuid.uuid4().hex       # this instance, in the claims it takes
        self._sender = Sender(store, channels, outbox, self._owner)
        self._channels = self._sender.channels
        self._outbox = outbox
        self._limits = limits or UNGROUPED
        self._schedule = schedule
        self._digests = Digests(store, self._sender)
        self._held: dict[str, float] = {}    # groups this process held alerts for, and when their digest is due
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
            now = [due for due in dues if not due.held]
            failed = self._send_dues(now, digest=digest) if now else set()
            if unsent and not failed:                   # a redelivery finds what a crashed invocation kept
                self._resend(unsent, failed)
            backlog = self._sender.backlog()
            if (now or backlog or self._due_here()) and not failed:   # a channel that just failed: left to the timer
                self.drain(NOTIFY_DRAIN_LIMIT, scan=backlog)
        except Exception as exc:                        # alerting must never break what the pipeline did
            log.error("alerting failed (%s); the evaluations are recorded", reason(exc))

    def drain(self, limit: int = DRAIN_LIMIT, *, scan: bool = True) -> int:
        """Send what earlier calls could not, and the digests that are due; returns how many messages went out.
        Never raises. A channel that fails is not tried again within the same drain. `scan=False` (an event
        invocation that knows of nothing kept) leaves the kept copies and digests of others to the timer: that
        read is a table scan."""
        sent = self._sender.retry_unsaved()
        failed: set[str] = set()
        sent += self.flush(None if scan else self._due_here(), failed=failed)
        try:
            rows = self._store.backlog(limit, time.time()) if scan else []
        except Exception as exc:
            log.warning("kept alerts unavailable (%s); tried again later", reason(exc))
            rows = []
        self._sender.note_backlog(False)
        sent += self._sender.send_kept(rows, failed)
        try:
            items = self._outbox.pending(OUTBOX_KIND, limit)
        except Exception as exc:
            log.warning("alert outbox unavailable (%s); tried again later", reason(exc))
            return sent
        for item in items:
            if not time_to_send():
                self._sender.note_backlog()
                break
            sent += self._sender.redeliver(item, failed)
        return sent

    def flush(self, partitions: Sequence[str] | None = None, *, failed: set[str] | None = None) -> int:
        """Send the digests of these groups (None: of every group with held alerts due now). Never raises."""
        if partitions is not None and not partitions:
            return 0
        sent = self._digests.flush(partitions, set() if failed is None else failed)
        with self._lock:
            for partition in partitions or list(self._held):
                if self._held.get(partition, FAR_FUTURE) <= time.time():
                    self._held.pop(partition, None)
        return sent

    def _due_here(self) -> list[str]:
        """Groups this process held alerts for whose digest is due (no scan needed to find them)."""
        with self._lock:
            return [partition for partition, due in self._held.items() if due <= time.time()]

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
            self._sender.note_backlog()
        return announced

    def announce(self, key: str, signature: str, alert: Alert, *, remind_after: timedelta) -> bool:
        """Send an alert that is not about a registry (a misconfigured output) once across instances: committed
        under `key` with `signature` like a registry's state; the same signature again only after `remind_after`.
        True when this call sent it (or kept it in the outbox). Never raises."""
        try:
            try:
                previous = self._store.get(key)
            except Exception as exc:      # storage down: better a repeated alert than a lost one
                log.warning("alert state unavailable (%s): announcing without de-duplication", reason(exc))
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
            log.error("announcement %s failed (%s)", alert.state, reason(exc))
            return False

    # state machine ------------------------------------------------------------------------------
    def transitions(self, evaluations: Sequence[Evaluation]) -> list[Alert]:
        """Commit every state change; return the alerts whose commit this call won (sent now or held)."""
        return [due.alert for due in self._transitions(evaluations, False)[0]]

    def _transitions(self, evaluations: Sequence[Evaluation], record_pending: bool
                     ) -> tuple[list[Due], list[tuple[str, Stored]]]:
        # A window found in change history is news on its own (its record de-duplicates it, dlp/responder/timeline.py) and
        # leaves the registry's stored state alone: it is compliant again, and its next evaluation must not say so.
        windows = [Due(build_alert(e, None, S_EXPOSED, alert_id=window_alert_id(e), at=self._clock().astimezone(
            timezone.utc).isoformat()), e.registry_id) for e in evaluations if e.outcome.action == A_EXPOSURE]
        observed = [(evaluation, seen) for evaluation in evaluations if (seen := observe(evaluation)) is not None]
        if not observed:
            return windows, []
        known = self._read([evaluation.registry_id for evaluation, _ in observed])
        dues: list[Due] = []
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
            log.warning("alert state unavailable (%s): alerting without de-duplication", reason(exc))
            return None

    def _transition(self, evaluation: Evaluation, seen: Observed, known: dict[str, Stored | None] | None,
                    record_pending: bool) -> Due | None:
        now = self._clock().astimezone(timezone.utc).isoformat()

        def due(previous: Stored | None, alert_id: str, new: tuple[str, ...] = ()) -> Due:
            alert = build_alert(evaluation, previous, seen.state, alert_id=alert_id, at=now, escalation=new)
            if record_pending:
                alert = replace(alert, record_pending=True)
            return Due(alert, evaluation.registry_id)

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
            tally = previous.tally if previous is not None else None
            hold: Hold | None = None
            if pending is not None:
                delivery, tally, group = self._count(evaluation, pending.alert, tally)
                if delivery.held and group is not None:
                    hold = Hold(delivery.hold_until, group.partition, delivery.folded)
            try:
                committed = self._store.commit(evaluation.registry_id, previous,
                                               Stored(seen.state, decision.signature or seen.signature, alert_id, now,
                                                      tally=tally),
                                               keep, owner=self._owner, claim_until=claim_deadline(), hold=hold)
            except Exception as exc:
                log.warning("alert state of %s not saved (%s): alerting without de-duplication",
                            evaluation.registry_id, reason(exc))
                return pending
            if committed is not None:
                known[key] = committed
                if pending is None:
                    return None
                if hold is not None:
                    self._remember(hold)
                    log.info("alert %s on %s held for its group's digest until %.0f (%s)", alert_id,
                             evaluation.registry_name, hold.until, "folded" if hold.folded else "grouped")
                    return replace(pending, stored=committed, held=True)
                return self._due(pending.alert, evaluation.registry_id, committed, keep)
            try:                # another instance committed first: decide again from what it wrote
                previous = self._store.get(evaluation.registry_id)
            except Exception as exc:
                log.warning("alert state of %s not re-read (%s); the instance that committed alerts",
                            evaluation.registry_id, reason(exc))
                return None
            known[key] = previous
        log.warning("alert state of %s kept changing; no alert from this evaluation", evaluation.registry_id)
        return None

    # grouping -----------------------------------------------------------------------------------
    def _count(self, evaluation: Evaluation, alert: Alert, tally: Any
               ) -> tuple[grouping.Delivery, grouping.Tally, Group | None]:
        """Count the alert for its registry and its group; how it goes out (at once when the group's row cannot
        be read or written: better a message too many than one late)."""
        registry = tally if isinstance(tally, grouping.Tally) else grouping.Tally()
        kinds = grouping.kinds_of(alert)
        if self._limits is UNGROUPED:
            return grouping.NOW, registry, None
        key, label = group_of(evaluation)
        for attempt in range(GROUP_TRIES):
            now = time.time()
            try:
                current = self._store.group(key)
                delivery, counted, burst = grouping.decide(now, self._limits, kinds, registry,
                                                           current.burst if current else grouping.Burst())
                saved = self._store.save_group(current, Group(key, label, burst))
            except Exception as exc:
                log.warning("alert group of %s unavailable (%s): sent at once", evaluation.registry_name, reason(exc))
                return grouping.NOW, registry.counted(now, kinds, self._limits), None
            if saved is not None:
                if delivery.schedule:
                    self._schedule_flush(saved.partition, delivery.schedule)
                return delivery, counted, saved
            time.sleep(random.uniform(0.0, 0.02 * (attempt + 1)))
        log.warning("alert group of %s kept changing: sent at once", evaluation.registry_name)
        return grouping.NOW, registry.counted(time.time(), kinds, self._limits), None

    def _schedule_flush(self, partition: str, when: float) -> None:
        """A queue message that makes some instance flush the group when its window ends. A message that cannot
        be queued is no loss: the outbox timer flushes every due group."""
        if self._schedule is None:
            return
        try:
            self._schedule({"kind": DIGEST_KIND, "group": partition, "due": when},
                           max(0.0, when - time.time()) + FLUSH_SLACK_S)
        except Exception as exc:
            log.warning("digest flush not scheduled (%s); the outbox timer flushes it", reason(exc))

    def _remember(self, hold: Hold) -> None:
        with self._lock:
            self._held[hold.group] = min(self._held.get(hold.group, FAR_FUTURE), hold.until)

    def _copies(self, alert: Alert) -> list[tuple[str, Any]]:
        """One kept copy per channel, committed with the state change (the transactional outbox)."""
        return [(name, Batch(name, (alert,), False).to_json()) for name in self._channels]

    def _due(self, alert: Alert, key: str, committed: Stored, keep: Sequence[tuple[str, Any]]) -> Due:
        etags = committed.kept_etags or (None,) * len(keep)
        partition = partition_of(key)
        return Due(alert, key, committed, {name: Kept(partition, kept_row_key(alert.alert_id, name), name, payload,
                                                      owner=self._owner, etag=etag)
                                           for (name, payload), etag in zip(keep, etags, strict=False)})

    # delivery -----------------------------------------------------------------------------------
    def batches(self, alerts: Sequence[Alert], *, digest: bool = False) -> list[Batch]:
        return self._sender.batches(alerts, digest=digest)

    def deliver(self, alerts: Sequence[Alert], *, digest: bool = False) -> set[str]:
        """Send alerts that have no kept copy; whatever fails is kept in the outbox. Returns the channels that failed."""
        return self._send_dues([Due(alert, alert.registry_id) for alert in alerts], digest=digest)

    def _send_dues(self, dues: Sequence[Due], *, digest: bool) -> set[str]:
        return self._sender.send_dues(dues, digest=digest)

    def _resend(self, unsent: Sequence[tuple[str, Stored]], failed: set[str]) -> None:
        """Send the copies an earlier invocation kept for these registries; once none is left, clear the alert
        row's `Unsent` (with its ETag) so later events of the registry do not look again. Held copies wait for
        their group's digest."""
        for registry_id, stored in unsent:
            rows = [row for row in self._kept_of([registry_id], claimable=False) if not row.held]
            if any(row.claimed_until > time.time() for row in rows):
                continue                                # another instance is sending them now
            delivered: list[Any] = []
            self._sender.send_kept(rows, failed, delivered)
            if len(delivered) == len(rows):
                try:
                    self._store.settle(registry_id, stored)
                except Exception as exc:
                    log.debug("alert row of %s not settled (%s)", registry_id, reason(exc))

    def _kept_of(self, registry_ids: Sequence[str], *, claimable: bool = True) -> list[Any]:
        rows: list[Any] = []
        for registry_id in dict.fromkeys(registry_ids):
            try:
                rows += [k for k in self._store.kept(registry_id) if not claimable or k.claimed_until <= time.time()]
            except Exception as exc:
                log.warning("kept alerts of %s unavailable (%s)", registry_id, reason(exc))
        return rows


def group_of(evaluation: Evaluation) -> tuple[str, str]:
    """(key, label) of the group an evaluation's alert is counted in: the caller who made the change (ARM's claims,
    as the evaluation carries them), else the registry (a sweep, a re-check: its requester did not change it)."""
    context = evaluation.context
    if context.caller and context.trigger not in ("http", "sweep", "cli"):
        return "caller:" + fold(context.caller), context.caller
    return "registry:" + registry_key(evaluation.registry_id), evaluation.registry_name


def _older(since: str, age: timedelta, now: datetime) -> bool:
    """`since` (ISO 8601) lies more than `age` before `now`; an unreadable time counts as old."""
    from dlp.domain.exposure import parse_time

    moment = parse_time(since)
    return moment is None or now - moment > age


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


def build_notifier(settings: Any, credential: Any, table_service: Any = None,
                   schedule: Callable[[dict[str, Any], float], Any] | None = None) -> Any:
    """Called once per process by dlp.runtime, with the app's TableServiceClient (None without storage) and the
    durable-retry queue's `schedule` (None without a queue)."""
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
        from dlp.outputs.alerts.memory import MemoryAlertStore

        store, outbox = MemoryAlertStore(), MemoryOutbox()
    limits = grouping.Limits(settings.alert_group_window_s, settings.alert_cap_per_registry,
                             settings.alert_cap_per_caller, settings.alert_cap_window_min * 60.0)
    log.info("alerts on: %s", ", ".join(channel.name for channel in channels))
    return AlertNotifier(store, channels, outbox, limits=limits, schedule=schedule)


def drain_outbox(notifier: Any) -> int:
    """The outbox timer's work for alerts: re-send what the process's notifier kept, and send the digests that are
    due (0 when alerts are off)."""
    from dlp.azure.budget import Budget

    with Budget.of(DRAIN_BUDGET_S).active():
        return notifier.drain()


def flush_digests(notifier: Any, message: Any, budget_s: float = FLUSH_BUDGET_S) -> int:
    """A scheduled digest flush (a DIGEST_KIND message on the durable-retry queue): that group, within `budget_s`
    (the app's DLP_TIME_BUDGET_S: the claims it takes expire with it). Never raises: the outbox timer flushes
    whatever this misses."""
    from dlp.azure.budget import Budget

    group = message.get("group") if isinstance(message, dict) else None
    if not isinstance(group, str) or not group.startswith("group|") or len(group) > 100:
        log.error("digest flush message without a valid group; ignored (the outbox timer flushes every due group)")
        return 0
    with Budget.of(budget_s).active():
        return notifier.flush([group])
