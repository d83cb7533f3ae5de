"""The adapters every stage works with, built once per process at the composition root (dlp.runtime) and injected.

Tests build the same adapters pointed at the emulators; nothing here is a mock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from dlp.domain.model import Evaluation
from dlp.responder.bursts import Bursts
from dlp.settings import Settings


class Recorder(Protocol):
    def record(self, evaluations: Sequence[Evaluation]) -> None:
        """Keep the record; raise only when it could be neither sent nor kept (so the trigger retries)."""


class Notifier(Protocol):
    def notify(self, evaluations: Sequence[Evaluation], *, digest: bool = False, record_pending: bool = False) -> None:
        """Alert on state changes; never raises, never blocks remediation. `record_pending`: the evaluations
        could not be recorded (yet): the alerts say so."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Services:
    """The adapters, built once per process and injected (tests point them at emulators)."""

    settings: Settings
    arm: Any
    state: Any
    recorder: Recorder
    notifier: Notifier
    retry: Any = None
    clock: Callable[[], datetime] = field(default=utcnow)
    graph: Any = None      # Resource Graph adapter (sweep, scope re-check, scan); dlp.azure.graph.graph_for builds it
    identity: Any = None   # dlp.azure.identity.Identity: who the responder is (dlp.domain.provenance decides with it)
    bursts: Bursts = field(default_factory=Bursts)   # events of one registry arriving together share one read
    dead_letters: Any = None   # dlp.responder.deadletter.DeadLetterContainer when DLP_DEADLETTER_CONTAINER is set
    registry_logs: Any = None  # dlp.azure.logs_query.RegistryLogs when DLP_REGISTRY_LOGS_WORKSPACE is set
    impacts: Any = None        # dlp.azure.impacts: the pull looks' state (Table storage, else in memory)
    inventory: Any = None      # dlp.azure.inventory: the registries known per resource group (scope exits, issue 22)
