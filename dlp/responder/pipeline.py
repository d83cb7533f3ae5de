"""The flow every trigger ends in: target -> snapshot -> evaluate -> plan -> apply -> record -> notify.

Trigger-agnostic: Event Grid, HTTP re-check, sweep, durable retry, dead-letter replay and CLI all call `run`.
Adapters come in through `Services` (built once at the composition root, dlp.runtime). This module is the stage
sequence only; each stage lives in its own module of dlp/responder/ and takes the `Invocation`:

    own_writes  the event of our own write costs nothing (provenance decides)
    read        one ARM GET (re-read while Updating), export pipelines when they matter
    lease       the lease and the breaker's rows, taken during the read
    intents     remediations a dead or deferred writer left unrecorded are settled (provenance: did they land?)
    write       plan under the lease, the intent, one PATCH, verification
    deferral    what a failing dependency kept from finishing goes to the durable retry
    finish      record, notify, resolve the intents
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import NoReturn

from dlp.azure.budget import Budget
from dlp.domain import remediation
from dlp.domain.model import A_BLOCKED, A_ERROR, A_GONE, Evaluation, Outcome, Registry, Target, flatten
from dlp.domain.rules import evaluate
from dlp.responder import lease, own_writes, timeline
from dlp.responder.deferral import Defer, as_deferral, defer
from dlp.responder.finish import finish
from dlp.responder.intents import RELEASE_BUDGET_S, settle
from dlp.responder.invocation import Held, Invocation
from dlp.responder.read import optimistic, read_registry, with_pipelines
from dlp.responder.services import Services
from dlp.responder.write import write

log = logging.getLogger("dlp.pipeline")

HANDOVER_RESERVE_S = 1.0       # kept back from an evaluation's Azure calls to hand it to the durable retry


def run(targets: Sequence[Target], services: Services, *, enforce: bool | None = None,
        budget: Budget | None = None, digest: bool = False, record: bool = True) -> list[Evaluation]:
    """Evaluate targets within one budget, then record and notify."""
    budget = budget or Budget.of(services.settings.time_budget_s)
    with budget.active():
        targets = [target for target in targets if not own_writes.skip(target, services)]
        if record and len(targets) == 1 and targets[0].context.trigger == "event" and not targets[0].pending:
            return [_coalesced(targets[0], services, budget, enforce, digest)]
        evaluations = flatten([evaluate_target(target, services, budget, enforce=enforce) for target in targets])
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
        timeline.schedule_checks([evaluation], services)     # flip-and-restore: a delayed look at the history
        return finish([evaluation], services, digest=digest)[0]

    return services.bursts.run(target, enforce, evaluate=evaluate_round, finish=finish_round,
                               wait_s=budget.remaining() + RELEASE_BUDGET_S)


def evaluate_target(target: Target, services: Services, budget: Budget, *, enforce: bool | None = None) -> Evaluation:
    """One target from scope check to outcome. Never raises for the registry's or Azure's sake: a transient failure
    is deferred, anything else is an `error` outcome; only a durable retry that cannot be reached raises."""
    invocation = Invocation.start(target, services, budget, enforce)
    settings = services.settings
    if not remediation.in_scopes(target.registry_id, settings.scopes):
        # never read, never written: the identity may not even be allowed to read it. Recorded at debug level
        # and never alerted (dlp.outputs.recording, dlp.outputs.alerts.states), unless the ID only just misses a scope.
        lookalike = remediation.scope_lookalike(target.registry_id, settings.scopes)
        if lookalike:
            log.warning("look-alike of a scope: %s", lookalike)
            return invocation.done(Outcome(A_BLOCKED, remediation.R_SCOPE_LOOKALIKE, lookalike))
        return invocation.done(Outcome(A_BLOCKED, remediation.R_OUT_OF_SCOPE,
                                       "the registry is outside DLP_SCOPES; the responder does not read or write it"))
    for warning in invocation.warnings:
        log.warning("look-alike of an exemption: %s", warning)
    # The evaluation's Azure calls run on a shorter deadline, so that a dependency that hangs until the deadline
    # still leaves time to hand the work over (below, back on the caller's deadline) and to record it. (Its own
    # waits, for an Updating registry or a busy lease, keep larger reserves of the whole budget.)
    try:
        with Budget(budget.deadline - HANDOVER_RESERVE_S).active():
            return _evaluate(invocation)
    except Defer as deferred:
        return defer(invocation, deferred)
    except Exception as exc:
        from dlp.azure.errors import classify

        failure = classify(exc)
        if failure.transient:
            return defer(invocation, Defer(failure.code, str(failure), target.pending))
        log.warning("evaluation of %s failed: %s", target.registry_id, failure)
        return invocation.done(Outcome(A_ERROR, failure.code, str(failure), error_code=failure.code))


def _evaluate(invocation: Invocation) -> Evaluation:
    """Read (with the lease taken meanwhile), decide, and when something must be written, write under the lease."""
    services, target = invocation.services, invocation.target
    # Enforce mode: one attempt at the lease (with the breaker's rows) runs while ARM answers the read, so a
    # drift costs no round trip for it. Given back once the outcome is known when nothing is written.
    speculative = lease.background(lambda: lease.claim(invocation, wait=False)) if invocation.enforce else None
    keep = False
    try:
        registry = read_registry(invocation)
        if registry is None:
            return invocation.done(Outcome(A_GONE, "deleted" if target.deleted else "not-found",
                                           "the registry no longer exists"))
        assessment = evaluate(registry)
        compliant = not remediation.needed_changes(assessment)
        if compliant:                          # nothing to write: no lease held while history is read below
            lease.drop_soon(services, speculative)
            speculative = None
        settled = settle(invocation, registry, assessment)       # remediations a dead writer left unrecorded
        if settled and compliant:              # the registry is as the newest left it: its record is this one's
            return replace(settled[-1], settled=tuple(settled[:-1]))
        invocation.settled = tuple(settled)
        if not remediation.plan(evaluate(optimistic(registry)), invocation.policy, today=invocation.today).writes:
            return _nothing_to_write(invocation, registry, assessment)
        keep = True
    finally:
        if not keep:
            lease.drop(services, speculative)     # after `done`: not part of the evaluation's time
    return _under_lease(invocation, registry, assessment, speculative)


def _nothing_to_write(invocation: Invocation, registry: Registry, assessment: object) -> Evaluation:
    """Audit mode, a guard, or compliant: list the export pipelines (when they matter) so the record names them."""
    if remediation.needed_changes(assessment):
        registry = with_pipelines(invocation, registry)
        assessment = evaluate(registry)
    plan = remediation.plan(assessment, invocation.policy, today=invocation.today)
    return invocation.done(Outcome(plan.action, plan.reason, plan.detail, plan.changes), assessment,
                           tag_exemption=plan.tag_exemption)


def _under_lease(invocation: Invocation, registry: Registry, assessment: object, speculative: Future | None
                 ) -> Evaluation:
    """Take the lease (the speculative one, or wait for it), re-read when another writer may have written, write."""
    try:
        granted = speculative.result() if speculative is not None else None
        busy = granted is None
        if granted is None:     # someone held it while we read: wait for it now, then re-read below
            granted = lease.claim(invocation)
    except Exception as exc:
        _reraise(exc, assessment)
    if granted is None:
        raise Defer(lease.R_LEASE_BUSY, "another invocation is remediating this registry", assessment=assessment)
    invocation.held, invocation.recent = Held(granted.lease, short=not busy), granted.recent
    try:
        if busy or granted.lease.waited or granted.recent:
            # Another writer may have changed it since our read: the lease was busy, or the registry was
            # written in the breaker window (its row is written before its PATCH, so a read taken after the row
            # can still predate the write). Decide from a fresh read; clocks of other instances are not compared.
            registry = read_registry(invocation)
            if registry is None:
                return invocation.done(Outcome(A_GONE, "not-found", "the registry no longer exists"))
        return write(invocation, registry)
    except Exception as exc:
        _reraise(exc, assessment)
    finally:
        lease.release(invocation.services, invocation.held.lease)


def _reraise(exc: Exception, assessment: object) -> NoReturn:
    """Let `exc` leave the evaluation: a transient failure as a Defer that carries what was read."""
    deferred = as_deferral(exc, assessment)
    if deferred is exc:
        raise exc
    raise deferred from exc


__all__ = ["evaluate_target", "run"]
