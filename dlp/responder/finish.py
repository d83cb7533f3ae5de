"""The last two stages of every evaluation: record, then notify; then the remediation intents are resolved.

Recording comes first and may raise (so the trigger delivers the work again); alerts never undo or block what
was done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dlp.domain.model import A_REMEDIATED, Evaluation, flatten
from dlp.responder.intents import orphan_intent, resolve_intent
from dlp.responder.services import Services

log = logging.getLogger("dlp.pipeline")


def finish(evaluations: Sequence[Evaluation], services: Services, *, digest: bool = False) -> list[Evaluation]:
    """Record, alert, then resolve the remediation intents the evaluations carry.

    Recording raises only when the rows could be neither sent nor kept: the alerts still go out (saying the
    record is pending), the intents stay pending, and the exception makes the trigger deliver the work again;
    that delivery finds the intent and records the remediation under the same evaluation id (one alert).
    Remediations an evaluation settled on its way (`Evaluation.settled`) are recorded with it.

    Closed exposure windows first get what is known of their pulls (dlp/responder/impact.py), so the record and
    the alert say it; the evaluations as recorded are returned."""
    from dlp.responder import impact

    evaluations = impact.prepare(flatten(evaluations), services)
    try:
        services.recorder.record(evaluations)
    except Exception:
        _notify(services, evaluations, digest=digest, record_pending=True)
        for evaluation in evaluations:      # this invocation fails: its redelivery may take the intents at once
            if evaluation.intent:
                orphan_intent(services, evaluation.registry_id, evaluation.intent)
        raise
    _notify(services, evaluations, digest=digest)
    for evaluation in evaluations:
        if evaluation.intent:
            resolve_intent(services, evaluation.registry_id, evaluation.intent,
                     "recorded" if evaluation.outcome.action == A_REMEDIATED else evaluation.outcome.action)
    return list(evaluations)


def _notify(services: Services, evaluations: Sequence[Evaluation], *, digest: bool, record_pending: bool = False) -> None:
    try:
        if record_pending:
            services.notifier.notify(evaluations, digest=digest, record_pending=True)
        else:
            services.notifier.notify(evaluations, digest=digest)
    except Exception:                               # alerts never undo or block what was done
        log.exception("alerting failed; the evaluations are recorded")
