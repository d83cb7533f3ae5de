"""Own writes: the event each remediation raises costs nothing, once.

The responder's PATCH raises a `ResourceWriteSuccess` whose caller is the responder itself. Its result was verified
when the PATCH answered, and any other write raises its own event, so that one event is recorded at debug level
only: no ARM request, no row, no alert. Whether an event is that one is provenance's decision
(dlp.domain.provenance.own_write: our signed identity, our intent's correlation ID, inside the intent's time, not
used yet); this stage reads the registry's intents (one Table query), asks, and marks the intent used under its
ETag, so that of two events carrying our correlation ID (ours, and an attacker's replay of it) one at most is
skipped. The cost compared with reading the registry: one query and one conditional update, about a tenth of an
ARM GET (bench/REPORT.md), and no record, no alert and no delayed check for an event that can only find the
registry as we left it.
"""

from __future__ import annotations

import logging

from dlp.domain import provenance
from dlp.domain.model import Target
from dlp.responder.services import Services

log = logging.getLogger("dlp.own_writes")


def skip(target: Target, services: Services) -> bool:
    """True for the event of the responder's own write (debug line only); False: evaluate it like anyone's."""
    context = target.context
    identity = services.identity
    if identity is None or context.trigger != "event":
        return False
    responder = identity.responder()
    if not responder.signed(context):
        return False
    now = services.clock()
    try:
        intents = services.state.recent_remediations(target.registry_id, now)
        intent = provenance.own_write(context, intents, responder, now)
        used = intent is not None and services.state.mark_own_event(target.registry_id, intent, context.event_id)
    except Exception:
        log.warning("intents of %s could not be read or marked: the event of our identity is evaluated",
                    target.registry_id, exc_info=True)
        return False
    if used:
        log.debug("own write: event %s on %s (app %s, object %s) needs no evaluation", context.event_id,
                  target.registry_id, context.caller_app_id or "-", context.caller_object_id or "-")
        return True
    log.warning("a write to %s by the responder's identity (app %s, object %s) that is not one of its own writes "
                "(no intent of ours carries its correlation ID, it lies outside the intent's time, or that intent's "
                "event was already seen): evaluated like any other write", target.registry_id,
                context.caller_app_id or "-", context.caller_object_id or "-")
    return False


__all__ = ["skip"]
