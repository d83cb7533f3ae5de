"""Remediation intents: the breaker row written before every PATCH, resolved once the write's outcome is recorded.

A pending intent is the durable proof that a write may have landed. Its writer records it; when the writer could
not (it died after the PATCH, recording failed, the write was deferred), whoever finds it after the writer ended (a
redelivery, the durable retry, the outbox timer) settles it: provenance (dlp.domain.provenance.landing) says whether
it landed, from change history first. Landed: it is recorded `remediated` (`verified-later`) under the intent's
evaluation id, so one write is one record and one alert whoever records it, with the window it closed. Not landed:
`lapsed`. Not known yet (history does not cover it, the registry reads drifted): left pending and asked again at the
next tick, never lapsed because of a later read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain import exposure, provenance, remediation
from dlp.domain.intent import LAPSED, Intent
from dlp.domain.model import A_REMEDIATED, Change, Evaluation, Outcome, Plan, Registry
from dlp.responder import history
from dlp.responder.history import LOOKBACK_S
from dlp.responder.invocation import Invocation
from dlp.responder.services import Services

log = logging.getLogger("dlp.pipeline")

RELEASE_BUDGET_S = 2.0         # giving a lease or an intent back may run past a spent budget by this much
INTENT_SLACK_S = 10.0          # an intent is orphaned this long after its invocation's budget ended
HISTORY_BUDGET_S = 5.0         # settling orphaned intents reads change history within this
# Who looks for a pending intent when the registry is compliant (one partition query): the event and retry
# paths and the timer. Not the sweep nor a scope re-check (a query per registry); the timer finds those intents.
INTENT_TRIGGERS = ("event", "retry", "drain")


def resolve_intent(services: Services, registry_id: str, row_key: str, status: str) -> None:
    """Mark an intent resolved; never raises (a pending intent left behind is found again, and its outcome
    carries the same evaluation id, so at worst it is recorded twice under one id)."""
    try:
        with Budget.of(RELEASE_BUDGET_S).active():
            services.state.resolve_intent(registry_id, row_key, status)
    except Exception:
        log.warning("remediation intent %s of %s not marked %s", row_key, registry_id, status, exc_info=True)


def orphan_intent(services: Services, registry_id: str, row_key: str) -> None:
    try:
        with Budget.of(RELEASE_BUDGET_S).active():
            services.state.orphan_intent(registry_id, row_key)
    except Exception:       # then it is taken once its writer's budget is over
        log.warning("remediation intent %s of %s not handed over", row_key, registry_id, exc_info=True)


def _unsettled(invocation: Invocation, compliant: bool) -> list[Intent]:
    """The intents this evaluation settles: those of a deferred write it retries (`target.pending`), or, for the
    timer always and for events and retries in enforce mode when the registry reads compliant, those whose writer's
    budget ended. A live writer's intent is left to it; a drifted registry's orphans on the event path are left to
    the timer (no query in the drift window)."""
    target, services = invocation.target, invocation.services
    trigger = target.context.trigger
    looks = trigger == "drain" or (compliant and trigger in INTENT_TRIGGERS and services.settings.mode == "enforce")
    if not (target.pending or looks):
        return []
    intents = services.state.pending_intents(invocation.registry_id)
    now = time.time()
    # A deferred writer hands its intent over (dlp.responder.deferral: `Until` set to then), so the retry takes it
    # like any orphan; a live writer's intent is never taken.
    return [i for i in intents if i.changes and i.until < now]


def settle(invocation: Invocation, registry: Registry, assessment: Any) -> list[Evaluation]:
    """Settle the intents a dead or deferred writer left: the `remediated` (`verified-later`) evaluations of every
    one that landed (each its own write, record and window: none hides another), oldest first, after marking those
    that did not `lapsed`. One not known yet is stamped, so the timer's next tick asks the others first."""
    compliant = not remediation.needed_changes(assessment)
    intents = _unsettled(invocation, compliant)
    if not intents:
        return []
    services = invocation.services
    found = _history(invocation, intents)
    records = list(found.records) if found is not None else None
    responder = services.identity.responder() if services.identity is not None else provenance.Responder()
    now = services.clock()
    written = [intent.written for intent in intents if intent.written is not None]
    every = services.state.remediations_since(invocation.registry_id, min(written) - provenance.SKEW) if written else []
    settled: list[Evaluation] = []
    for intent in sorted(intents, key=lambda i: i.when):
        verdict = provenance.landing(intent, records, responder, now, later=every,
                                     in_effect_now=not _not_in_effect(intent.changes, registry))
        if verdict.landed is None:
            log.info("remediation intent %s of %s: not known yet whether it landed (change history does not cover "
                     "it yet); asked again later", intent.row_key, invocation.registry_id)
            _looked(services, invocation.registry_id, intent.row_key)
        elif not verdict.landed:
            resolve_intent(services, invocation.registry_id, intent.row_key, LAPSED)
            log.warning("remediation intent %s of %s lapsed: change history covers its time and shows no write of "
                        "it", intent.row_key, invocation.registry_id)
        else:
            how = ("change history shows the write" if verdict.evidence == provenance.BY_HISTORY
                   else "the write is in effect")
            settled.append(invocation.done(
                Outcome(A_REMEDIATED, "verified-later", f"{how}; its invocation did not record it (it died or "
                                                        "recording failed)", intent.changes),
                assessment, evaluation_id=intent.evaluation_id, intent=intent.row_key,
                exposure=_closed_window(intent, verdict, found, now)))
    return settled


def _looked(services: Services, registry_id: str, row_key: str) -> None:
    """Stamp an intent that could not be settled yet, so the outbox timer asks the others first (never raises)."""
    try:
        with Budget.of(RELEASE_BUDGET_S).active():
            services.state.note_look(registry_id, row_key, time.time())
    except Exception:
        log.warning("remediation intent %s of %s not stamped", row_key, registry_id, exc_info=True)


def _history(invocation: Invocation, intents: Sequence[Intent]) -> Any:
    """The registry's change history since shortly before the oldest intent (None when it cannot be read)."""
    oldest = min((i.written for i in intents if i.written is not None), default=invocation.services.clock())
    try:
        with Budget.of(min(HISTORY_BUDGET_S, max(0.5, invocation.budget.remaining() - 2.0))).active():
            found = history.read_history(invocation.services, oldest - timedelta(seconds=LOOKBACK_S),
                                          registry_ids=[invocation.registry_id])
    except Exception as exc:
        log.warning("change history of %s unreadable (%s): its intents are settled from the registry's state",
                    invocation.registry_id, exc)
        return None
    return next(iter(found.values()), history.History())


def _closed_window(intent: Intent, verdict: provenance.Landing, found: Any, now: datetime) -> Any:
    """The window the intent's write closed: change history's (opened by whom, closed by our write), else from
    what the intent knew of the drift it reverted."""
    opened = exposure.parse_time(intent.opened_at)
    if found is not None:
        closed = [w for w in found.windows if w.closer == exposure.CLOSED_BY_RESPONDER
                  and w.closed_correlation.lower() == intent.evaluation_id.lower()]
        if closed:
            window = min(closed, key=lambda w: w.closed_at or verdict.at)
            if window.opened_at is None and opened is not None:    # opened before the history: the event knew
                window = replace(window, opened_at=opened, opened_by=intent.opened_by or intent.caller)
            return exposure.as_exposure(window)
    return exposure.remediation_exposure(exposure.iso(opened) if opened else "", intent.opened_by or intent.caller,
                                         [c.property for c in intent.changes], verdict.at or now)


def _not_in_effect(changes: Sequence[Change], registry: Registry) -> tuple[Change, ...]:
    return remediation.still_needed(Plan("remediate", changes=tuple(changes)), registry)


__all__ = ["INTENT_SLACK_S", "INTENT_TRIGGERS", "RELEASE_BUDGET_S", "orphan_intent", "resolve_intent", "settle"]
