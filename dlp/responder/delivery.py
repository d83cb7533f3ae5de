"""Nothing rots unseen (issue 12): the outbox timer's work beyond re-sending.

* Remediation intents whose invocation died, or whose recording failed, and that no redelivery or
  retry has resolved since (their writer's budget ended `INTENT_SLACK_S` ago): the registry is read
  again and the remediation recorded and alerted `remediated` (`verified-later`), under the intent's
  evaluation id; an intent whose changes are not in effect is marked `lapsed`.
* Messages the Functions host moved to `dlp-retry-poison` (the durable retry crashed on them
  `maxDequeueCount` times), and finding rows Log Analytics refused for good (`findings-rejected`):
  each is announced once, on every channel, through the transactional outbox (a marker row and the
  kept notices in one transaction: two timers announce it once). Kept alerts given up on are
  announced by the notifier itself (dlp.outputs.alerting).
* The counts `GET /api/health` shows and the log line the Azure Monitor alerts of
  infra/app/delivery-alerts.bicep read: poison messages, alerts given up on after their last attempt,
  findings set aside, orphaned intents.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from dlp.azure.budget import Budget

log = logging.getLogger("dlp.delivery")

ORPHANS_PER_TICK = 20       # intents finished per timer tick (each costs an ARM read)
POISON_PEEK = 32            # the queue service's maximum per peek
BACKLOG_BUDGET_S = 5.0      # the counts for /api/health: never hold the probe up for long
POISON_LINE = "delivery backlog:"      # infra/app/delivery-alerts.bicep parses this log line


@dataclass(frozen=True)
class Backlog:
    """What is waiting or was given up on; None where the count could not be read."""

    poison_messages: int | None = None
    undeliverable_alerts: int | None = None
    rejected_findings: int | None = None
    orphaned_remediations: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return {"poisonMessages": self.poison_messages, "undeliverableAlerts": self.undeliverable_alerts,
                "rejectedFindings": self.rejected_findings, "orphanedRemediations": self.orphaned_remediations}

    @property
    def attention(self) -> bool:
        return any(v for v in asdict(self).values())


def finish_orphans(services: Any, limit: int = ORPHANS_PER_TICK) -> int:
    """Record the remediations whose invocation could not; returns how many intents were resolved."""
    from dlp.domain.model import Context, Target
    from dlp.responder import pipeline
    from dlp.responder.intents import resolve_intent

    try:
        orphans = services.state.orphaned_intents(time.time(), limit)
    except Exception as exc:
        log.warning("remediation intents could not be read (%s); tried again at the next tick", exc)
        return 0
    resolved = 0
    for registry_id, intent in orphans:
        context = Context(trigger="drain", event_id=intent.event_id, caller=intent.caller,
                          correlation_id=intent.correlation_id)
        target = Target(registry_id, context, pending=intent.changes)
        try:
            # Never a write: the drain records what happened; the registry's own events drive enforcement.
            evaluations = pipeline.run([target], services, enforce=False)
        except Exception as exc:
            log.warning("orphaned remediation of %s not recorded yet (%s); tried again at the next tick",
                        registry_id, exc)
            continue
        if not any(e.intent == intent.row_key for e in evaluations):
            resolve_intent(services, registry_id, intent.row_key, "lapsed")
            log.warning("remediation intent %s of %s lapsed: its changes are not in effect", intent.row_key,
                        registry_id)
        resolved += 1
    return resolved


def announce_poison(services: Any) -> int:
    """Announce each message in the poison queue once (on every channel); returns how many were new."""
    queue = getattr(services.retry, "poison", None)
    announce = getattr(services.notifier, "keep_notice", None)
    if queue is None or announce is None:
        return 0
    from azure.core.exceptions import ResourceNotFoundError

    try:
        messages = list(queue.peek_messages(max_messages=POISON_PEEK))
    except ResourceNotFoundError:       # the host creates it with the first poison message
        return 0
    new = 0
    for message in messages:
        registry = _registry_of(message)
        detail = (f"A durable-retry message{' for ' + registry if registry else ''} failed "
                  "the queue trigger on every delivery and was moved to the queue dlp-retry-poison "
                  f"(message {message.id}, inserted {message.inserted_on}). Its work was not done: look at the "
                  "function's exceptions for that message, fix the cause, then re-check the registry "
                  "(POST /api/recheck) and delete the message.")
        if announce(f"poison|{message.id}", registry.rsplit("/", 1)[-1] if registry else "durable retry", detail):
            new += 1
    return new


def announce_rejected(services: Any, limit: int = POISON_PEEK) -> int:
    """Announce each finding item Log Analytics refused for good (outbox kind findings-rejected) once, on every
    channel: those rows will never reach the workspace. Returns how many were new."""
    from dlp.outputs.recording import REJECTED

    outbox = getattr(services.recorder, "outbox", None)
    announce = getattr(services.notifier, "keep_notice", None)
    if outbox is None or announce is None:
        return 0
    new = 0
    for item in outbox.pending(REJECTED, limit):
        detail = (f"Log Analytics refused finding rows of evaluation {item.key} for good ({item.last_error[:300]}); "
                  "they are kept in the outbox table under PartitionKey findings-rejected and never retried. Check the "
                  "data collection rule and the table's columns, then re-send or delete them.")
        if announce(f"rejected|{item.row_key}", "Log Analytics", detail):
            new += 1
    return new


def _registry_of(message: Any) -> str:
    try:
        body = json.loads(_text(message.content))
        return str(body.get("registryId", ""))[:400]
    except (ValueError, AttributeError, TypeError):
        return ""


def _text(content: Any) -> str:
    """The Functions queue trigger's messages are base64 (TextBase64EncodePolicy); peeks here are raw text."""
    import base64
    import binascii

    text = content.decode("utf-8") if isinstance(content, bytes) else str(content)
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return text


def backlog(services: Any) -> Backlog:
    """The counts; each one that cannot be read is None (and said in the log), never an exception."""
    from dlp.outputs.recording import REJECTED

    def count(what: str, read: Any) -> int | None:
        try:
            return int(read())
        except Exception as exc:
            log.warning("%s could not be counted (%s)", what, exc)
            return None

    queue = getattr(services.retry, "poison", None)
    store = getattr(getattr(services.notifier, "_store", None), "undeliverable", None)
    outbox = getattr(services.recorder, "outbox", None)
    with Budget.of(BACKLOG_BUDGET_S).active():
        return Backlog(
            poison_messages=count("poison messages", lambda: _queue_length(queue)) if queue is not None else 0,
            undeliverable_alerts=count("undeliverable alerts", lambda: store() + _legacy_dead(services))
            if store is not None else 0,
            rejected_findings=count("rejected findings", lambda: outbox.count(REJECTED)) if outbox is not None else 0,
            orphaned_remediations=count("orphaned remediations",
                                       lambda: len(services.state.orphaned_intents(time.time(), 1000))),
        )


def _queue_length(queue: Any) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return int(queue.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def _legacy_dead(services: Any) -> int:
    from dlp.outputs.alerting import DEAD_KIND

    outbox = getattr(services.notifier, "_outbox", None)
    return int(outbox.count(DEAD_KIND)) if outbox is not None else 0


def tick(services: Any) -> Backlog:
    """The outbox timer's first step: orphaned intents, poison messages, then the counts in one log line."""
    with Budget.of(60.0).active():
        finish_orphans(services)
        for announce in (announce_poison, announce_rejected):
            try:
                announce(services)
            except Exception as exc:
                log.warning("%s failed (%s); tried again at the next tick", announce.__name__, exc)
    report = backlog(services)
    line = " ".join(f"{k}={'-' if v is None else v}" for k, v in report.to_json().items())
    (log.error if report.attention else log.info)("%s %s", POISON_LINE, line)
    return report


__all__ = ["Backlog", "announce_poison", "announce_rejected", "backlog", "finish_orphans", "tick"]
