"""Remediation intents: the breaker row written before every PATCH, resolved once the write's outcome is recorded.

A pending intent is the durable proof that a write may have landed: whoever finds it (a redelivery, the durable
retry, the outbox timer) records the remediation under the intent's evaluation id, so one write is one record and
one alert whoever records it.
"""

from __future__ import annotations

import logging

from dlp.azure.budget import Budget
from dlp.responder.services import Services

log = logging.getLogger("dlp.pipeline")

RELEASE_BUDGET_S = 2.0         # giving a lease or an intent back may run past a spent budget by this much


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
