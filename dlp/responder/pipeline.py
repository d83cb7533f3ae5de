"""The flow every trigger ends in: target -> snapshot -> evaluate -> plan -> apply -> record -> notify.

Trigger-agnostic: Event Grid, HTTP re-check, sweep, durable retry and CLI all call `run`.
Adapters come in through `Services` (built once at the composition root, dlp.runtime).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain import remediation
from dlp.domain.model import (
    A_BLOCKED,
    A_DEFERRED,
    A_ERROR,
    A_FAILED,
    A_GONE,
    A_NONE,
    A_REMEDIATED,
    ARM_PATHS,
    P_EXPORT,
    Change,
    Context,
    Evaluation,
    Outcome,
    Plan,
    Registry,
    Target,
)
from dlp.domain.rules import evaluate
from dlp.inputs.sources import registry_from_resource
from dlp.responder.finish import finish
from dlp.responder.intents import RELEASE_BUDGET_S, resolve_intent
from dlp.responder.services import Notifier, Recorder, Services
from dlp.settings import Settings

log = logging.getLogger("dlp.pipeline")

UPDATING_WAIT_S = 1.0          # re-read interval while provisioningState is Updating
UPDATING_MAX_WAIT_S = 6.0      # then hand over to the durable retry
R_SCOPE_LOCKED = "scope-locked"
R_VERIFICATION = "verification-failed"
R_RETRIES_EXHAUSTED = "retries-exhausted"
R_LEASE_BUSY = "lease-busy"
LRO_RESERVE_S = 1.0            # stop waiting for a slow PATCH this long before the deadline, then defer
# A lease taken during the read: a crashed reader blocks writers this long at most. Long enough that a read slowed
# by a loaded host (a second seen under CI load) does not lose it to another instance and defer a fix for nothing.
SPECULATIVE_TTL_S = 5.0
LEASE_SLACK_S = 10.0           # a lease outlives its budget by this much (no poller or thread runs past the budget)
INTENT_SLACK_S = 10.0          # an intent is orphaned this long after its invocation's budget ended
HANDOVER_RESERVE_S = 1.0       # kept back from an evaluation's Azure calls to hand it to the durable retry
BREAKER_RECHECK_MARGIN = timedelta(seconds=60)   # after the breaker's window ends: the re-check then sees it open

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


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


def run(targets: Sequence[Target], services: Services, *, enforce: bool | None = None,
        budget: Budget | None = None, digest: bool = False, record: bool = True) -> list[Evaluation]:
    """Evaluate targets within one budget, then record and notify."""
    from dlp.responder import timeline

    budget = budget or Budget.of(services.settings.time_budget_s)
    with budget.active():
        targets = [target for target in targets if not _own_write(target, services)]
        if record and len(targets) == 1 and targets[0].context.trigger == "event" and not targets[0].pending:
            return [_coalesced(targets[0], services, budget, enforce, digest)]
        evaluations = [evaluate_target(target, services, budget, enforce=enforce) for target in targets]
        if record:
            timeline.schedule_checks(evaluations, services)     # flip-and-restore: a delayed look at the history
            evaluations = finish(evaluations, services, digest=digest)     # as recorded (pulls of closed windows)
    return evaluations


def _coalesced(target: Target, services: Services, budget: Budget, enforce: bool | None, digest: bool) -> Evaluation:
    """An event's evaluation, shared with the other events of its registry that arrive before its read starts
    (dlp.responder.bursts): one read, at most one PATCH, one record and one alert naming every caller."""

    def evaluate_round(targets: list[Target]) -> Evaluation:
        first = replace(targets[0], deleted=any(t.deleted for t in targets))
        evaluation = evaluate_target(first, services, budget, enforce=enforce)
        if len(targets) > 1:
            log.info("one evaluation of %s answered %d events", first.registry_id, len(targets))
            evaluation = replace(evaluation, answered=tuple(t.context for t in targets[1:]))
        return evaluation

    def finish_round(evaluation: Evaluation) -> Evaluation:
        from dlp.responder import timeline

        timeline.schedule_checks([evaluation], services)     # flip-and-restore: a delayed look at the history
        return finish([evaluation], services, digest=digest)[0]

    return services.bursts.run(target, enforce, evaluate=evaluate_round, finish=finish_round,
                               wait_s=budget.remaining() + RELEASE_BUDGET_S)


def _own_write(target: Target, services: Services) -> bool:
    """The event of the responder's own write: recorded at debug level only (dlp.responder.own_writes says why)."""
    from dlp.responder.own_writes import is_own_write

    if not is_own_write(target.context, target.registry_id, services.identity, services.state, services.clock()):
        return False
    log.debug("own write: event %s on %s (app %s, object %s) needs no evaluation", target.context.event_id,
              target.registry_id, target.context.caller_app_id or "-", target.context.caller_object_id or "-")
    return True


def evaluate_target(target: Target, services: Services, budget: Budget, *, enforce: bool | None = None) -> Evaluation:
    settings = services.settings
    enforce = settings.mode == "enforce" if enforce is None else enforce
    warnings = remediation.exemption_lookalikes(target.registry_id, settings.exemptions)
    done = _Done(str(uuid.uuid4()), target, "enforce" if enforce else "audit", services.clock().isoformat(),
                 time.monotonic(), warnings)

    # The evaluation's Azure calls run on a shorter deadline, so that a dependency that hangs until the deadline
    # still leaves time to hand the work over (below, back on the caller's deadline) and to record it. (Its own
    # waits, for an Updating registry or a busy lease, keep larger reserves of the whole budget.)
    if not remediation.in_scopes(target.registry_id, settings.scopes):
        # never read, never written: the identity may not even be allowed to read it. Recorded at debug level
        # and never alerted (dlp.outputs.recording, dlp.outputs.alerts.states), unless the ID only just misses a scope.
        lookalike = remediation.scope_lookalike(target.registry_id, settings.scopes)
        if lookalike:
            log.warning("look-alike of a scope: %s", lookalike)
            return done(Outcome(A_BLOCKED, remediation.R_SCOPE_LOOKALIKE, lookalike))
        return done(Outcome(A_BLOCKED, remediation.R_OUT_OF_SCOPE,
                            "the registry is outside DLP_SCOPES; the responder does not read or write it"))
    for warning in warnings:
        log.warning("look-alike of an exemption: %s", warning)
    try:
        with Budget(budget.deadline - HANDOVER_RESERVE_S).active():
            return _evaluate(target, services, budget, enforce, done)
    except Defer as deferred:
        return _defer(target, services, deferred, done, enforce)
    except Exception as exc:
        from dlp.azure.errors import classify

        failure = classify(exc)
        if failure.transient:
            return _defer(target, services, Defer(failure.code, str(failure), target.pending), done, enforce)
        log.warning("evaluation of %s failed: %s", target.registry_id, failure)
        return done(Outcome(A_ERROR, failure.code, str(failure), error_code=failure.code))


@dataclass(frozen=True)
class _Done:
    """Makes the pass's Evaluation: `done(outcome, assessment, **fields)`. The evaluation id is known before the
    end, because the remediation intent written before the PATCH carries it (the `remediated` record of that
    write has this id, whoever records it)."""

    evaluation_id: str
    target: Target
    mode: str
    started: str
    t0: float
    warnings: tuple[str, ...] = ()

    def __call__(self, outcome: Outcome, assessment: Any = None, *, evaluation_id: str = "", **extra: Any) -> Evaluation:
        return Evaluation(evaluation_id or self.evaluation_id, self.target.registry_id, self.target.context, self.mode,
                          outcome, assessment, self.started, round((time.monotonic() - self.t0) * 1000, 1),
                          warnings=self.warnings, **extra)


def _read(target: Target, services: Services, budget: Budget) -> Registry | None:
    """GET the registry; while an update is running, re-read briefly, then defer."""
    waited = 0.0
    while True:
        raw = services.arm.get_registry(target.registry_id)
        if raw is None:
            return None
        registry = registry_from_resource(raw, "arm")
        if registry.provisioning_state.lower() in ("succeeded", "failed", "canceled"):
            return registry
        if waited >= UPDATING_MAX_WAIT_S or budget.remaining() < UPDATING_WAIT_S + 2:
            raise Defer(remediation.R_UPDATING, f"registry is {registry.provisioning_state}", target.pending,
                        evaluate(registry))
        time.sleep(UPDATING_WAIT_S)
        waited += UPDATING_WAIT_S


def _with_pipelines(registry: Registry, services: Services) -> Registry:
    """Look up export pipelines only when exports must be disabled on a Premium registry.

    A listing ARM refuses (403, an api-version it does not serve) leaves them unknown: the export write
    is then blocked by its guard, while a public-access fix can still go ahead. Transient failures defer."""
    from azure.core.exceptions import HttpResponseError

    from dlp.azure.errors import classify

    if registry.exports_disabled or not registry.premium or registry.export_pipelines is not None:
        return registry
    try:
        return replace(registry, export_pipelines=services.arm.list_export_pipelines(registry.id))
    except Exception as exc:
        deferred = _as_deferral(exc, evaluate(registry))
        if deferred is not exc:   # transient: deferred with what was read, so a known drift alerts at once
            raise deferred from exc
        if not isinstance(exc, HttpResponseError):
            raise
        failure = classify(exc)
        log.warning("export pipelines of %s could not be listed: %s", registry.id, failure)
        return registry


def _background(fn: Callable[[], Any]) -> Future:
    """Run `fn` on a worker thread with this thread's context (the budget's deadline travels along)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dlp-bg")
    return _EXECUTOR.submit(contextvars.copy_context().run, fn)


@dataclass(frozen=True)
class _Claim:
    """The right to write a registry now, and the breaker's view of its last hour."""

    lease: Any
    recent: tuple[Any, ...]


def _claim(services: Services, registry_id: str, budget: Budget, *, wait: bool = True) -> _Claim | None:
    """The lease and the breaker's rows; `wait=False`: one attempt only (None when someone holds it), for
    SPECULATIVE_TTL_S (extended before a write, `_count_attempt`)."""
    wait_s = max(0.0, budget.remaining() - 3.0) if wait else 0.0
    ttl_s = budget.remaining() + LEASE_SLACK_S if wait else SPECULATIVE_TTL_S
    lease = services.state.acquire(registry_id, ttl_s=ttl_s, wait_s=wait_s)
    if lease is None:
        return None
    try:
        recent = tuple(services.state.recent_remediations(registry_id, services.clock()))
    except BaseException:
        _release(services, lease)
        raise
    return _Claim(lease, recent)


def _evaluate(target: Target, services: Services, budget: Budget, enforce: bool,
              done: Callable[..., Evaluation]) -> Evaluation:
    # Enforce mode: one attempt at the lease (with the breaker's rows) runs while ARM answers the read, so a
    # drift costs no round trip for it. Given back once the outcome is known when nothing is written.
    claim = _background(lambda: _claim(services, target.registry_id, budget, wait=False)) if enforce else None
    keep = False
    try:
        registry = _read(target, services, budget)
        if registry is None:
            return done(Outcome(A_GONE, "deleted" if target.deleted else "not-found",
                                "the registry no longer exists"))
        policy = services.settings.policy(enforce=enforce)
        today = services.clock().date()
        assessment = evaluate(registry)
        if not remediation.needed_changes(assessment):
            found = _verified_later(target, services, registry, assessment, done)
            if found is not None:
                return found
        if not remediation.plan(evaluate(_optimistic(registry)), policy, today=today).writes:
            # Nothing will be written: list the export pipelines (when they matter) so the record names them.
            if remediation.needed_changes(assessment):
                registry = _with_pipelines(registry, services)
                assessment = evaluate(registry)
            plan = remediation.plan(assessment, policy, today=today)
            return done(Outcome(plan.action, plan.reason, plan.detail, plan.changes), assessment,
                        tag_exemption=plan.tag_exemption)
        keep = True
    finally:
        if not keep:
            _drop(services, claim)     # after `done`: not part of the evaluation's time

    try:
        granted = claim.result() if claim is not None else None
        busy = granted is None
        if granted is None:     # someone held it while we read: wait for it now, then re-read below
            granted = _claim(services, registry.id, budget)
    except Exception as exc:
        deferred = _as_deferral(exc, assessment)
        if deferred is exc:
            raise
        raise deferred from exc
    if granted is None:
        raise Defer(R_LEASE_BUSY, "another invocation is remediating this registry", assessment=assessment)
    held = _Held(granted.lease, short=not busy)
    try:
        if busy or granted.lease.waited or granted.recent:
            # Another writer may have changed it since our read: the lease was busy, or the registry was
            # written in the breaker window (its row is written before its PATCH, so a read taken after the row
            # can still predate the write). Decide from a fresh read; clocks of other instances are not compared.
            registry = _read(target, services, budget)
            if registry is None:
                return done(Outcome(A_GONE, "not-found", "the registry no longer exists"))
        return _decide_and_apply(target, services, budget, done, registry, policy, today, granted.recent, held,
                                 conflict_retry=True)
    except Exception as exc:
        deferred = _as_deferral(exc, assessment)
        if deferred is exc:
            raise
        raise deferred from exc
    finally:
        _release(services, held.lease)


@dataclass
class _Held:
    """The lease an evaluation holds; a new value once extended (its ETag changes)."""

    lease: Any
    short: bool          # taken during the read for SPECULATIVE_TTL_S: extend it before the write


def _count_attempt(services: Services, held: _Held, registry_id: str, intent: Any, budget: Budget,
                   assessment: Any = None) -> str:
    """The breaker row (before the PATCH: it counts write attempts; it is also the remediation's intent) and, at
    the same time (no extra round trip), the speculative lease extended to cover the write. Lost meanwhile (it
    expired and another instance took it): nothing is written, the durable retry comes back. Returns the intent's
    row key."""
    extension = (_background(lambda: services.state.extend(held.lease, ttl_s=budget.remaining() + LEASE_SLACK_S))
                 if held.short else None)
    try:
        row = services.state.record_remediation(registry_id, intent)
    except BaseException:
        if extension is not None:
            _settle(extension, held)
        raise
    if extension is not None:
        extended = extension.result()
        if extended is None:
            resolve_intent(services, registry_id, row, "not-applied")     # nothing was written
            raise Defer(R_LEASE_BUSY, "the lease expired during the read and another instance took it",
                        assessment=assessment)
        held.lease, held.short = extended, False
    return row


def _settle(extension: Future, held: _Held) -> None:
    """Keep the extended lease if the extension got through, so that it can be given back (never raises)."""
    try:
        extended = extension.result()
    except Exception:
        return
    if extended is not None:
        held.lease, held.short = extended, False


def _optimistic(registry: Registry) -> Registry:
    """The registry as planning sees it before any listing: no export pipelines. ARM refuses to disable exports
    while pipelines exist, so the write itself is the check; only a refusal makes us list them."""
    return registry if registry.export_pipelines is not None else replace(registry, export_pipelines=())


# Who looks for a pending intent when the registry is compliant (one partition query): the event and retry
# paths and the timer. Not the sweep nor a scope re-check (a query per registry); the timer finds those intents.
INTENT_TRIGGERS = ("event", "retry", "drain")


def _verified_later(target: Target, services: Services, registry: Registry, assessment: Any,
                    done: Callable[..., Evaluation]) -> Evaluation | None:
    """The registry shows no drift. A remediation whose outcome was never recorded (its invocation died after
    the PATCH, or recording failed, or it was deferred once the PATCH may have landed) is recorded now, as
    `remediated` (`verified-later`) with the intent's evaluation id, so it is one record and one alert whoever
    finds it. None: nothing pending, an ordinary evaluation follows."""
    intents: list[Any] = []
    # In audit mode (the default) events write nothing, so they do not look: the timer finds what an earlier
    # enforce period left behind.
    looks = target.context.trigger == "drain" or (target.context.trigger in INTENT_TRIGGERS
                                                  and services.settings.mode == "enforce")
    if target.pending or looks:
        intents = services.state.pending_intents(registry.id)
    # A live writer records its own intent: only a retry of a deferred write (its writer has ended) or an intent
    # whose writer's budget is over (orphaned) is taken; a concurrent event sees an ordinary compliant registry.
    now = time.time()
    intents = [i for i in intents if target.pending or i.until < now]
    applied = [i for i in intents if i.changes and not _not_in_effect(i.changes, registry)]
    if not applied:         # a retry's pending write already recorded by another, or never made: ordinary
        return None
    intent = max(applied, key=lambda i: i.when)
    for other in intents:
        if other is not intent:
            resolve_intent(services, registry.id, other.row_key, "superseded")
    return done(Outcome(A_REMEDIATED, "verified-later",
                        "the write is in effect; its invocation did not record it (it died or recording failed)",
                        intent.changes), assessment, evaluation_id=intent.evaluation_id, intent=intent.row_key,
                exposure=_exposed(target, services, intent.changes))


def _not_in_effect(changes: Sequence[Change], registry: Registry) -> tuple[Change, ...]:
    return remediation.still_needed(Plan("remediate", changes=tuple(changes)), registry)


def _as_deferral(exc: Exception, assessment: Any) -> Exception:
    """A failure once the registry was read: a transient one becomes a `Defer` that carries what was read (so a
    known drift alerts at once as "remediation pending"); a `Defer` without it gets it; others stay as they are."""
    from dlp.azure.errors import classify

    if isinstance(exc, Defer):
        if exc.assessment is None:
            exc.assessment = assessment
        return exc
    failure = classify(exc)
    return Defer(failure.code, str(failure), assessment=assessment) if failure.transient else exc


def _release(services: Services, lease: Any) -> None:
    """Give a lease back even when the invocation's budget is spent (its own short budget); never raises:
    a lease that cannot be deleted expires on its own."""
    try:
        with Budget.of(RELEASE_BUDGET_S).active():
            services.state.release(lease)
    except Exception:
        log.warning("could not release the lease on %s; it expires on its own", lease.registry_id, exc_info=True)


def _drop(services: Services, claim: Future | None) -> None:
    """Give back a lease taken speculatively (one attempt, so never a long wait; never raises: the lease also
    expires on its own)."""
    if claim is None:
        return
    try:
        granted = claim.result()
    except Exception:
        log.warning("a speculative lease could not be taken; nothing to give back", exc_info=True)
        return
    if granted is not None:
        _release(services, granted.lease)


def _refusal(failure: Any) -> bool:
    """ARM refused the write as a whole: a 400/409, or a long-running operation that ended Failed (azure-core
    raises it with the poll's 2xx status)."""
    return failure.status in (400, 409) or (failure.status is not None and 200 <= failure.status < 300)


def _decide_and_apply(target: Target, services: Services, budget: Budget, done: Callable[..., Evaluation],
                      registry: Registry, policy: remediation.Policy, today: Any, recent: tuple[Any, ...],
                      held: _Held, *, conflict_retry: bool, listed: bool = False,
                      counted: bool = False, intent: str = "") -> Evaluation:
    """Under the lease: final plan with the breaker count, the breaker row, the PATCH, verification.

    The breaker row is written before the PATCH (it counts write attempts), so a write whose answer is
    lost still counts; anything that goes wrong once the PATCH may have reached ARM is deferred with the
    planned changes pending, so the durable retry verifies (and reports) what actually happened.

    Export pipelines are not listed before the write (`_optimistic`): when ARM refuses a PATCH that disables
    exports, they are listed once; if any exist (or the listing is refused), the export part is reported blocked
    and public access is written alone (`listed`: they were listed after a refusal, so this remediation's breaker
    row is already written and an unknown listing stays unknown).
    """
    from dlp.azure.state import INTENT_PENDING, Remediation

    assessment = evaluate(registry)
    planned = registry if listed else _optimistic(registry)
    plan = remediation.plan(evaluate(planned), policy, today=today, recent_remediations=len(recent))
    callers = tuple(dict.fromkeys(r.caller for r in recent if r.caller))
    if not plan.writes:
        detail = plan.detail
        if plan.reason == remediation.R_BREAKER:
            detail = f"{detail.rstrip('.')}. {_recheck_when_breaker_ends(target, services, registry.id, recent, policy)}"
        return done(Outcome(plan.action, plan.reason, detail, plan.changes), assessment,
                    tag_exemption=plan.tag_exemption, recent_callers=callers)
    unlisted = registry.export_pipelines is None and any(c.property == ARM_PATHS[P_EXPORT] for c in plan.changes)
    if not (listed or counted):      # one breaker row (the intent) per remediation, whatever is retried in it
        for lapsed in (r for r in recent if r.status == INTENT_PENDING and r.until < time.time()):
            # Orphaned, and under the lease the registry is still drifted: that write is not in effect (it never
            # landed, or was undone before anyone confirmed it). A live writer's intent is left to it.
            resolve_intent(services, registry.id, lapsed.row_key, "lapsed")
        intent = _count_attempt(services, held, registry.id, Remediation(
            services.clock().isoformat(), target.context.caller, done.evaluation_id, plan.changes,
            target.context.trigger, target.context.event_id, target.context.correlation_id, done.mode,
            INTENT_PENDING, time.time() + budget.remaining() + INTENT_SLACK_S), budget, assessment)
    try:
        return _apply(target, services, budget, done, registry, policy, today, recent, held, plan, assessment,
                      callers, unlisted, intent, conflict_retry=conflict_retry)
    except Defer as deferred:
        deferred.intent = deferred.intent or intent   # the PATCH may have landed: the intent stays pending
        raise


def _apply(target: Target, services: Services, budget: Budget, done: Callable[..., Evaluation], registry: Registry,
           policy: remediation.Policy, today: Any, recent: tuple[Any, ...], held: _Held, plan: Plan, assessment: Any,
           callers: tuple[str, ...], unlisted: bool, intent: str, *, conflict_retry: bool) -> Evaluation:
    """The PATCH and its verification, once the intent is kept. Every outcome carries the intent, so recording
    it resolves the intent; a Defer leaves it pending."""
    from azure.core.exceptions import HttpResponseError

    from dlp.azure.errors import classify

    try:
        result = services.arm.update_registry(registry.id, plan.patch_body(), reserve_s=LRO_RESERVE_S,
                                              correlation_id=done.evaluation_id)   # = the intent's id (own writes)
    except HttpResponseError as exc:
        failure = classify(exc)
        if failure.status == 409 and failure.code.lower() == "scopelocked":
            return done(Outcome(A_BLOCKED, R_SCOPE_LOCKED,
                                f"a ReadOnly lock prevents the write ({failure.message}); remove it or exempt the registry",
                                plan.changes, failure.code), assessment, recent_callers=callers, intent=intent)
        pipelines = registry.export_pipelines
        if unlisted and _refusal(failure):
            pipelines = _with_pipelines(registry, services).export_pipelines   # once; transient: deferred
            if pipelines is None or pipelines:
                log.info("%s %s on %s with export pipelines %s: writing public access alone", failure.status,
                         failure.code, registry.id, pipelines)
                return _decide_and_apply(target, services, budget, done, replace(registry, export_pipelines=pipelines),
                                         policy, today, recent, held, conflict_retry=conflict_retry, listed=True,
                                         intent=intent)
        if failure.status == 409 and conflict_retry:
            log.info("409 %s on %s: re-reading once", failure.code, registry.id)
            fresh = _read(target, services, budget)
            if fresh is None:
                return done(Outcome(A_GONE, "not-found", "the registry no longer exists"))
            if pipelines is not None:
                fresh = replace(fresh, export_pipelines=pipelines)
            return _decide_and_apply(target, services, budget, done, fresh, policy, today, recent, held,
                                     conflict_retry=False, counted=True, intent=intent)
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
    if plan.withheld:
        # the alert says both: what was closed, and what a human must do about the rest
        return done(Outcome(A_BLOCKED, plan.reason, f"reverted {reverted}; not written: {plan.detail}",
                            plan.changes + plan.withheld, applied=plan.changes), assessment, recent_callers=callers,
                    exposure=_exposed(target, services, plan.changes), intent=intent)
    return done(Outcome(A_REMEDIATED, "", "reverted " + reverted, plan.changes), assessment, recent_callers=callers,
                exposure=_exposed(target, services, plan.changes), intent=intent)


def _exposed(target: Target, services: Services, changes: Sequence[Change]) -> Any:
    """The remediation's window, from what is at hand (no request): the event's time until now, the verified
    write. The sweep replaces it with change history's when that has the opening write (dlp/responder/timeline.py)."""
    from dlp.domain.exposure import remediation_exposure

    context = target.context
    opened = context.event_time if context.event_type else ""   # a sweep's or re-check's time is not a write's
    return remediation_exposure(opened, context.caller, [c.property for c in changes], services.clock())


def _recheck_when_breaker_ends(target: Target, services: Services, registry_id: str, recent: Sequence[Any],
                               policy: remediation.Policy) -> str:
    """Schedule a re-check of a registry the breaker holds for when its window lets a write through again (a
    message on the durable-retry queue, invisible until then), so that it is not left drifted until someone
    writes to it again. Once per window: every instance computes the same moment and the state store remembers
    it (a second message, from a race, only costs a GET). Never raises: says what was (or was not) arranged."""
    from dlp.azure.state import BREAKER_WINDOW

    if services.retry is None or not policy.enforce:
        return "It is not re-checked automatically (no durable retry, or not enforcing): re-check it by hand."
    whens = sorted(r.when for r in recent)
    try:
        due = datetime.fromisoformat(whens[len(whens) - policy.max_remediations]) + BREAKER_WINDOW + BREAKER_RECHECK_MARGIN
        due = due.astimezone(timezone.utc).replace(microsecond=0)
        when = due.isoformat()
        if not services.state.recheck_scheduled(registry_id, when):
            context = Context(trigger="retry", operation_name="re-check when the revert-war breaker's window ends",
                              correlation_id=target.context.correlation_id)
            delay = max(0.0, (due - services.clock()).total_seconds())
            services.retry.later(retry_message(registry_id, context, enforce=policy.enforce, attempt=0,
                                               reason="the revert-war breaker's window ends"), delay)
            services.state.mark_recheck(registry_id, when)
    except Exception as exc:
        from dlp.azure.errors import classify

        log.warning("re-check of %s after the breaker window could not be scheduled: %s", registry_id, classify(exc))
        return "The automatic re-check could not be scheduled: the next sweep or write re-checks it."
    return f"It is re-checked automatically when the breaker's window ends, at {when}."


def _defer(target: Target, services: Services, deferred: Defer, done: Callable[..., Evaluation],
           enforce: bool) -> Evaluation:
    """Hand the work to the durable retry. The evaluation says when the next attempt runs and, when the
    registry was read, what it showed: a known drift alerts now ("remediation pending"), not hours later."""
    from dlp.azure.retryqueue import MAX_ATTEMPTS

    attempt = target.context.attempt + 1
    pending = deferred.pending or target.pending
    # After a PATCH, the evaluation id belongs to the intent: its `remediated` record comes later, under that id
    own_id = str(uuid.uuid4()) if deferred.intent else ""
    assessment = deferred.assessment
    if services.retry is None:
        return done(Outcome(A_ERROR, deferred.code, f"{deferred} (no durable retry in this mode)", pending,
                            deferred.code), assessment, evaluation_id=own_id)
    if attempt > MAX_ATTEMPTS:
        return done(Outcome(A_FAILED, R_RETRIES_EXHAUSTED, f"gave up after {MAX_ATTEMPTS} retries: {deferred}",
                            pending, deferred.code), assessment, evaluation_id=own_id)
    message = retry_message(target.registry_id, target.context, enforce=enforce, attempt=attempt,
                            deleted=target.deleted, pending=pending, reason=str(deferred))
    delay = services.retry.hand_over(message, attempt)       # raises if the queue is down: the trigger must retry
    next_attempt = (services.clock() + timedelta(seconds=delay)).astimezone(timezone.utc).isoformat(timespec="seconds")
    log.warning("deferred %s to the durable retry (attempt %d at %s): %s", target.registry_id, attempt, next_attempt,
                deferred)
    return done(Outcome(A_DEFERRED, deferred.code, f"{deferred}; next attempt (#{attempt}) at {next_attempt}", pending),
                assessment, next_attempt=next_attempt, evaluation_id=own_id)


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
    from dlp.ids import registry_of

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


__all__ = ["A_NONE", "Defer", "Notifier", "Recorder", "Services", "evaluate_target", "finish", "retry_may_write",
           "retry_message", "run", "target_from_retry"]
