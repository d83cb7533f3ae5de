"""What every alert channel provides, and the one error a channel raises."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dlp.outputs.alerts.alert import Alert


class DeliveryError(Exception):
    """An alert could not be delivered (it goes to the outbox); the message never contains a secret."""

    def __init__(self, channel: str, message: str, *, status: int | None = None):
        self.channel = channel
        self.status = status
        super().__init__(f"{channel}: {message}")


class Channel(Protocol):
    name: str

    def send(self, alerts: Sequence[Alert], *, digest: bool = False, note: str = "", folded: Sequence[str] = ()) -> None:
        """Deliver one message for `alerts` (a digest when several); raise DeliveryError when it was not taken.
        A grouped digest says whose burst it is (`note`) and sums up the alerts over a cap (`folded`: their ids).

        Must be safe to call again with the same alerts (the outbox retries it)."""
