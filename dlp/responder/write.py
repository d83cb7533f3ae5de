"""The apply stage, under the lease: the final plan with the breaker's count, the intent, one PATCH, verification.

The intent (the breaker's row) is written before the PATCH (it counts write attempts), so a write whose answer is
lost still counts; anything that goes wrong once the PATCH may have reached ARM is deferred with the planned changes
pending, so the durable retry verifies (and reports) what actually happened.

Export pipelines are not listed before the write: ARM refuses to disable exports while pipelines exist, so the PATCH
is the check. When ARM refuses a PATCH that disables exports, they are listed once; if any exist (or the listing is
refused), the export part is reported blocked and public access is written alone under the same intent. A 409 other
than a lock is answered by one fresh read and one more plan, also under the same intent. Both are rounds of the loop
in `write`, never a recursion.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from dlp.domain import exposure, provenance, remediation
from dlp.domain.intent import PENDING, Intent
from dlp.domain.model import (
    A_BLOCKED,
    A_ERROR,
    A_FAILED,
    A_GONE,
    A_REMEDIATED,
    ARM_PATHS,
    P_EXPORT,
    Evaluation,
    Outcome,
    Plan,
    Registry,
)
from dlp.domain.rules import evaluate
from dlp.inputs.sources import registry_from_resource
from dlp.responder.breaker import recheck_when_breaker_ends
from dlp.responder.deferral import Defer
from dlp.responder.intents import INTENT_SLACK_S
from dlp.responder.invocation import Invocation
from dlp.responder.lease import count_attempt
from dlp.responder.read import optimistic, read_registry, with_pipelines
from dlp.responder.windows import remediation_window

log = logging.getLogger("dlp.pipeline")

R_SCOPE_LOCKED = "scope-locked"
R_VERIFICATION = "verification-failed"
LRO_RESERVE_S = 1.0            # stop waiting for a slow PATCH this long before the deadline, then defer


@dataclass(frozen=True)
class _Round:
    """One plan-and-PATCH round: the registry as known, and why this round runs."""

    registry: Registry
    conflict_retry: bool = True     # a 409 may be answered by one fresh read
    listed: bool = False            # export pipelines were listed after a refusal: write public access alone


def write(invocation: Invocation, registry: Registry) -> Evaluation:
    """Plan under the lease and write; returns the outcome (a Defer leaves the intent pending for the retry)."""
    round_: _Round | None = _Round(registry)
    try:
        while True:
            assert round_ is not None
            outcome = _plan_and_apply(invocation, round_)
            if isinstance(outcome, Evaluation):
                return outcome
            round_ = outcome
    except Defer as deferred:
        deferred.intent = deferred.intent or invocation.intent   # the PATCH may have landed: the intent stays pending
        raise


def _plan_and_apply(invocation: Invocation, round_: _Round) -> Evaluation | _Round:
    registry, recent = round_.registry, invocation.recent
    assessment = evaluate(registry)
    planned = registry if round_.listed else optimistic(registry)
    plan = remediation.plan(evaluate(planned), invocation.policy, today=invocation.today,
                            recent_remediations=len(recent))
    callers = tuple(dict.fromkeys(r.caller for r in recent if r.caller))
    if not plan.writes:
        detail = plan.detail
        if plan.reason == remediation.R_BREAKER:
            detail = f"{detail.rstrip('.')}. {recheck_when_breaker_ends(invocation, registry.id)}"
        return invocation.done(Outcome(plan.action, plan.reason, detail, plan.changes), assessment,
                               tag_exemption=plan.tag_exemption, recent_callers=callers, intent=invocation.intent)
    if not invocation.intent:      # one breaker row (the intent) per remediation, whatever is retried in it
        invocation.intent = count_attempt(invocation, _intent(invocation, plan), assessment)
    unlisted = registry.export_pipelines is None and any(c.property == ARM_PATHS[P_EXPORT] for c in plan.changes)
    return _apply(invocation, round_, plan, assessment, callers, unlisted)


def _intent(invocation: Invocation, plan: Plan) -> Intent:
    """The intent of this remediation, with what is known at hand (no request) of the drift it reverts."""
    context = invocation.target.context
    opening = provenance.opening([c.property for c in plan.changes], (), context)
    return Intent(invocation.services.clock().isoformat(), context.caller, invocation.evaluation_id, plan.changes,
                  context.trigger, context.event_id, context.correlation_id, invocation.mode, PENDING,
                  time.time() + invocation.budget.remaining() + INTENT_SLACK_S,
                  opened_at=exposure.iso(opening.at), opened_by=opening.by)


def _apply(invocation: Invocation, round_: _Round, plan: Plan, assessment: Any, callers: tuple[str, ...],
           unlisted: bool) -> Evaluation | _Round:
    """The PATCH and its verification, once the intent is kept: an outcome, or the next round."""
    from azure.core.exceptions import HttpResponseError

    from dlp.azure.errors import classify

    registry, done, intent = round_.registry, invocation.done, invocation.intent
    try:
        result = invocation.services.arm.update_registry(registry.id, plan.patch_body(), reserve_s=LRO_RESERVE_S,
                                                         correlation_id=invocation.evaluation_id)   # = the intent's
    except HttpResponseError as exc:
        failure = classify(exc)
        if failure.status == 409 and failure.code.lower() == "scopelocked":
            return done(Outcome(A_BLOCKED, R_SCOPE_LOCKED,
                                f"a ReadOnly lock prevents the write ({failure.message}); remove it or exempt the registry",
                                plan.changes, failure.code), assessment, recent_callers=callers, intent=intent)
        pipelines = registry.export_pipelines
        if unlisted and _refusal(failure):
            pipelines = with_pipelines(invocation, registry).export_pipelines   # once; transient: deferred
            if pipelines is None or pipelines:
                log.info("%s %s on %s with export pipelines %s: writing public access alone", failure.status,
                         failure.code, registry.id, pipelines)
                return replace(round_, registry=replace(registry, export_pipelines=pipelines), listed=True)
        if failure.status == 409 and round_.conflict_retry:
            log.info("409 %s on %s: re-reading once", failure.code, registry.id)
            fresh = read_registry(invocation)
            if fresh is None:
                return done(Outcome(A_GONE, "not-found", "the registry no longer exists"))
            if pipelines is not None:
                fresh = replace(fresh, export_pipelines=pipelines)
            return _Round(fresh, conflict_retry=False)
        if failure.status == 404:
            return done(Outcome(A_GONE, "not-found", "the registry was deleted before the write"), assessment,
                        intent=intent)
        if failure.transient:
            raise Defer(failure.code, str(failure), plan.changes, assessment) from exc
        # 403: missing permission, an Azure Policy deny or a deny assignment: an error, never retried
        action = A_ERROR if failure.status in (401, 403) else A_FAILED
        return done(Outcome(action, failure.code, str(failure), plan.changes, failure.code), assessment,
                    recent_callers=callers, intent=intent)
    except Defer:
        raise
    except Exception as exc:          # timeout, dropped connection, budget: the PATCH may have landed
        failure = classify(exc)
        raise Defer(failure.code, str(failure), plan.changes, assessment) from exc
    return _verified(invocation, registry, plan, assessment, callers, unlisted, result)


def _verified(invocation: Invocation, registry: Registry, plan: Plan, assessment: Any, callers: tuple[str, ...],
              unlisted: bool, result: Any) -> Evaluation:
    """The state ARM returned for the write, checked against the plan."""
    done, intent = invocation.done, invocation.intent
    if not result.done:
        raise Defer("lro-pending", "the update was accepted but did not finish within the time budget", plan.changes,
                    assessment)
    after = registry_from_resource(result.registry or {}, "arm")
    missing = remediation.still_needed(plan, after)
    if missing:
        detail = "; ".join(f"{c.property} is still {c.old}" for c in missing)
        return done(Outcome(A_FAILED, R_VERIFICATION, f"ARM accepted the update but {detail}", plan.changes),
                    assessment, recent_callers=callers, intent=intent)
    reverted = ", ".join(f"{c.property} {c.old} -> {c.new}" for c in plan.changes)
    if unlisted:      # ARM disabled exports, which it refuses while export pipelines exist: there were none
        assessment = evaluate(replace(registry, export_pipelines=()))
    window = remediation_window(invocation, plan.changes)
    _name_opener(invocation, window)
    if plan.withheld:
        # the alert says both: what was closed, and what a human must do about the rest
        return done(Outcome(A_BLOCKED, plan.reason, f"reverted {reverted}; not written: {plan.detail}",
                            plan.changes + plan.withheld, applied=plan.changes), assessment, recent_callers=callers,
                    exposure=window, intent=intent)
    return done(Outcome(A_REMEDIATED, "", "reverted " + reverted, plan.changes), assessment, recent_callers=callers,
                exposure=window, intent=intent)


def _name_opener(invocation: Invocation, window: Any) -> None:
    """A re-check, a retry or the breaker's window-end re-check carries no caller: whoever opened the window it
    closed (change history's `changedBy`, ARM's attribution) is the caller its record and alert name."""
    context = invocation.target.context
    if not context.caller and window is not None and window.source == "change-history" and window.opened_by:
        invocation.target = replace(invocation.target,
                                    context=replace(context, caller=window.opened_by, caller_verified=True))


def _refusal(failure: Any) -> bool:
    """ARM refused the write as a whole: a 400/409, or a long-running operation that ended Failed (azure-core
    raises it with the poll's 2xx status)."""
    return failure.status in (400, 409) or (failure.status is not None and 200 <= failure.status < 300)


__all__ = ["LRO_RESERVE_S", "R_SCOPE_LOCKED", "R_VERIFICATION", "write"]
