"""Glue between the Functions triggers and the pipeline: what each trigger hands over."""

from __future__ import annotations

import json
import logging
from typing import Any

from dlp import runtime
from dlp.domain.model import Evaluation
from dlp.inputs import events
from dlp.outputs import alerting
from dlp.responder import deferral, impact, pipeline, scope_exits, timeline

log = logging.getLogger("dlp.handlers")


def on_event(event: Any) -> list[Evaluation]:
    """Event Grid trigger. Malformed or irrelevant events are acknowledged (never retried for 24 h);
    only a failure to record or to hand work to the durable retry raises."""
    intake = events.from_function_event(event)
    if intake.malformed:
        log.warning("malformed event %s acknowledged: %s", intake.event_id, intake.malformed)
        return []
    if intake.ignored:
        log.debug("event %s ignored: %s", intake.event_id, intake.ignored)
        return []
    if intake.group_change is not None:         # a resource group moved registries away, or was deleted
        change = intake.group_change
        return scope_exits.check_group(change.resource_group, change.reason, change.context, runtime.services())
    return pipeline.run(intake.targets, runtime.services())


def on_retry(message: Any) -> list[Evaluation]:
    """Queue trigger of the durable retry."""
    try:
        body = json.loads(message.get_body().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        log.error("durable-retry message %s is not JSON; dropped", getattr(message, "id", "?"))
        return []
    if isinstance(body, dict) and body.get("kind") == timeline.CHECK_KIND:
        return timeline.run_check(body, runtime.services())
    if isinstance(body, dict) and body.get("kind") == impact.LOOK_KIND:
        return impact.run_look(body, runtime.services())
    if isinstance(body, dict) and body.get("kind") == scope_exits.CHECK_KIND:
        return scope_exits.recheck(body, runtime.services())
    if isinstance(body, dict) and body.get("kind") == alerting.DIGEST_KIND:
        services = runtime.services()                                   # a group's alert window ended
        alerting.flush_digests(services.notifier, body, services.settings.time_budget_s)
        return []
    target = deferral.target_from_retry(body)
    if target is None:
        log.error("durable-retry message %s is not a registry target; dropped", getattr(message, "id", "?"))
        return []
    services = runtime.services()
    # The mode in force now decides, narrowed by what the queuing trigger was allowed: never widened.
    return pipeline.run([target], services, enforce=deferral.retry_may_write(body, services.settings))
