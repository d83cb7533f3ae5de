"""Teams channel: POST the Adaptive Card to a Workflows "When a Teams webhook request is received" URL.

Office 365 connectors are retired; Workflows answers 202 with an empty body (any 2xx is
success) and 429 with `Retry-After` when throttled. The POST goes through azure-core with
`BudgetRetryPolicy`, which waits for `Retry-After` only when the wait fits the invocation's
budget and otherwise gives up at once, so the alert goes to the outbox instead of holding
Event Grid. The URL is a secret (its `sig`): it is never logged, and error text is scrubbed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from dlp.outputs.alerts import card
from dlp.outputs.alerts.alert import Alert
from dlp.outputs.alerts.channel import DeliveryError
from dlp.outputs.alerts.redact import protect, scrub


class TeamsChannel:
    """One Workflows webhook; one HTTP connection pool shared by every thread of the process."""

    name = "teams"

    def __init__(self, webhook_url: str, *, docs_base: str = "", transport: Any = None):
        self._url = webhook_url
        self._secrets = protect(webhook_url)
        self._docs_base = docs_base
        self._transport = transport
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:      # never show the URL, even in a debugger or a traceback's locals
        return "TeamsChannel(<webhook>)"

    def _pipeline(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.core import PipelineClient
                from azure.core.pipeline.policies import HeadersPolicy, UserAgentPolicy

                from dlp.azure.budget import BudgetRetryPolicy

                if self._transport is None:
                    from dlp.azure.arm import shared_transport

                    self._transport = shared_transport()
                policies = [HeadersPolicy(), UserAgentPolicy("acr-dlp-responder"),
                            BudgetRetryPolicy(retry_total=2, retry_backoff_factor=0.3, retry_backoff_max=2)]
                self._client = PipelineClient(base_url="https://teams.invalid", policies=policies,
                                              transport=self._transport)
            return self._client

    def render(self, alerts: Sequence[Alert], *, digest: bool = False, note: str = "",
               folded: Sequence[str] = ()) -> dict[str, Any]:
        return card.message(alerts, digest=digest, docs_base=self._docs_base, note=note, folded=folded)

    def send(self, alerts: Sequence[Alert], *, digest: bool = False, note: str = "", folded: Sequence[str] = ()) -> None:
        """Deliver one card (a digest card for several alerts); raise DeliveryError unless Teams took it."""
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        from dlp.azure.budget import BudgetExhausted

        body = card.encode(self.render(alerts, digest=digest, note=note, folded=folded))
        request = HttpRequest("POST", self._url, content=body,
                              headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            response = self._pipeline().send_request(request)
        except BudgetExhausted as exc:
            raise DeliveryError(self.name, scrub(exc, self._secrets), status=exc.status_code) from None
        except AzureError as exc:
            raise DeliveryError(self.name, f"{type(exc).__name__}: {scrub(_first_line(exc), self._secrets)}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        raise DeliveryError(self.name, f"HTTP {status} {scrub(_error_code(response), self._secrets)}".rstrip(),
                            status=status)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _error_code(response: Any) -> str:
    """The Workflows/Logic Apps error code from the body, if any (bounded; the body is scrubbed by the caller)."""
    try:
        error = json.loads(response.text() or "{}").get("error") or {}
    except (ValueError, AttributeError):
        return ""
    return str(error.get("code", ""))[:100] if isinstance(error, dict) else ""
