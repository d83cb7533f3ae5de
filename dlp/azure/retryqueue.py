"""The durable retry: work a failing dependency kept from finishing goes to a Storage queue.

The queue-triggered function in function_app.py reads it. Messages are base64 text, the
Functions queue trigger's default encoding. Backoff is ours (visibility timeout grows with
the attempt number); the host's maxDequeueCount (host.json) moves crash loops to the poison queue.
"""

from __future__ import annotations

import json
from typing import Any

from dlp.settings import RETRY_QUEUE

MAX_ATTEMPTS = 8


def backoff_s(attempt: int, base_s: float = 60) -> int:
    """1, 2, 4, ... minutes, at most an hour: about four hours of retries in all."""
    return int(min(3600, base_s * 2 ** max(0, attempt - 1)))


class RetryQueue:
    def __init__(self, queue_client: Any, *, base_delay_s: float = 60):
        self._queue = queue_client
        self._created = False
        self.base_delay_s = base_delay_s     # tests and the demo use 0 to replay at once
        self.check_delay_s: float | None = None   # delayed exposure checks; None: dlp.timeline.CHECK_DELAY_S

    @classmethod
    def from_settings(cls, settings: Any, credential: Any) -> RetryQueue:
        from azure.storage.queue import LinearRetry, QueueClient, TextBase64EncodePolicy

        from dlp.budget import storage_request_hook, storage_response_hook

        # The queue SDK's default retry (ExponentialRetry) waits 15 s, then 18 s, between attempts, whatever the
        # budget: a short linear backoff instead; the hooks cut each attempt to the budget.
        options = {"message_encode_policy": TextBase64EncodePolicy(),
                   "retry_policy": LinearRetry(backoff=0.5, random_jitter_range=0.2, retry_total=2),
                   "connection_timeout": 5, "read_timeout": 10, "raw_request_hook": storage_request_hook,
                   "raw_response_hook": storage_response_hook}
        if settings.storage_connection_string:
            client = QueueClient.from_connection_string(settings.storage_connection_string, RETRY_QUEUE, **options)
        else:
            client = QueueClient(settings.storage_queue_uri, RETRY_QUEUE, credential=credential, **options)
        return cls(client)

    def hand_over(self, message: dict[str, Any], attempt: int) -> None:
        """Raises when the queue cannot take it: then the invocation must fail so Event Grid redelivers."""
        self.schedule(message, backoff_s(attempt, self.base_delay_s))

    def schedule(self, message: dict[str, Any], delay_s: float) -> None:
        """Send `message`, invisible for `delay_s` seconds (at most 7 days, the queue's limit). Raises when the
        queue cannot take it."""
        from azure.core.exceptions import ResourceExistsError

        if not self._created:
            try:
                self._queue.create_queue()
            except ResourceExistsError:
                pass
            self._created = True
        self._queue.send_message(json.dumps(message, separators=(",", ":")),
                                 visibility_timeout=int(max(0, min(delay_s, 7 * 24 * 3600))))
