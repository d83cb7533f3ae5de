"""Exposure windows from change history, recorded once and alerted: the delayed check and the sweep's pass.

Two paths see windows (dlp/domain/exposure.py computes them, pure):

* **the delayed check**: a write event by anyone but the responder that finds the registry compliant
  (`wants_check`) may hide a flip-and-restore: exports enabled, images copied, exports disabled, all
  before the event was handled. Change history shows such writes only after a lag (Azure: "less than
  five minutes"), so the event path puts a message of kind `exposure-check` on the durable retry queue,
  invisible for CHANGE_LAG_S + CHECK_MARGIN_S. Its handler (`run_check`) queries the registry's history
  since LOOKBACK_S before the event's time and records every closed window found.
* **the sweep** (`sweep_windows`): one change-history query over the sweep's scope since the previous
  sweep (less SWEEP_OVERLAP_S, 30 minutes, so a row that arrives later than Azure's five minutes is not missed),
  paged by 1,000.

Both record a window only after claiming its key (`Window.key`, derived from its closing change, so both
paths compute the same key) in Table storage; the claim is marked done after the record and the alert.
Order, and what a crash costs: claim -> record (Log Analytics, with its outbox) -> alert -> done. A crash
before "done" leaves the claim to the same owner (the queue message is redelivered with the same check ID)
or, after CLAIM_TTL, to anyone: the window is recorded again under the same EvaluationId (a uuid5 of its key,
so the queries' EvaluationId + RuleId de-duplication folds the rows) and alerted again: at least once.

Windows closed by the responder are not recorded here: its `remediated` record states them already
(dlp/responder/pipeline.py). Windows still open are not either: the registry is non-compliant now, and the
ordinary evaluation of it (event, sweep) records and remediates it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from dlp.domain import exposure, provenance
from dlp.domain.model import A_EXPOSURE, A_NONE, Context, Evaluation, Outcome, registry_key
from dlp.responder import history
from dlp.responder.history import LOOKBACK_S, RETENTION

log = logging.getLogger("dlp.timeline")

CHECK_KIND = "exposure-check"       # the `kind` of a delayed-check message on the durable retry queue
CHANGE_LAG_S = 300                  # Azure: change records "should be available in less than five minutes"
SWEEP_OVERLAP_S = 1800              # a sweep re-reads this much before where the last one ended: "should be" is no
                                    # guarantee, and the claims drop windows already recorded
CHECK_MARGIN_S = 120                # on top of the lag before the delayed check looks
CHECK_DELAY_S = CHANGE_LAG_S + CHECK_MARGIN_S
SCHEDULE_BUDGET_S = 2.0             # at most this much of an event's budget goes to queueing its checks
CHECK_BUDGET_S = 60.0               # one delayed check: a history query or two, the record, the alert
FIRST_SWEEP_LOOKBACK = timedelta(days=1)   # the first sweep (no cursor yet) looks back this far
_NAMESPACE = uuid.UUID("0b6f3e0e-6d7c-4c55-9a0e-2a2c1f5b7e17")


def wants_check(evaluation: Evaluation, responder: Iterable[str] = ()) -> bool:
    """A write event that found nothing to do: the registry may have been opened and closed again before we read
    it. The responder's own writes never get here (their events are skipped, dlp/responder/own_writes.py, by the correlation
    ID its PATCH sent), so an event that names the responder's identity and still got here is a write it did not
    make: checked like anyone's. (`responder` is kept for the callers; identities do not exempt.)"""
    context = evaluation.context
    nothing_new = evaluation.outcome.action == A_NONE or evaluation.outcome.reason == "verified-later"
    return context.trigger == "event" and nothing_new and evaluation.assessment is not None


def check_message(evaluation: Evaluation) -> dict[str, Any]:
    """The delayed check's queue message. `checkId` makes its claims its own across redeliveries."""
    return {"kind": CHECK_KIND, "checkId": str(uuid.uuid4()), "registryId": evaluation.registry_id,
            "eventTime": evaluation.context.event_time or evaluation.started_at,
            "context": evaluation.context.to_json()}


def schedule_checks(evaluations: Sequence[Evaluation], services: Any) -> int:
    """Put a delayed check on the queue for each evaluation that wants one. Never raises: a check that cannot
    be queued is left to the sweep, which queries the same history (logged)."""
    from dlp.azure.budget import Budget, remaining

    retry = services.retry
    wanted = [e for e in evaluations if wants_check(e, services.settings.responder_identities)]
    if retry is None or not wanted:
        return 0
    delay = getattr(retry, "check_delay_s", None)
    delay = CHECK_DELAY_S if delay is None else delay
    left = remaining()
    sent = 0
    # a hanging queue must not eat the time the record needs: the checks get a short budget of their own
    with Budget.of(SCHEDULE_BUDGET_S if left is None else max(0.0, min(SCHEDULE_BUDGET_S, left - 1.0))).active():
        for evaluation in wanted:
            try:
                retry.schedule(check_message(evaluation), delay)
                sent += 1
            except Exception as exc:
                log.warning("the exposure check of %s could not be queued (%s: %s); the next sweep looks at its "
                            "change history instead", evaluation.registry_id, type(exc).__name__, exc)
    return sent


def evaluation_of(window: exposure.Window, *, trigger: str, mode: str, started_at: str, attempt: int = 0
                  ) -> Evaluation:
    """An `exposure` evaluation of one closed window: its id follows from the window, so a window recorded twice
    (after a crash) has one EvaluationId."""
    record = exposure.as_exposure(window)
    context = Context(trigger=trigger, event_id=window.key, correlation_id=window.opened_correlation[:128],
                      caller=record.opened_by, event_time=record.opened_at, attempt=attempt)
    outcome = Outcome(A_EXPOSURE, window.closer, record.sentence)
    return Evaluation(str(uuid.uuid5(_NAMESPACE, window.key)), window.registry_id, context, mode, outcome,
                      None, started_at, 0.0, exposure=record)


def claim(windows: Iterable[exposure.Window], services: Any, owner: str) -> list[exposure.Window]:
    """The closed windows not closed by the responder that this owner may record now.

    Whether the responder closed one is provenance's answer, given when the history was read (`read_history`):
    `changedBy` naming its identity is not enough (a Contributor can attach the responder's user-assigned identity
    to a VM, and the Activity Log shows our correlation IDs to anyone who can read it). A close by the responder's
    identity that was not a write the responder made is recorded as a person's, and says so."""
    now = services.clock()
    responder = history.responder_of(services)
    mine = []
    for found in windows:
        if not found.closed or found.closer == exposure.CLOSED_BY_RESPONDER:
            continue
        window = found
        if found.closer == exposure.CLOSED_BY_PERSON and responder.named(found.closed_by):
            window = replace(found, closed_by=f"{found.closed_by} (the responder's identity, not a write the "
                                              "responder made)")
        if services.state.claim_exposure(window.registry_id, window.key, owner, now):
            mine.append(window)
    return mine


def done(windows: Iterable[exposure.Window], services: Any) -> None:
    """Mark windows recorded and alerted. A failure here only means they may be recorded once more."""
    for window in windows:
        try:
            services.state.finish_exposure(window.registry_id, window.key)
        except Exception as exc:
            log.warning("exposure window %s of %s recorded but not marked (%s); it may be recorded again",
                        window.key, window.registry_id, exc)


def run_check(body: dict[str, Any], services: Any) -> list[Evaluation]:
    """The durable-retry handler of an `exposure-check` message: record and alert every closed window of the
    registry since shortly before the event. Raises when the history cannot be read or the record cannot be
    kept, so the queue delivers the message again (the host moves it to the poison queue after
    maxDequeueCount)."""
    from dlp.azure.budget import Budget

    with Budget.of(CHECK_BUDGET_S).active():
        return _run_check(body, services)


def _run_check(body: dict[str, Any], services: Any) -> list[Evaluation]:
    from dlp.ids import registry_of
    from dlp.responder.finish import finish

    found = registry_of(body.get("registryId")) if isinstance(body.get("registryId"), str) else None
    owner = body.get("checkId")
    if found is None or not isinstance(owner, str) or not owner:
        log.error("exposure-check message without a registry ID or check ID; dropped")
        return []
    registry_id = found[0]
    at = exposure.parse_time(body.get("eventTime")) or services.clock()
    since = max(at - timedelta(seconds=LOOKBACK_S), services.clock() - RETENTION)
    found = history.read_history(services, since, registry_ids=[registry_id]).get(registry_key(registry_id),
                                                                                  history.History())
    mine = claim(found.windows, services, owner)
    if not mine:
        return []
    mode = services.settings.mode
    started = services.clock().isoformat()
    evaluations = [evaluation_of(w, trigger="retry", mode=mode, started_at=started) for w in mine]
    evaluations = finish(evaluations, services)          # as recorded: with what is known of their pulls
    done(mine, services)
    log.warning("exposure check of %s: %d window(s) recorded", registry_id, len(evaluations))
    return evaluations


def sweep_windows(services: Any, listing: Any, started: datetime) -> tuple[dict[str, history.History], datetime]:
    """Change history of the sweep's scope since the previous sweep (less the lag): windows per registry key, and
    the cursor to store once this sweep's record is kept. Registries outside the scopes are dropped."""
    from dlp.domain import remediation

    cursor = exposure.parse_time(services.state.exposure_cursor())
    since = (cursor - timedelta(seconds=SWEEP_OVERLAP_S)) if cursor else started - FIRST_SWEEP_LOOKBACK
    since = max(since, started - RETENTION)
    found = history.read_history(services, since, subscriptions=listing.subscriptions, resource_groups=listing.resource_groups)
    kept = {key: history for key, history in found.items()
            if history.windows and remediation.in_scopes(history.windows[0].registry_id, listing.scopes)}
    return kept, started


def with_history(evaluation: Evaluation, found: history.History | None, now: datetime) -> Evaluation:
    """A remediation's window from change history when it has the opening write (provenance's opening of the
    properties the responder just changed), else the evaluation as it was (its event-time window, if any)."""
    if evaluation.outcome.action != "remediated" or found is None:
        return evaluation
    properties = [c.property for c in evaluation.outcome.changes]
    first = provenance.opening(properties, found.windows, Context()).window
    if first is None:
        return evaluation
    closed = exposure.Window(first.registry_id, first.property, first.value, first.opened_at, first.opened_by,
                             now, "", exposure.CLOSED_BY_RESPONDER, first.opened_correlation)
    return replace(evaluation, exposure=replace(exposure.as_exposure(closed), key=""))


__all__ = [
    "CHECK_DELAY_S",
    "CHECK_KIND",
    "claim",
    "done",
    "evaluation_of",
    "run_check",
    "schedule_checks",
    "sweep_windows",
    "wants_check",
    "with_history",
]
