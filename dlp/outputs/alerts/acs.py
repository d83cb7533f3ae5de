"""Email channel: Azure Communication Services Email with the Function App's managed identity.

`begin_send` is a long-running operation (202 + Operation-Location, then polls) whose SDK
default polls every 30 s. We poll every `POLL_INTERVAL_S` (a `Retry-After` from the service
still wins) and stop waiting when the invocation's budget runs out. Every send carries an
`operation_id` derived from the alerts it contains, so when a send is retried (its wait ran
out, or it failed after the service took it) ACS recognises the operation and does not mail
twice. Azure-managed sender domains allow 5 mails a minute and 10 an hour (custom domains 30 and 100, see
docs/operations.md), which is why a notify call never sends more than one mail (several changes become one digest)
and why bursts and repeats are grouped and capped (dlp/outputs/alerts/grouping.py).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from dlp.outputs.alerts import bodies
from dlp.outputs.alerts.alert import Alert
from dlp.outputs.alerts.channel import DeliveryError

POLL_INTERVAL_S = 0.25         # only when ACS sends no Retry-After (its Retry-After wins); a few polls at most
UNBUDGETED_WAIT_S = 60.0          # outbox drains outside an invocation budget still stop waiting
_NAMESPACE = uuid.UUID("5b0e4c1e-6a43-4f7e-9d3c-0d1a7c2e9b11")     # fixed: operation ids must be stable forever


def operation_id(alerts: Sequence[Alert]) -> str:
    """The same alerts always give the same ACS operation id (a UUID, the form ACS generates itself)."""
    return str(uuid.uuid5(_NAMESPACE, "email|" + ",".join(sorted(a.alert_id for a in alerts))))


class EmailChannel:
    """One ACS resource, sender and recipient list; one SDK client per process, shared by threads."""

    name = "email"

    def __init__(self, endpoint: str, credential: Any, sender: str, recipients: Sequence[str], *,
                 docs_base: str = "", transport: Any = None, polling_interval: float = POLL_INTERVAL_S):
        self._endpoint = endpoint
        self._credential = credential
        self._sender = sender
        self._recipients = tuple(recipients)
        self._docs_base = docs_base
        self._transport = transport
        self._polling_interval = polling_interval
        self._client: Any = None
        self._lock = threading.Lock()

    def _email_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.communication.email import EmailClient

                from dlp.azure.budget import BudgetRetryPolicy

                if self._transport is None:
                    from dlp.azure.arm import shared_transport

                    self._transport = shared_transport()
                self._client = EmailClient(self._endpoint, self._credential, transport=self._transport,
                                           retry_policy=BudgetRetryPolicy(retry_total=2, retry_backoff_factor=0.3,
                                                                          retry_backoff_max=2))
            return self._client

    def message(self, alerts: Sequence[Alert], *, digest: bool = False, note: str = "",
                folded: Sequence[str] = ()) -> dict[str, Any]:
        """The ACS send request body: the same content as plain text and HTML."""
        mail = bodies.render(alerts, digest_=digest, docs_base=self._docs_base, note=note, folded=folded)
        return {"senderAddress": self._sender,
                "recipients": {"to": [{"address": address} for address in self._recipients]},
                "content": {"subject": mail.subject, "plainText": mail.plain, "html": mail.html}}

    def send(self, alerts: Sequence[Alert], *, digest: bool = False, note: str = "", folded: Sequence[str] = ()) -> None:
        """Send one mail (a digest for several alerts) and wait for ACS to confirm it, within the budget."""
        from azure.core.exceptions import AzureError
        from azure.core.polling.base_polling import LROBasePolling

        from dlp.azure.budget import MARGIN_S, BudgetExhausted, budget_polling, remaining
        from dlp.azure.errors import classify

        op_id = operation_id(alerts)
        # the polling thread stops with the budget (no work outlives the invocation)
        polling = budget_polling(LROBasePolling, self._polling_interval,
                                 lro_options={"final-state-via": "azure-async-operation"},
                                 path_format_arguments={"endpoint": self._endpoint.rstrip("/")})
        finished = True
        try:
            poller = self._email_client().begin_send(self.message(alerts, digest=digest, note=note, folded=folded),
                                                     polling=polling,
                                                     operation_id=op_id)
            left = remaining()
            try:
                result = poller.result(timeout=UNBUDGETED_WAIT_S if left is None else max(0.0, left - MARGIN_S))
            except BudgetExhausted:          # the polling thread stopped at the budget: not finished in time
                finished, result = False, None
        except (AzureError, BudgetExhausted) as exc:
            failure = classify(exc)
            raise DeliveryError(self.name, f"{failure} (operation {op_id})", status=failure.status) from None
        if not finished or not poller.done():
            raise DeliveryError(self.name, f"ACS accepted operation {op_id} but did not finish it within the time "
                                           "budget; it is retried with the same operation id, so it is not sent twice")
        status = str((result or {}).get("status", ""))
        if status.lower() != "succeeded":
            error = (result or {}).get("error") or {}
            raise DeliveryError(self.name, f"operation {op_id} ended {status or 'without a status'}: "
                                           f"{error.get('code', '')} {error.get('message', '')}".strip())
