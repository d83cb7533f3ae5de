"""Registries that leave the monitored scope: moved away, deleted with their resource group, or no longer listed.

A registry keeps its images across a move. Moved to a resource group or subscription outside DLP_SCOPES, its old
ID is gone (a compliant registry's deletion used to be silent), its new ID is out of scope (silent by design), and
the sweep just stops listing it. Each of the three ways out now alerts once ("left the monitored scope" or
"deleted": dlp.outputs.alerts.states FINAL), with who and when when an event says so:

* **a resource-group event** (`check_group`): Event Grid's `Microsoft.Resources.ResourceActionSuccess` for
  `Microsoft.Resources/subscriptions/resourceGroups/moveResources/action`, or `ResourceDeleteSuccess` for
  `.../resourceGroups/delete`. Its subject is the resource group; its data names the caller, but neither the moved
  resources nor the target (the request body is not in the event), so every registry known there
  (dlp/azure/inventory.py) is read: 404 means it left. A move runs for up to four hours (ARM's limit) and a
  resource-group delete for minutes, so the ones still there are read again later (`RECHECK_S`, on the durable-retry
  queue, message kind "scope-check");
* **the sweep** (`after_sweep`): a registry it listed before and lists no more, and that ARM answers 404 for.
  A registry ARM still has is kept (Resource Graph lags ARM).

Each registry that left becomes an `A_GONE` evaluation (reason moved, deleted or not-listed), recorded and alerted
through finish() like any other. Its alert is grouped like any other: thirty registries moved by one caller make
one alert at once and one digest.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from dlp.azure.budget import Budget
from dlp.azure.inventory import MemoryInventory, group_key, group_of
from dlp.domain import remediation
from dlp.domain.model import A_GONE, GONE_DELETED, GONE_MOVED, GONE_UNLISTED, Context, Evaluation, Outcome
from dlp.ids import key
from dlp.outputs.alerts.states import FINAL
from dlp.responder import finish
from dlp.responder.services import Services

log = logging.getLogger("dlp.scope")

CHECK_KIND = "scope-check"         # the `kind` of a delayed re-check message on the durable-retry queue
RECHECK_S = (60, 300, 900, 3600, 3600, 3600, 3600)    # a move may take 4 hours: about that, in all
MAX_READS = 200                    # registries read per check (the rest: the next check or sweep)


def inventory_of(services: Services) -> Any:
    inventory = getattr(services, "inventory", None)
    if inventory is None:
        inventory = services.inventory = MemoryInventory()
    return inventory


def check_group(resource_group_id: str, reason: str, context: Context, services: Services, *,
                registry_ids: Sequence[str] | None = None, attempt: int = 0) -> list[Evaluation]:
    """The registries known in a resource group that a move or delete took away: recorded and alerted; those still
    there are read again later. Raises only when recording fails (so the trigger delivers the event again)."""
    settings = services.settings
    if not remediation.in_scopes(resource_group_id, settings.scopes):
        log.debug("%s of %s: outside DLP_SCOPES", reason, resource_group_id)
        return []
    budget = Budget.of(settings.time_budget_s)
    with budget.active():
        if registry_ids is None:
            known = [(rid, state) for rid, state in inventory_of(services).known_in(resource_group_id)
                     if state not in FINAL]
            registry_ids = [rid for rid, _ in known]
        left, still = _read(registry_ids, services, budget)
        evaluations = [exit_evaluation(rid, reason, _detail(reason, resource_group_id, context), context, services)
                       for rid in left]
        log.info("%s of %s (event %s): %d registr%s left, %d still there", reason, resource_group_id,
                 context.event_id or "-", len(left), "y" if len(left) == 1 else "ies", len(still))
        if evaluations:
            finish.finish(evaluations, services)
            _forget(services, left)
        if still and attempt < len(RECHECK_S):
            _schedule(services, resource_group_id, reason, context, still, attempt)
    return evaluations


def recheck(body: Any, services: Services) -> list[Evaluation]:
    """A delayed re-check message (CHECK_KIND) of the registries a move or delete had not taken yet."""
    from dlp.ids import resource_group_of

    if not isinstance(body, dict):
        return []
    resource_group = resource_group_of(body.get("resourceGroup"))
    reason = body.get("reason") if body.get("reason") in (GONE_MOVED, GONE_DELETED) else None
    ids = [r for r in body.get("registryIds") or [] if isinstance(r, str) and key(group_of(r)) == key(resource_group or "")]
    attempt = body.get("attempt") if isinstance(body.get("attempt"), int) else len(RECHECK_S)
    raw = body.get("context") if isinstance(body.get("context"), dict) else {}
    fields = {k: v for k, v in raw.items() if k in Context.__dataclass_fields__ and isinstance(v, (str, int))}
    if resource_group is None or reason is None or not ids:
        log.error("scope re-check message is not ours or is damaged; dropped")
        return []
    return check_group(resource_group, reason, Context(**fields), services, registry_ids=ids[:MAX_READS],
                       attempt=attempt)


def after_sweep(listed: Sequence[str], services: Services, context: Context, budget: Budget) -> list[Evaluation]:
    """Remember what this sweep listed in scope (per resource group), and turn what it no longer lists, and ARM
    no longer has, into `not-listed` evaluations. Never raises: a failure costs this comparison, not the sweep."""
    try:
        return _after_sweep(listed, services, context, budget)
    except Exception:
        log.exception("the registries the sweep no longer lists could not be compared; the next sweep does it")
        return []


def _after_sweep(listed: Sequence[str], services: Services, context: Context, budget: Budget) -> list[Evaluation]:
    inventory = inventory_of(services)
    scopes = services.settings.scopes
    now: dict[str, tuple[str, set[str]]] = {}
    for registry_id in listed:
        rg = group_of(registry_id)
        now.setdefault(group_key(rg), (rg, set()))[1].add(registry_id.rsplit("/", 1)[-1])
    before = inventory.listed()
    missing = []
    for row_key, (rg, names) in before.items():
        seen = {key(n) for n in now.get(row_key, ("", set()))[1]}
        missing += [f"{rg}/providers/Microsoft.ContainerRegistry/registries/{n}" for n in names
                    if key(n) not in seen and remediation.in_scopes(rg, scopes)]
    with budget.active():
        left, still = _read(missing[:MAX_READS], services, budget)
    still += missing[MAX_READS:]                        # not read this time: kept for the next sweep
    for registry_id in still:
        rg = group_of(registry_id)
        now.setdefault(group_key(rg), (rg, set()))[1].add(registry_id.rsplit("/", 1)[-1])
    for row_key in set(before) | set(now):
        rg, names = now.get(row_key, (before.get(row_key, ("", []))[0], set()))
        if rg and sorted(names) != sorted(before.get(row_key, ("", []))[1]):
            inventory.save(rg, sorted(names))
    detail = ("The scheduled sweep no longer lists it and ARM answers 404 at this ID: it was deleted or moved, and no "
              "event about it reached the responder.")
    return [exit_evaluation(rid, GONE_UNLISTED, detail, context, services) for rid in left]


def exit_evaluation(registry_id: str, reason: str, detail: str, context: Context, services: Services) -> Evaluation:
    mode = services.settings.mode
    return Evaluation(str(uuid.uuid4()), registry_id, context, mode, Outcome(A_GONE, reason, detail), None,
                      services.clock().isoformat())


def _read(registry_ids: Sequence[str], services: Services, budget: Budget) -> tuple[list[str], list[str]]:
    """(not at their ID any more, still there or unknown): one ARM GET each, within the budget."""
    from dlp.azure.errors import classify

    left, still = [], []
    for index, registry_id in enumerate(registry_ids):
        if budget.remaining() < 2.0:
            still += list(registry_ids[index:])
            break
        try:
            found = services.arm.get_registry(registry_id) is not None
        except Exception as exc:
            log.warning("%s could not be read (%s); checked again later", registry_id, classify(exc))
            found = True
        (still if found else left).append(registry_id)
    return left, still


def _detail(reason: str, resource_group_id: str, context: Context) -> str:
    who = context.caller or "an unknown caller"
    when = f" at {context.event_time}" if context.event_time else ""
    if reason == GONE_MOVED:
        return (f"A moveResources action on its resource group {resource_group_id} by {who}{when}; it is no longer "
                "at this ID. The move event does not say where it went (Event Grid does not carry the request body).")
    return f"Its resource group {resource_group_id} was deleted by {who}{when}."


def _forget(services: Services, registry_ids: Sequence[str]) -> None:
    try:
        inventory_of(services).forget(registry_ids)
    except Exception:
        log.warning("the inventory could not forget %d registr(ies); the next sweep does", len(registry_ids),
                    exc_info=True)


def _schedule(services: Services, resource_group_id: str, reason: str, context: Context, registry_ids: Sequence[str],
              attempt: int) -> None:
    if services.retry is None:
        log.info("no durable retry: the %d registr(ies) still in %s are compared by the next sweep", len(registry_ids),
                 resource_group_id)
        return
    message = {"kind": CHECK_KIND, "resourceGroup": resource_group_id, "reason": reason, "attempt": attempt + 1,
               "registryIds": list(registry_ids)[:MAX_READS], "context": context.to_json()}
    try:
        services.retry.later(message, RECHECK_S[attempt])
    except Exception:
        log.warning("scope re-check of %s not queued; the next sweep compares it", resource_group_id, exc_info=True)


__all__ = ["CHECK_KIND", "after_sweep", "check_group", "exit_evaluation", "recheck"]
