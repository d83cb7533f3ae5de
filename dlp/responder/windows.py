"""The window a remediation closed: from when, and by whose write, the registry was open until our verified write.

Who opened it is provenance's answer (dlp.domain.provenance.opening): change history's opening change when there is
one, else the event that reported the write, else unknown. An event carries its write's time and caller, so the
event path asks nothing more (no request in the drift window). A durable retry, an HTTP re-check or the breaker's
window-end re-check has no such event: one change-history query names the opener (a window opened while the breaker
held is otherwise recorded with no opener and an unknown start). The sweep reads history for all its registries at
once and fills the window itself (dlp.responder.timeline.with_history).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain import exposure, provenance
from dlp.domain.model import Change
from dlp.responder import history
from dlp.responder.history import LOOKBACK_S
from dlp.responder.invocation import Invocation

log = logging.getLogger("dlp.pipeline")

HISTORY_BUDGET_S = 3.0        # the opener's query may take this much of what is left after the write
NO_HISTORY_TRIGGERS = ("event", "sweep", "cli")   # the event knows its write; the sweep fills it; the CLI does not ask


def remediation_window(invocation: Invocation, changes: Sequence[Change]) -> Any:
    """The remediation's window, closed by our write now."""
    context = invocation.target.context
    properties = [c.property for c in changes]
    windows: tuple[exposure.Window, ...] = ()
    if context.trigger not in NO_HISTORY_TRIGGERS:
        windows = _history_windows(invocation)
    opening = provenance.opening(properties, windows, context, invocation.evaluation_id)
    closed_at = invocation.services.clock()
    if opening.window is not None:
        window = opening.window
        closed = exposure.Window(window.registry_id, window.property, window.value, window.opened_at,
                                 window.opened_by, closed_at, "", exposure.CLOSED_BY_RESPONDER,
                                 window.opened_correlation)
        return exposure.as_exposure(closed)
    return exposure.remediation_exposure(exposure.iso(opening.at), opening.by, properties, closed_at)


def _history_windows(invocation: Invocation) -> tuple[exposure.Window, ...]:
    """This registry's windows from change history (never raises: unknown is recorded as unknown)."""
    services = invocation.services
    left = invocation.budget.remaining()
    try:
        with Budget.of(min(HISTORY_BUDGET_S, max(0.5, left - 2.0))).active():
            found = history.read_history(services, services.clock() - timedelta(seconds=LOOKBACK_S),
                                          registry_ids=[invocation.registry_id])
    except Exception as exc:
        log.warning("change history of %s unreadable (%s): its window's opener is unknown", invocation.registry_id,
                    exc)
        return ()
    return next(iter(found.values()), history.History()).windows


__all__ = ["remediation_window"]
