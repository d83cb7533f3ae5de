"""Alerting on state changes (issue 5). Until then: no alerts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlp.model import Evaluation


class NullNotifier:
    def notify(self, evaluations: Sequence[Evaluation], *, digest: bool = False) -> None:
        return None


def build_notifier(settings: Any, credential: Any, table_service: Any = None) -> Any:
    return NullNotifier()
