"""One evaluation of one target: what every stage of it needs, carried as one value.

The stages (read, lease, write, defer) take an `Invocation` instead of a dozen parameters: the target, the
adapters, the time budget, whether this trigger may write, the evaluation's id (fixed before any write, because the
remediation intent and the PATCH's correlation ID carry it), and, once taken, the lease and the breaker's rows.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain.intent import Intent
from dlp.domain.model import Evaluation, Outcome, Target
from dlp.domain.remediation import Policy, exemption_lookalikes
from dlp.responder.services import Services


@dataclass
class Held:
    """The lease an evaluation holds; a new value once extended (its ETag changes)."""

    lease: Any
    short: bool          # taken during the read for SPECULATIVE_TTL_S: extend it before the write


@dataclass
class Invocation:
    """One evaluation of one target, from the first read to its outcome."""

    target: Target
    services: Services
    budget: Budget
    enforce: bool
    evaluation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: str = ""
    t0: float = field(default_factory=time.monotonic)
    held: Held | None = None                 # the lease, once taken
    recent: tuple[Intent, ...] = ()          # the breaker's rows of the last hour, read with the lease
    intent: str = ""                         # this remediation's intent (row key), once written
    settled: tuple[Evaluation, ...] = ()     # earlier remediations found landed on the way: recorded with the outcome

    @classmethod
    def start(cls, target: Target, services: Services, budget: Budget, enforce: bool | None = None) -> Invocation:
        """`enforce=None`: DLP_MODE decides; a trigger may narrow it (dlp.responder.deferral.retry_may_write)."""
        settings = services.settings
        return cls(target, services, budget, settings.mode == "enforce" if enforce is None else enforce,
                   started=services.clock().isoformat())

    @property
    def registry_id(self) -> str:
        return self.target.registry_id

    @property
    def mode(self) -> str:
        return "enforce" if self.enforce else "audit"

    @cached_property
    def policy(self) -> Policy:
        return self.services.settings.policy(enforce=self.enforce)

    @cached_property
    def warnings(self) -> tuple[str, ...]:
        return exemption_lookalikes(self.registry_id, self.services.settings.exemptions)

    @property
    def today(self) -> date:
        return self.services.clock().date()

    def done(self, outcome: Outcome, assessment: Any = None, *, evaluation_id: str = "", **extra: Any) -> Evaluation:
        """The evaluation's result (`intent=` names the intent whose outcome it is: recording it resolves it)."""
        extra.setdefault("settled", self.settled)
        return Evaluation(evaluation_id or self.evaluation_id, self.registry_id, self.target.context, self.mode,
                          outcome, assessment, self.started, round((time.monotonic() - self.t0) * 1000, 1),
                          warnings=self.warnings, **extra)


__all__ = ["Held", "Invocation"]
