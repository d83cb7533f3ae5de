"""Recording evaluations: the structured application-log line, and (issue 4) Log Analytics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dlp.model import Evaluation

log = logging.getLogger("dlp.evaluation")


def log_line(evaluation: Evaluation) -> None:
    """One structured line per evaluation (Application Insights `traces`). No claims, no secrets."""
    log.info("evaluation registry=%s compliant=%s action=%s reason=%s trigger=%s correlation=%s duration_ms=%.0f",
             evaluation.registry_id, evaluation.compliant, evaluation.outcome.action, evaluation.outcome.reason or "-",
             evaluation.context.trigger, evaluation.context.correlation_id or "-", evaluation.duration_ms,
             extra={"dlp": {"evaluationId": evaluation.evaluation_id, "registryId": evaluation.registry_id,
                            "compliant": evaluation.compliant, "action": evaluation.outcome.action}})


class LogRecorder:
    """Application log only (no Log Analytics configured)."""

    def record(self, evaluations: Sequence[Evaluation]) -> None:
        for evaluation in evaluations:
            log_line(evaluation)


def build_recorder(settings: Any, credential: Any, table_service: Any = None) -> Any:
    return LogRecorder()
