"""ARM adapter: read a registry, list its export pipelines, PATCH the two DLP properties.

Everything returns the raw REST JSON (via the SDK's `cls` hook) because SDK model attributes
can be enum objects or strings of other casing; dlp.inputs.sources normalises the JSON.
One SDK client per subscription per process, shared by all threads (azure-core clients are
thread-safe), all with the budget-bounded retry policy.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dlp.azure.budget import MARGIN_S, BudgetExhausted, BudgetRetryPolicy, budget_polling, remaining
from dlp.domain.model import parse_registry_id

# The api-version the generated client uses for registries (azure-mgmt-containerregistry 15: tests/test_emulator.py
# keeps the two equal), for the raw GET.
REGISTRY_API_VERSION = "2025-11-01"
MAX_BODY_BYTES = 1024 * 1024      # a real registry's body is tens of KB; see dlp.azure.errors.ResponseTooLarge
# azure-mgmt-containerregistry 15.x dropped the pipeline operations; this preview version has them.
PIPELINES_API_VERSION = "2025-06-01-preview"
POLLING_INTERVAL_S = 1.0     # used only when the service sends no Retry-After (the SDK default is 30 s)
POOL_SIZE = 64               # concurrent invocations share one connection pool


def _raw_json(pipeline_response: Any, _deserialized: Any, _headers: Any) -> Any:
    return pipeline_response.http_response.json()


def _read_capped(response: Any, what: str) -> bytes:
    """The body of a streamed response, refused once it passes MAX_BODY_BYTES (Content-Length first, then the
    bytes as they arrive, so a chunked answer is cut off too)."""
    from dlp.azure.errors import ResponseTooLarge

    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ResponseTooLarge(what, int(declared), MAX_BODY_BYTES)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ResponseTooLarge(what, None, MAX_BODY_BYTES)
        chunks.append(chunk)
    return b"".join(chunks)


def _limit_body(pipeline_response: Any) -> None:
    """Every response of the client (the PATCH's and its polls' included): a declared body over MAX_BODY_BYTES is
    refused before the SDK reads it into models."""
    from dlp.azure.errors import ResponseTooLarge

    declared = pipeline_response.http_response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        path = urlsplit(pipeline_response.http_request.url).path       # the resource, not the endpoint
        raise ResponseTooLarge(path, int(declared), MAX_BODY_BYTES)


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
                    retry_policy=BudgetRetryPolicy(), polling_interval=POLLING_INTERVAL_S, transport=self._transport,
                    raw_response_hook=_limit_body)
                self._clients[key] = client
            return client

    @staticmethod
    def _parts(registry_id: str) -> tuple[str, str, str]:
        parts = parse_registry_id(registry_id)
        if parts is None:
            raise ValueError(f"not a registry ID: {registry_id[:200]!r}")
        return parts

    def get_registry(self, registry_id: str) -> dict[str, Any] | None:
        """The registry's REST JSON, or None when it does not exist (404).

        Read through the client's `send_request`, not `registries.get`: the generated operation builds SDK models of
        the whole body before `cls` sees it (half a millisecond in the drift window for a normal registry, seconds
        for a hostile one with 200,000 IP rules); the JSON is all the rules read. A body over MAX_BODY_BYTES is
        refused unread (`ResponseTooLarge`)."""
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        sub, _group, _name = self._parts(registry_id)
        request = HttpRequest("GET", f"{self.endpoint}{registry_id}?api-version={REGISTRY_API_VERSION}",
                              headers={"Accept": "application/json"})
        response = self._client(sub).send_request(request, stream=True)
        try:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                response.read()            # an error body (its size already checked by _limit_body)
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            body = _read_capped(response, registry_id)
        finally:
            response.close()
        return json.loads(body)

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
