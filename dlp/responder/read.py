"""The snapshot stage: one ARM GET of the registry, normalised into the value the rules read.

A registry whose update is still running is re-read briefly, then handed to the durable retry; export pipelines
are listed only when the record must name them or ARM refused to disable exports (the write itself is the check).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from dlp.domain import remediation
from dlp.domain.model import Registry
from dlp.domain.rules import evaluate
from dlp.inputs.sources import registry_from_resource
from dlp.responder.deferral import Defer, as_deferral
from dlp.responder.invocation import Invocation

log = logging.getLogger("dlp.pipeline")

UPDATING_WAIT_S = 1.0          # re-read interval while provisioningState is Updating
UPDATING_MAX_WAIT_S = 6.0      # then hand over to the durable retry
SETTLED = ("succeeded", "failed", "canceled")


def read_registry(invocation: Invocation) -> Registry | None:
    """GET the registry (None: it does not exist); while an update is running, re-read briefly, then defer."""
    target, services, budget = invocation.target, invocation.services, invocation.budget
    waited = 0.0
    while True:
        raw = services.arm.get_registry(target.registry_id)
        if raw is None:
            return None
        registry = registry_from_resource(raw, "arm")
        if registry.provisioning_state.lower() in SETTLED:
            return registry
        if waited >= UPDATING_MAX_WAIT_S or budget.remaining() < UPDATING_WAIT_S + 2:
            raise Defer(remediation.R_UPDATING, f"registry is {registry.provisioning_state}", target.pending,
                        evaluate(registry))
        time.sleep(UPDATING_WAIT_S)
        waited += UPDATING_WAIT_S


def with_pipelines(invocation: Invocation, registry: Registry) -> Registry:
    """Look up export pipelines only when exports must be disabled on a Premium registry.

    A listing ARM refuses (403, an api-version it does not serve) leaves them unknown: the export write
    is then blocked by its guard, while a public-access fix can still go ahead. Transient failures defer."""
    from azure.core.exceptions import HttpResponseError

    from dlp.azure.errors import classify

    if registry.exports_disabled or not registry.premium or registry.export_pipelines is not None:
        return registry
    try:
        return replace(registry, export_pipelines=invocation.services.arm.list_export_pipelines(registry.id))
    except Exception as exc:
        deferred = as_deferral(exc, evaluate(registry))
        if deferred is not exc:   # transient: deferred with what was read, so a known drift alerts at once
            raise deferred from exc
        if not isinstance(exc, HttpResponseError):
            raise
        log.warning("export pipelines of %s could not be listed: %s", registry.id, classify(exc))
        return registry


def optimistic(registry: Registry) -> Registry:
    """The registry as planning sees it before any listing: no export pipelines. ARM refuses to disable exports
    while pipelines exist, so the write itself is the check; only a refusal makes us list them."""
    return registry if registry.export_pipelines is not None else replace(registry, export_pipelines=())


__all__ = ["optimistic", "read_registry", "with_pipelines"]
