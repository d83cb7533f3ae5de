"""The revert-war breaker's follow-up: a registry it holds is re-checked when its window lets a write through again.

The breaker (dlp.domain.remediation, `revert-war`) stops writing a registry that was remediated
DLP_MAX_REMEDIATIONS times within the hour, and reports who keeps changing it. So that the registry is not left
drifted until someone writes to it again, a re-check is put on the durable-retry queue, invisible until the window
ends.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from dlp.azure.state import BREAKER_WINDOW
from dlp.domain.model import Context
from dlp.responder.deferral import retry_message
from dlp.responder.invocation import Invocation

log = logging.getLogger("dlp.pipeline")

BREAKER_RECHECK_MARGIN = timedelta(seconds=60)   # after the breaker's window ends: the re-check then sees it open
RECHECK_OPERATION = "re-check when the revert-war breaker's window ends"


def recheck_when_breaker_ends(invocation: Invocation, registry_id: str) -> str:
    """Schedule the re-check (a message on the durable-retry queue, invisible until then). Once per window: every
    instance computes the same moment and the state store remembers it (a second message, from a race, only costs
    a GET). Never raises: says what was (or was not) arranged."""
    services, policy = invocation.services, invocation.policy
    if services.retry is None or not policy.enforce:
        return "It is not re-checked automatically (no durable retry, or not enforcing): re-check it by hand."
    whens = sorted(r.when for r in invocation.recent)
    try:
        due = datetime.fromisoformat(whens[len(whens) - policy.max_remediations]) + BREAKER_WINDOW + BREAKER_RECHECK_MARGIN
        due = due.astimezone(timezone.utc).replace(microsecond=0)
        when = due.isoformat()
        if not services.state.recheck_scheduled(registry_id, when):
            context = Context(trigger="retry", operation_name=RECHECK_OPERATION,
                              correlation_id=invocation.target.context.correlation_id)
            delay = max(0.0, (due - services.clock()).total_seconds())
            services.retry.later(retry_message(registry_id, context, enforce=policy.enforce, attempt=0,
                                               reason="the revert-war breaker's window ends"), delay)
            services.state.mark_recheck(registry_id, when)
    except Exception as exc:
        from dlp.azure.errors import classify

        log.warning("re-check of %s after the breaker window could not be scheduled: %s", registry_id, classify(exc))
        return "The automatic re-check could not be scheduled: the next sweep or write re-checks it."
    return f"It is re-checked automatically when the breaker's window ends, at {when}."


__all__ = ["BREAKER_RECHECK_MARGIN", "RECHECK_OPERATION", "recheck_when_breaker_ends"]
