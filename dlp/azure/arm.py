"""ARM adapter: read a registry, list its export pipelines, PATCH the two DLP properties.

Everything returns the raw REST JSON (via the SDK's `cls` hook) because SDK model attributes
can be enum objects or strings of other casing; dlp.inputs.sources normalises the JSON.
One SDK client per subscription per process, shared by all threads (azure-core clients are
thread-safe), all with the budget-bounded retry policy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from dlp.azure.budget import MARGIN_S, BudgetExhausted, BudgetRetryPolicy, budget_polling, remaining
from dlp.domain.model import parse_registry_id

# azure-mgmt-containerregistry 15.x dropped the pipeline operations; this preview version has them.
PIPELINES_API_VERSION = "2025-06-01-preview"
POLLING_INTERVAL_S = 1.0     # used only when the service sends no Retry-After (the SDK default is 30 s)
POOL_SIZE = 64               # concurrent invocations share one connection pool


def _raw_json(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
    return pipeline_response.http_response.json()


@dataclass(frozen=True)
class UpdateResult:
    done: bool                       # False: the LRO did not finish within the budget
    registry: dict[str, Any] | None  # the registry as ARM returned it after the update


def shared_transport() -> Any:
    """One requests session with a pool big enough for the worker's thread pool."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=False)


class ArmGateway:
    """The only place that talks to Microsoft.ContainerRegistry through ARM."""

    def __init__(self, endpoint: str, credential: Any, *, transport: Any = None):
        self.endpoint = endpoint.rstrip("/")
        self.scope = self.endpoint + "/.default"
        self._credential = credential
        self._transport = transport
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, subscription_id: str) -> Any:
        key = subscription_id.lower()
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                from azure.mgmt.containerregistry import ContainerRegistryManagementClient

                if self._transport is None:
                    self._transport = shared_transport()
                client = ContainerRegistryManagementClient(
                    self._credential, subscription_id, base_url=self.endpoint, credential_scopes=[self.scope],
                    retry_policy=BudgetRetryPolicy(), polling_interval=POLLING_INTERVAL_S, transport=self._transport)
                self._clients[key] = client
            return client

    @staticmethod
    def _parts(registry_id: str) -> tuple[str, str, str]:
        parts = parse_registry_id(registry_id)
        if parts is None:
            raise ValueError(f"not a registry ID: {registry_id[:200]!r}")
        return parts

    def get_registry(self, registry_id: str) -> dict[str, Any] | None:
        """The registry's REST JSON, or None when it does not exist (404)."""
        from azure.core.exceptions import ResourceNotFoundError

        sub, group, name = self._parts(registry_id)
        try:
            return self._client(sub).registries.get(group, name, cls=_raw_json)
        except ResourceNotFoundError:
            return None

    def list_export_pipelines(self, registry_id: str) -> tuple[str, ...]:
        """Names of the registry's export pipelines (preview API, through the client's send_request)."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        sub, _group, _name = self._parts(registry_id)
        client = self._client(sub)
        url: str | None = f"{self.endpoint}{registry_id}/exportPipelines?api-version={PIPELINES_API_VERSION}"
        names: list[str] = []
        pages = 0
        while url and pages < 20:
            response = client.send_request(HttpRequest("GET", url))
            if response.status_code != 200:     # a 404 too: a list of an existing registry never 404s
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            body = response.json()
            names.extend(str(p.get("name", "?")) for p in body.get("value") or [] if isinstance(p, dict))
            url = body.get("nextLink")
            pages += 1
        return tuple(names)

    def update_registry(self, registry_id: str, body: dict[str, Any], *, reserve_s: float = 0.0,
                        correlation_id: str = "") -> UpdateResult:
        """PATCH exactly `body`; wait for the LRO within the budget, less `reserve_s` kept for the caller.

        `correlation_id` goes out as `x-ms-correlation-request-id`: ARM adopts a caller's correlation ID for the
        operation, so the Event Grid event of this write carries it back (`data.correlationId`), which is how the
        responder knows an event is of its own write and not of someone else using its identity."""
        sub, group, name = self._parts(registry_id)
        from azure.mgmt.core.polling.arm_polling import ARMPolling

        polling = budget_polling(ARMPolling, POLLING_INTERVAL_S, path_format_arguments={"endpoint": self.endpoint})
        headers = {"x-ms-correlation-request-id": correlation_id} if correlation_id else None
        poller = self._client(sub).registries.begin_update(group, name, body, cls=_raw_json, polling=polling,
                                                           headers=headers)
        left = remaining()
        try:
            poller.wait(timeout=None if left is None else max(0.0, left - MARGIN_S - reserve_s))
        except BudgetExhausted:         # the polling thread stopped at the budget: not finished in time
            return UpdateResult(False, None)
        if not poller.done():
            return UpdateResult(False, None)
        return UpdateResult(True, poller.result())

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
