"""The invocation's time budget, and an azure-core retry policy bounded by it.

Event Grid waits 30 s; the SDK defaults (10 retries, backoff up to 120 s, uncapped
Retry-After, 30 s LRO polling) can take hours. Every SDK client built by the adapters uses
`BudgetRetryPolicy`, which reads the deadline of the invocation running in the current
thread (a contextvar, so one shared client serves many concurrent invocations), shortens
per-request timeouts to what is left, and gives up instead of sleeping past the deadline.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from azure.core.pipeline.policies import RetryPolicy

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("dlp_deadline", default=None)

PER_REQUEST_CAP_S = 10.0      # no single HTTP exchange may take more than this
UNBUDGETED_CAP_S = 60.0       # CLI and background poller threads: still never hang forever
MIN_ATTEMPT_S = 0.1           # an attempt with less time than this is not started
MARGIN_S = 0.25               # kept free to record the outcome after the last call


class BudgetExhausted(Exception):
    """Not an AzureError on purpose: azure-core must not catch and retry it."""

    def __init__(self, message: str, status_code: int | None = None):
        self.status_code = status_code
        super().__init__(message)


@dataclass(frozen=True)
class Budget:
    deadline: float            # time.monotonic() value

    @classmethod
    def of(cls, seconds: float) -> Budget:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= MARGIN_S

    @contextmanager
    def active(self) -> Iterator[Budget]:
        """Make this the budget of every SDK call made by this thread inside the block."""
        token = _DEADLINE.set(self.deadline)
        try:
            yield self
        finally:
            _DEADLINE.reset(token)


def remaining() -> float | None:
    deadline = _DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def request_timeouts() -> dict[str, float]:
    """Per-call transport timeouts for the current budget (for calls outside an SDK client)."""
    left = remaining()
    cap = PER_REQUEST_CAP_S if left is None else max(0.1, min(PER_REQUEST_CAP_S, left - MARGIN_S))
    return {"connection_timeout": min(cap, 5.0), "read_timeout": cap}


class BudgetRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy, but never past the invocation's deadline.

    Outside a budget (CLI, tests of adapters) it still caps a single wait at 30 s.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("retry_total", 4)
        kwargs.setdefault("retry_backoff_factor", 0.5)
        kwargs.setdefault("retry_backoff_max", 8)
        super().__init__(**kwargs)

    def configure_retries(self, options):
        settings = super().configure_retries(options)
        left = remaining()
        usable = UNBUDGETED_CAP_S if left is None else max(0.05, left - MARGIN_S)
        settings["timeout"] = min(settings["timeout"], usable)
        cap = UNBUDGETED_CAP_S if left is None else PER_REQUEST_CAP_S
        options["read_timeout"] = min(options.get("read_timeout") or cap, usable)
        options["connection_timeout"] = min(options.get("connection_timeout") or 5.0, usable)
        return settings

    def _configure_timeout(self, request, absolute_timeout, is_response_error):
        """Runs before every attempt (configure_retries runs once per send): each retry of a hanging
        call gets only what is left of the budget, and none is started once nothing is left."""
        super()._configure_timeout(request, absolute_timeout, is_response_error)
        left = remaining()
        if left is None:
            return
        usable = left - MARGIN_S
        if usable <= MIN_ATTEMPT_S:
            raise BudgetExhausted("no time left in this invocation for another attempt")
        options = request.context.options
        options["read_timeout"] = min(options.get("read_timeout") or PER_REQUEST_CAP_S, usable)
        options["connection_timeout"] = min(options.get("connection_timeout") or 5.0, usable)

    def sleep(self, settings, transport, response=None):
        wait = None
        if response is not None:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time(settings)
        left = remaining()
        limit = 30.0 if left is None else left - MARGIN_S
        if wait and wait > limit:
            status = getattr(getattr(response, "http_response", None), "status_code", None)
            raise BudgetExhausted(
                f"retry in {wait:.1f}s does not fit the time budget ({max(limit, 0):.1f}s left)"
                + (f" after HTTP {status}" if status else ""), status)
        if wait:
            transport.sleep(wait)


def storage_response_hook(response) -> None:
    """`raw_response_hook` for the storage SDKs: runs after every attempt, before their retry policy (which
    ignores a custom one) waits for `Retry-After`, uncapped; a wait that would overrun the budget stops here."""
    left = remaining()
    if left is None or response.http_response.status_code < 400:
        return
    try:
        wait = RetryPolicy().get_retry_after(response)
    except (ValueError, TypeError, OverflowError):
        return
    if wait is not None and wait > left - MARGIN_S:
        status = response.http_response.status_code
        raise BudgetExhausted(f"storage retry in {wait:.1f}s does not fit the time budget "
                              f"({max(left - MARGIN_S, 0):.1f}s left) after HTTP {status}", status)


def storage_request_hook(request) -> None:
    """`raw_request_hook` for the storage SDKs, which ignore a custom retry policy: runs before every
    attempt, shortens its timeouts to the budget, and stops the attempt when nothing is left."""
    left = remaining()
    if left is None:
        return
    if left <= MARGIN_S:
        raise BudgetExhausted("no time left in this invocation for a storage request")
    usable = left - MARGIN_S
    options = request.context.options
    options["read_timeout"] = min(options.get("read_timeout") or PER_REQUEST_CAP_S, usable)
    options["connection_timeout"] = min(options.get("connection_timeout") or 5.0, usable)


def budget_transport() -> Any:
    """A requests transport whose waits between attempts (the storage SDKs' own backoff, which ignores a custom
    retry policy, and LRO polling delays) never run past the invocation's deadline: a wait that does not fit
    raises BudgetExhausted instead of sleeping."""
    from azure.core.pipeline.transport import RequestsTransport

    class BudgetTransport(RequestsTransport):
        def sleep(self, duration: float) -> None:
            bounded_sleep(duration)

    return BudgetTransport()


def budget_polling(base: type, interval: float, **kwargs: Any) -> Any:
    """An azure-core polling method (`base`: ARMPolling, LROBasePolling) whose thread stops with the budget.

    azure-core polls a long-running operation on a thread of its own, which does not inherit the invocation's
    budget (a contextvar): after `wait(timeout)` gave up, it would go on polling for as long as the operation
    runs. This one runs its thread inside the deadline current when it is made, so its requests (through
    BudgetRetryPolicy) and the waits between them end with the budget: BudgetExhausted ends the thread, and
    `wait`/`result` re-raise it to the caller, who treats it as "not finished in time"."""
    deadline = _DEADLINE.get()

    class BudgetPolling(base):  # type: ignore[misc, valid-type]
        def run(self) -> None:
            token = _DEADLINE.set(deadline)
            try:
                super().run()
            finally:
                _DEADLINE.reset(token)

        def _sleep(self, delay: float) -> None:
            bounded_sleep(delay)

    return BudgetPolling(interval, **kwargs)


def bounded_sleep(duration: float) -> None:
    """time.sleep, unless the current budget ends first: then BudgetExhausted, without sleeping."""
    left = remaining()
    if left is not None and duration > left - MARGIN_S:
        raise BudgetExhausted(f"a wait of {duration:.1f}s does not fit the time budget ({max(left - MARGIN_S, 0):.1f}s left)")
    if duration > 0:
        time.sleep(duration)
