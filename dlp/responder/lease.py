"""The lease and the breaker: one writer per registry across instances, and at most DLP_MAX_REMEDIATIONS writes an
hour.

A Table-storage lease makes one instance the writer of a registry. One attempt at it, with the breaker's rows,
runs while ARM answers the read, so it adds no round trip; if another holder had it, it is waited for after the
read and the registry re-read under it. The lease taken during the read lasts only SPECULATIVE_TTL_S, so an instance
that dies while reading blocks other writers for seconds; it is extended before the PATCH together with writing the
remediation's intent (the breaker's count), still with no extra round trip.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain.intent import NOT_APPLIED, Intent
from dlp.responder.deferral import Defer
from dlp.responder.intents import RELEASE_BUDGET_S, resolve_intent
from dlp.responder.invocation import Held, Invocation
from dlp.responder.services import Services

log = logging.getLogger("dlp.pipeline")

R_LEASE_BUSY = "lease-busy"
# A lease taken during the read: a crashed reader blocks writers this long at most. Long enough that a read slowed
# by a loaded host (a second seen under CI load) does not lose it to another instance and defer a fix for nothing.
SPECULATIVE_TTL_S = 5.0
LEASE_SLACK_S = 10.0           # a lease outlives its budget by this much (no poller or thread runs past the budget)

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def background(fn: Callable[[], Any]) -> Future:
    """Run `fn` on a worker thread with this thread's context (the budget's deadline travels along)."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dlp-bg")
    return _EXECUTOR.submit(contextvars.copy_context().run, fn)


@dataclass(frozen=True)
class Claim:
    """The right to write a registry now, and the breaker's view of its last hour."""

    lease: Any
    recent: tuple[Intent, ...]


def claim(invocation: Invocation, *, wait: bool = True) -> Claim | None:
    """The lease and the breaker's rows; `wait=False`: one attempt only (None when someone holds it), for
    SPECULATIVE_TTL_S (extended before a write, `count_attempt`)."""
    services, budget = invocation.services, invocation.budget
    wait_s = max(0.0, budget.remaining() - 3.0) if wait else 0.0
    ttl_s = budget.remaining() + LEASE_SLACK_S if wait else SPECULATIVE_TTL_S
    lease = services.state.acquire(invocation.registry_id, ttl_s=ttl_s, wait_s=wait_s)
    if lease is None:
        return None
    try:
        recent = tuple(services.state.recent_remediations(invocation.registry_id, services.clock()))
    except BaseException:
        release(services, lease)
        raise
    return Claim(lease, recent)


def count_attempt(invocation: Invocation, intent: Intent, assessment: Any = None) -> str:
    """The breaker row (before the PATCH: it counts write attempts; it is also the remediation's intent) and, at
    the same time (no extra round trip), the speculative lease extended to cover the write. Lost meanwhile (it
    expired and another instance took it): nothing is written, the durable retry comes back. Returns the intent's
    row key."""
    services, held = invocation.services, invocation.held
    assert held is not None, "an intent is written under the lease"
    ttl_s = invocation.budget.remaining() + LEASE_SLACK_S
    extension = background(lambda: services.state.extend(held.lease, ttl_s=ttl_s)) if held.short else None
    try:
        row = services.state.record_remediation(invocation.registry_id, intent)
    except BaseException:
        if extension is not None:
            _settle(extension, held)
        raise
    if extension is not None:
        extended = extension.result()
        if extended is None:
            resolve_intent(services, invocation.registry_id, row, NOT_APPLIED)     # nothing was written
            raise Defer(R_LEASE_BUSY, "the lease expired during the read and another instance took it",
                        assessment=assessment)
        held.lease, held.short = extended, False
    return row


def _settle(extension: Future, held: Held) -> None:
    """Keep the extended lease if the extension got through, so that it can be given back (never raises)."""
    try:
        extended = extension.result()
    except Exception:
        return
    if extended is not None:
        held.lease, held.short = extended, False


def release(services: Services, lease: Any) -> None:
    """Give a lease back even when the invocation's budget is spent (its own short budget); never raises:
    a lease that cannot be deleted expires on its own."""
    try:
        with Budget.of(RELEASE_BUDGET_S).active():
            services.state.release(lease)
    except Exception:
        log.warning("could not release the lease on %s; it expires on its own", lease.registry_id, exc_info=True)


def drop(services: Services, speculative: Future | None) -> None:
    """Give back a lease taken speculatively (one attempt, so never a long wait; never raises: the lease also
    expires on its own)."""
    if speculative is None:
        return
    try:
        granted = speculative.result()
    except Exception:
        log.warning("a speculative lease could not be taken; nothing to give back", exc_info=True)
        return
    if granted is not None:
        release(services, granted.lease)


def drop_soon(services: Services, speculative: Future | None) -> None:
    """`drop` on a worker thread: nothing will be written, so the lease goes back while the evaluation goes on
    (settling intents may read change history, which must not run under the lease nor wait for its release)."""
    if speculative is not None:
        background(lambda: drop(services, speculative))


__all__ = ["LEASE_SLACK_S", "R_LEASE_BUSY", "SPECULATIVE_TTL_S", "Claim", "background", "claim", "count_attempt",
           "drop", "drop_soon", "release"]
