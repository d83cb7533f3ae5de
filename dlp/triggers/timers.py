"""The timer functions' work: each takes the process's Services from the composition root and runs one stage.

The stages themselves never look the Services up (dlp.runtime imports them, so they must not import it back).
"""

from __future__ import annotations

import logging
from typing import Any

from dlp import runtime
from dlp.outputs import alerting, recording
from dlp.responder import deadletter, delivery
from dlp.responder import sweep as sweeping

log = logging.getLogger("dlp.handlers")


def outbox_drain() -> None:
    """Every 5 minutes: record remediations whose invocation died and announce poison messages
    (dlp/responder/delivery.py), re-send what the outbox keeps: findings Log Analytics did not take
    (dlp/outputs/recording.py), then alerts no channel took (dlp/outputs/alerting.py); a failure of one does not
    hold up the next (the first failure is raised at the end, so the host logs the run as failed)."""
    services = runtime.services()
    try:
        delivery.tick(services)
    finally:
        try:
            recording.drain_outbox(services.recorder)
        finally:
            alerting.drain_outbox(services.notifier)


def dead_letter_replay(_timer: Any = None) -> deadletter.ReplayReport | None:
    """Every 5 minutes (offset from the outbox drain): events Event Grid dead-lettered into
    DLP_DEADLETTER_CONTAINER run through the pipeline like live ones (dlp/responder/deadletter.py)."""
    return deadletter.replay_pending(runtime.services())


def sweep(timer: Any) -> sweeping.Result:
    """The scheduled sweep (dlp/responder/sweep.py). Configuration errors raise: a failed run shows in the host's
    log."""
    if getattr(timer, "past_due", False):
        log.warning("the sweep is running late (past due)")
    schedule = getattr(timer, "schedule_status", None)
    scheduled_for = str(schedule.get("Last", "")) if isinstance(schedule, dict) else ""
    return sweeping.sweep(runtime.services(), scheduled_for=scheduled_for)


__all__ = ["dead_letter_replay", "outbox_drain", "sweep"]
