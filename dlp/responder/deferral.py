"""Deferral: work a failing dependency kept from finishing goes to the durable retry, and comes back from it.

Event Grid waits 30 s for an answer; what does not fit (ARM throttling, storage down, an update still running) is
put on the durable-retry queue with what is known so far. A deferral once the registry was read carries what was
read, so a known drift alerts at once as "remediation pending" with the next attempt's time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta, timezone
from typing import Any

from dlp.domain.model import A_DEFERRED, A_ERROR, A_FAILED, ARM_PATHS, P_EXPORT, Change, Context, Evaluation, Outcome, Target
from dlp.ids import registry_of
from dlp.responder.intents import orphan_intent
from dlp.responder.invocation import Invocation
from dlp.settings import Settings

log = logging.getLogger("dlp.pipeline")

R_RETRIES_EXHAUSTED = "retries-exhausted"


class Defer(Exception):
    """Work a failing dependency kept from finishing: goes to the durable retry.

    `assessment` is what the registry showed when that is known (the deferral then alerts as "drift
    detected, remediation pending" at once, rather than after the retries)."""

    def __init__(self, code: str, message: str, pending: tuple[Change, ...] = (), assessment: Any = None):
        self.code = code
        self.pending = pending
        self.intent = ""        # set when a remediation intent was written: the PATCH may have landed
        self.assessment = assessment
        super().__init__(message)


def as_deferral(exc: BaseException, assessment: Any) -> BaseException:
    """A failure once the registry was read: a transient one becomes a `Defer` that carries what was read (so a
    known drift alerts at once as "remediation pending"); a `Defer` without it gets it; others stay as they are."""
    from dlp.azure.errors import classify

    if isinstance(exc, Defer):
        if exc.assessment is None:
            exc.assessment = assessment
        return exc
    if not isinstance(exc, Exception):
        return exc
    failure = classify(exc)
    return Defer(failure.code, str(failure), assessment=assessment) if failure.transient else exc


def defer(invocation: Invocation, deferred: Defer) -> Evaluation:
    """Hand the work to the durable retry. The evaluation says when the next attempt runs and, when the
    registry was read, what it showed: a known drift alerts now ("remediation pending"), not hours later."""
    from dlp.azure.retryqueue import MAX_ATTEMPTS

    target, services = invocation.target, invocation.services
    attempt = target.context.attempt + 1
    pending = deferred.pending or target.pending
    # After a PATCH, the evaluation id belongs to the intent: its `remediated` record comes later, under that id
    own_id = str(uuid.uuid4()) if deferred.intent else ""
    assessment = deferred.assessment
    if services.retry is None:
        return invocation.done(Outcome(A_ERROR, deferred.code, f"{deferred} (no durable retry in this mode)", pending,
                                       deferred.code), assessment, evaluation_id=own_id)
    if attempt > MAX_ATTEMPTS:
        return invocation.done(Outcome(A_FAILED, R_RETRIES_EXHAUSTED, f"gave up after {MAX_ATTEMPTS} retries: {deferred}",
                                       pending, deferred.code), assessment, evaluation_id=own_id)
    message = retry_message(target.registry_id, target.context, enforce=invocation.enforce, attempt=attempt,
                            deleted=target.deleted, pending=pending, reason=str(deferred))
    delay = services.retry.hand_over(message, attempt)       # raises if the queue is down: the trigger must retry
    if deferred.intent:      # the writer gives its intent up: the retry (or the timer) settles it from evidence
        orphan_intent(services, target.registry_id, deferred.intent)
    next_attempt = (services.clock() + timedelta(seconds=delay)).astimezone(timezone.utc).isoformat(timespec="seconds")
    log.warning("deferred %s to the durable retry (attempt %d at %s): %s", target.registry_id, attempt, next_attempt,
                deferred)
    return invocation.done(Outcome(A_DEFERRED, deferred.code, f"{deferred}; next attempt (#{attempt}) at {next_attempt}",
                                   pending), assessment, next_attempt=next_attempt, evaluation_id=own_id)


def retry_message(registry_id: str, context: Context, *, enforce: bool, attempt: int, deleted: bool = False,
                  pending: Sequence[Change] = (), reason: str = "") -> dict[str, Any]:
    """A durable-retry queue message. `enforce` records whether the trigger that queued the work was allowed to
    write: the retry may narrow that (see `retry_may_write`), never widen it."""
    return {"registryId": registry_id, "deleted": deleted, "attempt": attempt, "enforce": enforce,
            "context": context.to_json(), "pending": [c.to_json() for c in pending], "reason": reason[:500]}


def retry_may_write(body: Any, settings: Settings) -> bool:
    """Whether a queued piece of work may write now: only when DLP_MODE is `enforce` at the time of the retry AND
    the trigger that queued it was allowed to write (`"enforce": true`). A message without that flag, or with
    anything but JSON true, may not. Switching the app to audit therefore stops every pending write at once."""
    return settings.mode == "enforce" and isinstance(body, dict) and body.get("enforce") is True


def target_from_retry(body: Any) -> Target | None:
    """A durable-retry queue message -> Target; None when the message is not ours or is damaged."""
    if not isinstance(body, dict) or not isinstance(body.get("registryId"), str):
        return None
    found = registry_of(body["registryId"])
    if found is None:
        return None
    raw_context = body.get("context") if isinstance(body.get("context"), dict) else {}
    fields = {k: v for k, v in raw_context.items() if k in Context.__dataclass_fields__ and isinstance(v, (str, int))}
    attempt = body.get("attempt") if isinstance(body.get("attempt"), int) else 1
    fields["attempt"] = max(0, attempt)
    try:
        context = Context(**fields)
    except TypeError:
        return None
    pending = tuple(Change(str(c.get("property")), str(c.get("old")), str(c.get("new")))
                    for c in body.get("pending") or [] if isinstance(c, dict)
                    and c.get("property") in (ARM_PATHS[P_EXPORT], "publicNetworkAccess"))
    return Target(found[0], context, deleted=bool(body.get("deleted")), pending=pending)


__all__ = ["Defer", "as_deferral", "defer", "retry_may_write", "retry_message", "target_from_retry"]
