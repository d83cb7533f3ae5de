"""The durable retry: work a failing dependency kept from finishing goes to a Storage queue.

The queue-triggered function in function_app.py reads it. Messages are base64 text, the
Functions queue trigger's default encoding. Backoff is ours (the message's visibility timeout
grows with the attempt number); the host's maxDequeueCount (host.json) moves crash loops to the
poison queue. The same queue carries scheduled re-checks (a message made visible later, e.g.
when the revert-war breaker's window ends): `schedule`.
"""

from __future__ import annotations

import json
import random
from typing import Any

from dlp.settings import RETRY_QUEUE

# Seconds before each attempt. The first comes soon (most deferrals are a throttled or busy moment), with
# jitter so that a burst of deferrals (a sweep that ARM throttled) does not come back as one burst; then it
# backs off. 10 attempts over about 2 h 50 min, so an ARM incident of up to two hours is still covered.
FIRST_ATTEMPT_S = (2.0, 10.0)
BACKOFF_S = (10, 30, 60, 120, 300, 600, 1800, 3600, 3600)
MAX_ATTEMPTS = 1 + len(BACKOFF_S)
MAX_VISIBILITY_S = 7 * 24 * 3600
JITTER = 0.2            # later attempts wait up to 20 % longer, never shorter (the schedule is a minimum)


def backoff_s(attempt: int, *, rng: random.Random | None = None) -> float:
    """The wait before durable-retry attempt `attempt` (1-based): within 10 s, then 10 s, 30 s, 1, 2, 5, 10,
    30, 60, 60 minutes, each with jitter."""
    draw = (rng or random).uniform
    if attempt <= 1:
        return round(draw(*FIRST_ATTEMPT_S), 1)
    base = BACKOFF_S[min(attempt - 2, len(BACKOFF_S) - 1)]
    return round(base * draw(1.0, 1.0 + JITTER), 1)


POISON_QUEUE = RETRY_QUEUE + "-poison"     # where the Functions host moves a message after maxDequeueCount


class RetryQueue:
    def __init__(self, queue_client: Any, *, base_delay_s: float = 60, poison_client: Any = None):
        self._queue = queue_client
        self.poison = poison_client             # read by the outbox timer (dlp.responder.delivery): nothing rots unseen
        self._created = False
        self.base_delay_s = base_delay_s     # 60: the retry schedule as written; tests and the demo use 0 (at once)
        self.check_delay_s: float | None = None   # delayed exposure checks; None: dlp.responder.timeline.CHECK_DELAY_S
        self.look_delay_s: float | None = None    # pull looks; None: when each is due (dlp.responder.impact)

    @classmethod
    def from_settings(cls, settings: Any, credential: Any) -> RetryQueue:
        from azure.storage.queue import LinearRetry, QueueClient, TextBase64EncodePolicy

        from dlp.azure.budget import budget_transport, storage_request_hook, storage_response_hook

        # The queue SDK's default retry (ExponentialRetry) waits 15 s, then 18 s, between attempts, whatever the
        # budget: a short linear backoff instead; the hooks cut each attempt to the budget.
        options = {"message_encode_policy": TextBase64EncodePolicy(),
                   "retry_policy": LinearRetry(backoff=0.5, random_jitter_range=0.2, retry_total=2),
                   "connection_timeout": 5, "read_timeout": 10, "raw_request_hook": storage_request_hook,
                   "raw_response_hook": storage_response_hook, "transport": budget_transport()}
        def client(name: str) -> Any:
            if settings.storage_connection_string:
                return QueueClient.from_connection_string(settings.storage_connection_string, name, **options)
            return QueueClient(settings.storage_queue_uri, name, credential=credential, **options)

        return cls(client(RETRY_QUEUE), poison_client=client(POISON_QUEUE))

    def hand_over(self, message: dict[str, Any], attempt: int) -> float:
        """Queue attempt `attempt`; returns the seconds until it runs. Raises when the queue cannot take it:
        then the invocation must fail so Event Grid redelivers."""
        return self.later(message, backoff_s(attempt))

    def later(self, message: dict[str, Any], delay_s: float) -> float:
        """`schedule` on the retry schedule's clock (`base_delay_s` 60: as written; 0: at once, for tests and the
        demo): the backoff and the breaker's re-check. Returns the delay used."""
        return self.schedule(message, delay_s * self.base_delay_s / 60)

    def schedule(self, message: dict[str, Any], delay_s: float) -> float:
        """Send `message`, visible to the queue trigger in `delay_s` seconds (at most 7 days, the service's
        limit for a visibility timeout); returns the delay used. Raises when the queue cannot take it."""
        from azure.core.exceptions import ResourceExistsError

        if not self._created:
            try:
                self._queue.create_queue()
            except ResourceExistsError:
                pass
            self._created = True
        delay = min(MAX_VISIBILITY_S, max(0.0, delay_s))
        self._queue.send_message(json.dumps(message, separators=(",", ":")), visibility_timeout=round(delay))
        return delay
