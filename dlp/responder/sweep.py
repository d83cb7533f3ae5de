"""The scheduled sweep, and the engine it shares with scope re-checks and `dlp scan`.

Why: events get lost (a subscription created late, a recreated system topic, dead-lettered
deliveries). The sweep lists every registry in DLP_SCOPES (or, with no scopes, in every
subscription the identity can see) with one Resource Graph query, paged by 1,000, and runs
the same rules over each row. A registry the rules pass costs no further ARM call: it is
evaluated and recorded straight from the row. Only a registry that needs a write
(`remediation.needed_changes`) goes through the per-registry pipeline, which re-reads it
from ARM before anything is written (Resource Graph lags ARM by seconds to minutes; the write
itself is the export-pipelines check, see dlp.responder.pipeline).

One exception keeps "needs a write" honest: a drift the responder would refuse for a standing
reason it can read from the row (outside DLP_SCOPES, exempt by DLP_EXEMPTIONS or a tag, not
Premium) is recorded from the row too. A re-read would only repeat the same refusal, and in a
tenant full of Basic registries it would cost one GET per registry per sweep.

All evaluations are recorded in one `finish.finish(..., digest=True)` call, so the alerts of
a sweep go out as one digest. The sweep also drains the outbox of undelivered records.

Exposure windows (dlp/responder/timeline.py): before listing, the sweep runs one change-history query over
the same scope since the previous sweep (paged by 1,000), records every closed window no event
path recorded (an `exposure` evaluation each, in the same digest), and gives each remediation it
makes the window change history shows for it. A history it cannot read costs the windows this
once (logged; the cursor stays, so the next sweep looks again), never the sweep.

Time budget: evaluating gets SWEEP_BUDGET_S, then recording, alerting and draining the outbox get
RECORD_RESERVE_S, because host.json's `functionTimeout` is 5 minutes for every function of the app;
tests/test_sweep.py checks they fit. Work the budget cannot hold (a failing dependency, thousands of drifted registries)
is handed to the durable retry by the pipeline, as for events.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain import remediation
from dlp.domain.model import A_BLOCKED, A_ERROR, A_NONE, Context, Evaluation, Outcome, Target, parse_registry_id, registry_key
from dlp.domain.remediation import R_EXEMPTION, R_NOT_PREMIUM, R_OUT_OF_SCOPE, R_TAG_EXEMPTION, Policy
from dlp.domain.rules import evaluate
from dlp.ids import fold, registry_of
from dlp.inputs.sources import is_registry, registry_from_resource
from dlp.responder import finish, pipeline, scope_exits, timeline
from dlp.responder.services import Services

log = logging.getLogger("dlp.sweep")

SWEEP_BUDGET_S = 230.0       # evaluating; host.json functionTimeout (5 min) minus RECORD_RESERVE_S and a margin
RECORD_RESERVE_S = 60.0      # recording and alerting the sweep, then draining the outbox
WORKERS = 4                  # drifted registries re-read and remediated in parallel (ARM allows far more)
SOURCE = "resourcegraph"     # Registry.source / the `source` field of rows evaluated without an ARM read

# Plan reasons that rest on the row alone: a re-read would repeat the same refusal (see module doc).
STANDING_REFUSALS = frozenset({R_OUT_OF_SCOPE, R_EXEMPTION, R_TAG_EXEMPTION, R_NOT_PREMIUM})


@dataclass(frozen=True)
class Listing:
    """Which registries to list: the query's scopes plus the filter the rows must pass."""

    subscriptions: tuple[str, ...] = ()      # empty: tenant scope (every subscription the identity can read)
    resource_groups: tuple[str, ...] = ()    # names; empty: every resource group
    scopes: tuple[str, ...] = ()             # lower-cased scope IDs a row must be in; empty: keep every row

    @classmethod
    def of_scopes(cls, scopes: Sequence[str]) -> Listing:
        """DLP_SCOPES-style IDs -> subscriptions to query, resource groups to narrow by, and the exact filter.

        Resource-group names only narrow the query when every scope is a resource group; the
        exact pairing (this group in that subscription) is checked on each row.
        """
        given = [s.rstrip("/") for s in scopes]
        ids = tuple(dict.fromkeys(fold(s) for s in given))
        subscriptions = tuple(dict.fromkeys(s.split("/")[2].lower() for s in given))
        groups = tuple(dict.fromkeys(s.split("/")[4] for s in given if s.count("/") >= 4))
        # Narrow the query only by plain ASCII names: whether `in~` folds other letters as ARM does (A-Z only) is
        # ARG's business. Rows the query returns too generously are dropped by the exact filter (dlp.ids.within).
        narrow = bool(given) and len(groups) == len(given) and all(g.isascii() for g in groups)
        return cls(subscriptions, groups if narrow else (), ids)


@dataclass
class Result:
    """What one pass produced, with the figures a benchmark or progress line needs."""

    evaluations: list[Evaluation] = field(default_factory=list)
    pages: int = 0
    rows: int = 0
    from_rows: int = 0        # evaluated from the Resource Graph row (no ARM call)
    re_read: int = 0          # sent through the pipeline (ARM re-read)
    windows: int = 0          # exposure windows recorded from change history
    exits: int = 0            # registries listed before that are no longer there (dlp/responder/scope_exits.py)
    timings: dict[str, float] = field(default_factory=dict)   # seconds per phase: listing, pipelines, record

    @property
    def by_action(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for evaluation in self.evaluations:
            counts[evaluation.outcome.action] = counts.get(evaluation.outcome.action, 0) + 1
        return counts


def _from_row(registry: Any, context: Context, policy: Policy, mode: str, today: Any,
              clock: Callable[[], datetime]) -> Evaluation | None:
    """An Evaluation straight from a row, or None when the row needs the pipeline (ARM re-read)."""
    t0 = time.monotonic()
    started = clock()
    assessment = evaluate(registry)
    plan = remediation.plan(assessment, policy, today=today)
    if plan.action != A_NONE and plan.reason not in STANDING_REFUSALS:
        return None
    return Evaluation(str(uuid.uuid4()), registry.id, context, mode,
                      Outcome(plan.action, plan.reason, plan.detail, plan.changes), assessment, started.isoformat(),
                      round((time.monotonic() - t0) * 1000, 1), tag_exemption=plan.tag_exemption,
                      warnings=remediation.exemption_lookalikes(registry.id, policy.exemptions))


def _lookalike(registry_id: str, listing: Listing, context: Context, mode: str,
               clock: Callable[[], datetime]) -> Evaluation | None:
    """A row outside the scopes whose ID only looks inside one (Unicode look-alike letters): recorded and alerted,
    never written. None for any other row outside the scopes."""
    why = remediation.scope_lookalike(registry_id, listing.scopes)
    if not why:
        return None
    log.warning("look-alike of a scope: %s", why)
    return Evaluation(str(uuid.uuid4()), registry_id, context, mode,
                      Outcome(A_BLOCKED, remediation.R_SCOPE_LOOKALIKE, why), None, clock().isoformat())


@dataclass
class Pending:
    """A listing pass: row evaluations in listing order, and the targets that need the pipeline."""

    result: Result
    slots: list[Evaluation | None]
    drifted: list[tuple[int, Target]]
    context: Context
    budget: Budget


def _row_id(row: Any) -> str:
    """The row's registry ID when it is a well-formed one, else ""."""
    value = row.get("id") if isinstance(row, dict) else None
    found = registry_of(value) if isinstance(value, str) else None
    return found[0] if found and found[1] else ""


def collect(listing: Listing, services: Services, *, context: Context, budget: Budget,
            enforce: bool | None = None, on_page: Callable[[Any], None] | None = None) -> Pending:
    """List the registries and evaluate every row; no ARM call. Raises whatever Resource Graph raised."""
    from dlp.azure.graph import graph_for

    settings = services.settings
    enforce = settings.mode == "enforce" if enforce is None else enforce
    mode = "enforce" if enforce else "audit"
    policy = settings.policy(enforce=enforce)
    today = services.clock().date()
    pending = Pending(Result(), [], [], context, budget)
    graph = graph_for(services)
    started = time.monotonic()

    with budget.active():
        for page in graph.registries(listing.subscriptions, listing.resource_groups, on_page=on_page):
            pending.result.pages += 1
            for row in page.rows:
                if not is_registry(row):
                    continue
                try:
                    registry = registry_from_resource(row, SOURCE)
                    registry_id = registry.id
                    evaluation = _from_row(registry, context, policy, mode, today, services.clock)
                except Exception:           # one odd row must not blind the sweep: read that registry from ARM
                    registry_id = _row_id(row)
                    log.exception("Resource Graph row %r could not be evaluated; re-reading it from ARM", registry_id)
                    if not registry_id:
                        continue
                    evaluation = None
                if not parse_registry_id(registry_id):
                    continue
                if not remediation.in_scopes(registry_id, listing.scopes):
                    evaluation = _lookalike(registry_id, listing, context, mode, services.clock)
                    if evaluation is None:      # simply elsewhere: not ours, silent
                        continue
                pending.result.rows += 1
                if evaluation is None:
                    pending.drifted.append((len(pending.slots), Target(registry_id, context)))
                pending.slots.append(evaluation)
    pending.result.from_rows = pending.result.rows - len(pending.drifted)
    pending.result.timings["listing"] = round(time.monotonic() - started, 3)
    return pending


def complete(pending: Pending, services: Services, *, enforce: bool | None = None) -> Result:
    """Send the registries that need a write through the pipeline (re-read, plan, apply), in parallel."""
    settings = services.settings
    enforce = settings.mode == "enforce" if enforce is None else enforce
    mode = "enforce" if enforce else "audit"
    budget, context, slots = pending.budget, pending.context, pending.slots

    def one(target: Target) -> Evaluation:
        with budget.active():           # the deadline lives in a contextvar: each worker thread sets it
            try:
                return pipeline.evaluate_target(target, services, budget, enforce=enforce)
            except Exception as exc:    # only a failed hand-over to the durable retry raises: record it
                log.exception("%s could not be evaluated nor handed to the durable retry", target.registry_id)
                return Evaluation(str(uuid.uuid4()), target.registry_id, context, mode,
                                  Outcome(A_ERROR, "handover-failed", f"{type(exc).__name__}: {exc}"[:500]),
                                  None, services.clock().isoformat())

    started = time.monotonic()
    if pending.drifted:
        targets = [target for _, target in pending.drifted]
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(targets)), thread_name_prefix="dlp-sweep") as pool:
            for (index, _target), evaluation in zip(pending.drifted, pool.map(one, targets), strict=True):
                slots[index] = evaluation
    result = pending.result
    result.timings["pipelines"] = round(time.monotonic() - started, 3)
    result.re_read = len(pending.drifted)
    result.evaluations = [e for e in slots if e is not None]
    return result


def assess(listing: Listing, services: Services, *, context: Context, budget: Budget,
           enforce: bool | None = None, on_page: Callable[[Any], None] | None = None) -> Result:
    """List, evaluate every row, and send only the registries that need a write through the pipeline.

    Nothing is recorded here: callers decide (one digest for the sweep, a record per re-check,
    standard output for the CLI).
    """
    pending = collect(listing, services, context=context, budget=budget, enforce=enforce, on_page=on_page)
    return complete(pending, services, enforce=enforce)


def drain_outbox(services: Services) -> int:
    """Deliver records and alerts that earlier invocations could not send (the recorder's and the
    notifier's `drain`), within the current budget. Never raises: a failing outbox must not cost the
    sweep its record. Returns how many drains ran."""
    drains = [(name, getattr(getattr(services, name, None), "drain", None)) for name in ("recorder", "notifier")]
    ran = 0
    for label, drain in drains:
        if not callable(drain):
            continue
        ran += 1
        try:
            drain()
        except Exception:
            log.exception("%s.drain failed; the outbox is tried again at the next sweep", label)
    return ran


def sweep(services: Services, *, budget: Budget | None = None, scheduled_for: str = "") -> Result:
    """One scheduled sweep over DLP_SCOPES (or tenant scope): evaluate, drain the outbox, record as one digest."""
    budget = budget or Budget.of(SWEEP_BUDGET_S)
    run_id = str(uuid.uuid4())
    context = Context(trigger="sweep", event_id=run_id, correlation_id=run_id, event_time=scheduled_for[:64])
    started = time.monotonic()
    listing = Listing.of_scopes(services.settings.scopes)
    history, cursor = _history(services, listing, budget)
    result = assess(listing, services, context=context, budget=budget)
    exits = scope_exits.after_sweep(_in_scope(result, listing), services, context, budget)   # issue 22
    now = services.clock()
    result.evaluations = [timeline.with_history(e, history.get(registry_key(e.registry_id)), now)
                          for e in result.evaluations]
    result.exits = len(exits)
    recording = time.monotonic()
    with Budget.of(RECORD_RESERVE_S).active():     # this sweep's record first, then the backlog, both bounded
        windows, exposures = _exposures(services, history, run_id)
        result.windows = len(exposures)
        finish.finish(result.evaluations + exits + exposures, services, digest=True)
        timeline.done(windows, services)
        if cursor is not None:
            try:
                services.state.set_exposure_cursor(cursor.isoformat())
            except Exception:
                log.warning("exposure cursor not saved; the next sweep looks at the same history again", exc_info=True)
        result.timings["record"] = round(time.monotonic() - recording, 3)
        drain_outbox(services)
    log.info("sweep %s: %d registries in %d page(s), %d from rows, %d re-read, %d exposure window(s), %d gone from "
             "the listing; %s; %.1f s %s", run_id, result.rows, result.pages, result.from_rows, result.re_read,
             result.windows, result.exits, result.by_action, time.monotonic() - started, result.timings)
    return result


def _in_scope(result: Result, listing: Listing) -> list[str]:
    """The registry IDs this sweep listed inside the scopes (look-alikes are not inside)."""
    return [e.registry_id for e in result.evaluations
            if e.outcome.reason != remediation.R_SCOPE_LOOKALIKE and remediation.in_scopes(e.registry_id, listing.scopes)]


def _history(services: Services, listing: Listing, budget: Budget) -> tuple[dict[str, Any], Any]:
    """Windows per registry key from change history since the previous sweep, and the next cursor; ({}, None)
    when the history cannot be read (the cursor stays where it was)."""
    try:
        with budget.active():
            return timeline.sweep_windows(services, listing, services.clock())
    except Exception:
        log.exception("change history could not be read; exposure windows wait for the next sweep")
        return {}, None


def _exposures(services: Services, history: dict[str, Any], run_id: str) -> tuple[list[Any], list[Evaluation]]:
    """The closed windows this sweep claims, and their `exposure` evaluations."""
    try:
        windows = timeline.claim([w for found in history.values() for w in found.windows], services, run_id)
    except Exception:
        log.exception("exposure windows could not be claimed in storage; they wait for the next sweep")
        return [], []
    mode, started = services.settings.mode, services.clock().isoformat()
    return windows, [timeline.evaluation_of(w, trigger="sweep", mode=mode, started_at=started) for w in windows]


__all__ = ["SWEEP_BUDGET_S", "Listing", "Pending", "Result", "assess", "collect", "complete", "drain_outbox", "sweep"]
