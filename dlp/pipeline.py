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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from dlp import remediation
from dlp.budget import Budget
from dlp.model import (
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
    Registry,
    Target,
)
from dlp.rules import evaluate
from dlp.settings import Settings
from dlp.sources import registry_from_resource

log = logging.getLogger("dlp.pipeline")

UPDATING_WAIT_S = 1.0          # re-read interval while provisioningState is Updating
UPDATING_MAX_WAIT_S = 6.0      # then hand over to the durable retry
R_SCOPE_LOCKED = "scope-locked"
R_VERIFICATION = "verification-failed"
R_RETRIES_EXHAUSTED = "retries-exhausted"
R_LEASE_BUSY = "lease-busy"
LRO_RESERVE_S = 1.0            # stop waiting for a slow PATCH this long before the deadline, then defer
RELEASE_BUDGET_S = 2.0         # giving a lease back may run past a spent budget by this much
HANDOVER_RESERVE_S = 1.0       # kept back from an evaluation's Azure calls to hand it to the durable retry

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


class Recorder(Protocol):
    def record(self, evaluations: Sequence[Evaluation]) -> None:
        """Keep the record; raise only when it could be neither sent nor kept (so the trigger retries)."""


class Notifier(Protocol):
    def notify(self, evaluations: Sequence[Evaluation], *, digest: bool = False) -> None:
        """Alert on state changes; never raises, never blocks remediation."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Services:
    """The adapters, built once per process and injected (tests point them at emulators)."""

    settings: Settings
    arm: Any
    state: Any
    recorder: Recorder
    notifier: Notifier
    retry: Any = None
    clock: Callable[[], datetime] = field(default=utcnow)
    graph: Any = None      # Resource Graph adapter (sweep, scope re-check, scan); dlp.azure.graph.graph_for builds it
    dead_letters: Any = None   # dlp.deadletter.DeadLetterContainer when DLP_DEADLETTER_CONTAINER is set


class Defer(Exception):
    """Work a failing dependency kept from finishing: goes to the durable retry."""

    def __init__(self, code: str, message: str, pending: tuple[Change, ...] = ()):
        self.code = code
        self.pending = pending
        super().__init__(message)


def run(targets: Sequence[Target], services: Services, *, enforce: bool | None = None,
        budget: Budget | None = None, digest: bool = False, record: bool = True) -> list[Evaluation]:
    """Evaluate targets within one budget, then record and notify."""
    from dlp import timeline

    budget = budget or Budget.of(services.settings.time_budget_s)
    with budget.active():
        evaluations = [evaluate_target(target, services, budget, enforce=enforce) for target in targets]
        if record:
            timeline.schedule_checks(evaluations, services)     # flip-and-restore: a delayed look at the history
            finish(evaluations, services, digest=digest)
    return evaluations


def finish(evaluations: Sequence[Evaluation], services: Services, *, digest: bool = False) -> None:
    services.recorder.record(evaluations)          # raises only when nothing could keep the rows
    try:
        services.notifier.notify(evaluations, digest=digest)
    except Exception:                               # alerts never undo or block what was done
        log.exception("alerting failed; the evaluations are recorded")


def evaluate_target(target: Target, services: Services, budget: Budget, *, enforce: bool | None = None) -> Evaluation:
    settings = services.settings
    enforce = settings.mode == "enforce" if enforce is None else enforce
    started = services.clock()
    t0 = time.monotonic()
    evaluation_id = str(uuid.uuid4())

    warnings = remediation.exemption_lookalikes(target.registry_id, settings.exemptions)

    def done(outcome: Outcome, assessment: Any = None, **extra: Any) -> Evaluation:
        return Evaluation(evaluation_id, target.registry_id, target.context, "enforce" if enforce else "audit",
                          outcome, assessment, started.isoformat(), round((time.monotonic() - t0) * 1000, 1),
                          warnings=warnings, **extra)

    # The evaluation's Azure calls run on a shorter deadline, so that a dependency that hangs until the deadline
    # still leaves time to hand the work over (below, back on the caller's deadline) and to record it. (Its own
    # waits, for an Updating registry or a busy lease, keep larger reserves of the whole budget.)
    if not remediation.in_scopes(target.registry_id, settings.scopes):
        # never read, never written: the identity may not even be allowed to read it. Recorded at debug level
        # and never alerted (dlp.recording, dlp.alerts.states), unless the ID only just misses a scope.
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
            raise Defer(remediation.R_UPDATING, f"registry is {registry.provisioning_state}", target.pending)
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
    except HttpResponseError as exc:
        failure = classify(exc)
        if failure.transient:
            raise
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


def _claim(services: Services, registry_id: str, budget: Budget) -> _Claim | None:
    lease = services.state.acquire(registry_id, ttl_s=budget.remaining() + 30, wait_s=max(0.0, budget.remaining() - 3.0))
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
    registry = _read(target, services, budget)
    if registry is None:
        return done(Outcome(A_GONE, "deleted" if target.deleted else "not-found",
                            "the registry no longer exists"))
    policy = remediation.Policy.from_settings(services.settings, enforce=enforce)
    today = services.clock().date()

    assessment = evaluate(registry)
    claim: Future | None = None
    if remediation.needed_changes(assessment):
        # Likely to write? Then take the lease and read the breaker while ARM lists the pipelines.
        hopeful = evaluate(replace(registry, export_pipelines=registry.export_pipelines or ()))
        if remediation.plan(hopeful, policy, today=today).writes:
            claim = _background(lambda: _claim(services, registry.id, budget))
        try:
            registry = _with_pipelines(registry, services)
        except BaseException:
            _drop(services, claim)
            raise
        assessment = evaluate(registry)
    elif target.pending:
        return done(Outcome(A_REMEDIATED, "verified-later", "the deferred write is now visible", target.pending),
                    assessment, exposure=_exposed(target, services, target.pending))
    plan = remediation.plan(assessment, policy, today=today)
    if not plan.writes:
        _drop(services, claim)
        return done(Outcome(plan.action, plan.reason, plan.detail, plan.changes), assessment,
                    tag_exemption=plan.tag_exemption)

    granted = claim.result() if claim is not None else _claim(services, registry.id, budget)
    if granted is None:
        raise Defer(R_LEASE_BUSY, "another invocation is remediating this registry")
    try:
        if granted.lease.waited or granted.recent:
            # Another writer may have changed it since our read: we waited for the lease, or the registry was
            # written in the breaker window (its row is written before its PATCH, so a read taken after the row
            # can still predate the write). Decide from a fresh read; clocks of other instances are not compared.
            registry = _reread(target, services, budget, registry.export_pipelines)
            if registry is None:
                return done(Outcome(A_GONE, "not-found", "the registry no longer exists"))
        return _decide_and_apply(target, services, budget, done, registry, policy, today, granted.recent,
                                 conflict_retry=True)
    finally:
        _release(services, granted.lease)


def _release(services: Services, lease: Any) -> None:
    """Give a lease back even when the invocation's budget is spent (its own short budget); never raises:
    a lease that cannot be deleted expires on its own."""
    try:
        with Budget.of(RELEASE_BUDGET_S).active():
            services.state.release(lease)
    except Exception:
        log.warning("could not release the lease on %s; it expires on its own", lease.registry_id, exc_info=True)


def _drop(services: Services, claim: Future | None) -> None:
    """Give back a lease taken speculatively (never raises: the lease also expires on its own)."""
    if claim is None:
        return
    try:
        granted = claim.result()
        if granted is not None:
            _release(services, granted.lease)
    except Exception:
        log.warning("could not release a speculative lease; it expires on its own", exc_info=True)


def _reread(target: Target, services: Services, budget: Budget, pipelines: tuple[str, ...] | None = None) -> Registry | None:
    """A fresh GET under the lease. The export pipelines listed moments ago in this invocation are reused:
    one created in between would make ARM refuse the export write (a recorded failure, never harm)."""
    registry = _read(target, services, budget)
    if registry is None:
        return None
    return _with_pipelines(replace(registry, export_pipelines=pipelines) if pipelines is not None else registry,
                           services)


def _decide_and_apply(target: Target, services: Services, budget: Budget, done: Callable[..., Evaluation],
                      registry: Registry, policy: remediation.Policy, today: Any, recent: tuple[Any, ...], *,
                      conflict_retry: bool) -> Evaluation:
    """Under the lease: final plan with the breaker count, the breaker row, the PATCH, verification.

    The breaker row is written before the PATCH (it counts write attempts), so a write whose answer is
    lost still counts; anything that goes wrong once the PATCH may have reached ARM is deferred with the
    planned changes pending, so the durable retry verifies (and reports) what actually happened.
    """
    from azure.core.exceptions import HttpResponseError

    from dlp.azure.errors import classify
    from dlp.azure.state import Remediation

    assessment = evaluate(registry)
    plan = remediation.plan(assessment, policy, today=today, recent_remediations=len(recent))
    callers = tuple(dict.fromkeys(r.caller for r in recent if r.caller))
    if not plan.writes:
        return done(Outcome(plan.action, plan.reason, plan.detail, plan.changes), assessment,
                    tag_exemption=plan.tag_exemption, recent_callers=callers)
    services.state.record_remediation(registry.id, Remediation(services.clock().isoformat(), target.context.caller,
                                                               str(uuid.uuid4())))
    try:
        result = services.arm.update_registry(registry.id, plan.patch_body(), reserve_s=LRO_RESERVE_S)
    except HttpResponseError as exc:
        failure = classify(exc)
        if failure.status == 409 and failure.code.lower() == "scopelocked":
            return done(Outcome(A_BLOCKED, R_SCOPE_LOCKED,
                                f"a ReadOnly lock prevents the write ({failure.message}); remove it or exempt the registry",
                                plan.changes, failure.code), assessment, recent_callers=callers)
        if failure.status == 409 and conflict_retry:
            log.info("409 %s on %s: re-reading once", failure.code, registry.id)
            fresh = _reread(target, services, budget)
            if fresh is None:
                return done(Outcome(A_GONE, "not-found", "the registry no longer exists"))
            return _decide_and_apply(target, services, budget, done, fresh, policy, today, recent,
                                     conflict_retry=False)
        if failure.status == 404:
            return done(Outcome(A_GONE, "not-found", "the registry was deleted before the write"), assessment)
        if failure.transient:
            raise Defer(failure.code, str(failure), plan.changes) from exc
        # 403: missing permission, an Azure Policy deny or a deny assignment: an error, never retried
        action = A_ERROR if failure.status in (401, 403) else A_FAILED
        return done(Outcome(action, failure.code, str(failure), plan.changes, failure.code), assessment,
                    recent_callers=callers)
    except Defer:
        raise
    except Exception as exc:          # timeout, dropped connection, budget: the PATCH may have landed
        failure = classify(exc)
        raise Defer(failure.code, str(failure), plan.changes) from exc

    if not result.done:
        raise Defer("lro-pending", "the update was accepted but did not finish within the time budget", plan.changes)
    after = registry_from_resource(result.registry or {}, "arm")
    missing = remediation.still_needed(plan, after)
    if missing:
        detail = "; ".join(f"{c.property} is still {c.old}" for c in missing)
        return done(Outcome(A_FAILED, R_VERIFICATION, f"ARM accepted the update but {detail}", plan.changes),
                    assessment, recent_callers=callers)
    return done(Outcome(A_REMEDIATED, "", "reverted " + ", ".join(f"{c.property} {c.old} -> {c.new}"
                                                                 for c in plan.changes), plan.changes),
                assessment, recent_callers=callers, exposure=_exposed(target, services, plan.changes))


def _exposed(target: Target, services: Services, changes: Sequence[Change]) -> Any:
    """The remediation's window, from what is at hand (no request): the event's time until now, the verified
    write. The sweep replaces it with change history's when that has the opening write (dlp/timeline.py)."""
    from dlp.exposure import remediation_exposure

    context = target.context
    opened = context.event_time if context.event_type else ""   # a sweep's or re-check's time is not a write's
    return remediation_exposure(opened, context.caller, [c.property for c in changes], services.clock())


def _defer(target: Target, services: Services, deferred: Defer, done: Callable[..., Evaluation],
           enforce: bool) -> Evaluation:
    from dlp.azure.retryqueue import MAX_ATTEMPTS

    attempt = target.context.attempt + 1
    pending = deferred.pending or target.pending
    if services.retry is None:
        return done(Outcome(A_ERROR, deferred.code, f"{deferred} (no durable retry in this mode)", pending,
                            deferred.code))
    if attempt > MAX_ATTEMPTS:
        return done(Outcome(A_FAILED, R_RETRIES_EXHAUSTED, f"gave up after {MAX_ATTEMPTS} retries: {deferred}",
                            pending, deferred.code))
    # `enforce` travels with the work: a plan-only re-check must not become a write on retry
    message = {"registryId": target.registry_id, "deleted": target.deleted, "attempt": attempt, "enforce": enforce,
               "context": target.context.to_json(), "pending": [c.to_json() for c in pending],
               "reason": str(deferred)[:500]}
    services.retry.hand_over(message, attempt)       # raises if the queue is down: the trigger must retry
    log.warning("deferred %s to the durable retry (attempt %d): %s", target.registry_id, attempt, deferred)
    return done(Outcome(A_DEFERRED, deferred.code, str(deferred), pending))


def target_from_retry(body: Any) -> Target | None:
    """A durable-retry queue message -> Target; None when the message is not ours or is damaged."""
    from dlp.events import registry_of

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


__all__ = ["A_NONE", "Defer", "Notifier", "Recorder", "Services", "evaluate_target", "finish", "run",
           "target_from_retry"]
