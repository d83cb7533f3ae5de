"""Resource Graph adapter: every container registry in some subscriptions, as whole rows, paged.

Why Resource Graph: one query returns the full ARM body of up to 1,000 registries per page
(`id`, `name`, `type`, `sku`, `tags`, `properties`), so a sweep of 10,000 registries costs
10 requests instead of 10,000 GETs (ARM throttles reads per principal). The rows are
returned raw; dlp.inputs.sources normalises them with the same code as an ARM GET.

Scope: with no subscriptions the request carries no `subscriptions` list, which Resource
Graph (api-version 2021-03-01, the one azure-mgmt-resourcegraph 8.x sends) runs at tenant
scope: every subscription the identity can read (`Search-AzGraph -UseTenantScope` sends the
same request). `allowPartialScopes` stays false: a tenant too large for one tenant-scope
query gets an error, never a silently partial sweep (set DLP_SCOPES then).

Paging: `$skipToken` from each answer, with the same query and scopes; the query orders by
`id` so pages are stable.

No azure-mgmt-resourcegraph: its generated `resources()` deserializes the opaque `data` array into
the response model before any `cls` hook sees it (0.14 s per 1,000-row page, more than the rules
cost), so all it gave us was the request body's serializer, and it pulls in the deprecated msrest
and requests-oauthlib. The body is four documented fields (`query_body`); it goes through
azure-mgmt-core's ARMPipelineClient with the policies that SDK's client uses (bearer token with
ARM's claims challenges, our retry policy, ARM's logging policy that redacts headers).

Retries: the query is a read, so POST is retried like a GET, and a 429 without `Retry-After`
waits for ARG's `x-ms-user-quota-resets-after`; every wait stays inside the invocation's time
budget (dlp.azure.budget).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dlp.azure.budget import BudgetRetryPolicy
from dlp.ids import fold

API_VERSION = "2021-03-01"        # what azure-mgmt-resourcegraph 8.x sends; tenant-scope queries need >= 2021-03-01
PAGE_SIZE = 1000                  # ARG's maximum `$top`
MAX_SUBSCRIPTIONS = 1000          # subscriptions per request (az graph query caps here too); more are chunked
MAX_PAGES = 10_000                # 10 million registries: a repeating token must not loop forever
REGISTRY_TYPE = "microsoft.containerregistry/registries"
COLUMNS = ("id", "name", "type", "location", "resourceGroup", "subscriptionId", "sku", "tags", "properties")

_SAFE_VALUE = re.compile(r"[^'\"\\\x00-\x1f\x7f]{1,180}")  # safe inside a KQL '...' literal (names are validated upstream)
_SAFE_ID = re.compile(r"[^'\"\\\x00-\x1f\x7f]{1,600}")    # a registry ID inside a KQL '...' literal
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")


def query_body(query: str, subscriptions: Sequence[str] | None, skip_token: str | None) -> dict[str, Any]:
    """The `QueryRequest` JSON (api-version 2021-03-01), exactly as azure-mgmt-resourcegraph serializes it."""
    options: dict[str, Any] = {"$top": PAGE_SIZE, "resultFormat": "objectArray", "allowPartialScopes": False}
    if skip_token:
        options = {"$skipToken": skip_token, **options}
    body: dict[str, Any] = {"query": query, "options": options}
    if subscriptions:
        body = {"subscriptions": list(subscriptions), **body}
    return body


class GraphError(Exception):
    """Resource Graph answered something we cannot page through (not an HTTP error)."""


@dataclass(frozen=True)
class Page:
    """One answer of the query: raw rows plus what a progress indicator needs."""

    number: int                   # 1-based, across subscription chunks
    rows: list[dict[str, Any]]
    total: int                    # `totalRecords` of the chunk this page belongs to
    more: bool                    # another page follows in this chunk


def registry_query(resource_groups: Sequence[str] = ()) -> str:
    """The KQL of the sweep. Resource-group names are validated, never spliced in raw."""
    lines = ["resources", f"| where type =~ '{REGISTRY_TYPE}'"]
    # As given (`in~` ignores case): lower-casing can change a name's characters ("İ" -> "i" + U+0307).
    # De-duplicated by A-Z folding only: casefold() would merge "sandbox-\u212a" into "sandbox-k" and drop a group.
    groups = list({fold(g): g for g in reversed(list(resource_groups))}.values())[::-1]
    for group in groups:
        if not _SAFE_VALUE.fullmatch(group):
            raise ValueError(f"not a resource-group name: {group[:100]!r}")
    if groups:
        lines.append("| where resourceGroup in~ (" + ", ".join(f"'{g}'" for g in groups) + ")")
    lines.append("| project " + ", ".join(COLUMNS))
    lines.append("| order by id asc")
    return "\n".join(lines)


def changes_query(since: datetime, registry_ids: Sequence[str] = (), resource_groups: Sequence[str] = ()) -> str:
    """The KQL over `resourcechanges`: registry changes since `since` that touch a DLP property or delete the
    registry, oldest first. IDs and names are validated, never spliced in raw."""
    from dlp.domain.exposure import WATCHED
    from dlp.ids import registry_of

    moment = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = ["resourcechanges",
             "| extend changeTime = todatetime(properties.changeAttributes.timestamp), "
             "targetResourceId = tostring(properties.targetResourceId)",
             f"| where properties.targetResourceType =~ '{REGISTRY_TYPE}'",
             f"| where changeTime >= datetime({moment})"]
    ids = []
    for registry_id in registry_ids:
        found = registry_of(registry_id)
        if found is None or not found[1] or not _SAFE_ID.fullmatch(registry_id):
            raise ValueError(f"not a registry ID: {registry_id[:200]!r}")
        ids.append(found[0])
    if ids:
        lines.append("| where targetResourceId in~ (" + ", ".join(f"'{i}'" for i in dict.fromkeys(ids)) + ")")
    groups = list(dict.fromkeys(resource_groups))
    for group in groups:
        if not _SAFE_VALUE.fullmatch(group):
            raise ValueError(f"not a resource-group name: {group[:100]!r}")
    if groups:
        lines.append("| where resourceGroup in~ (" + ", ".join(f"'{g}'" for g in groups) + ")")
    touched = " or ".join(f"isnotnull(properties.changes['{w.change_key}'])" for w in WATCHED)
    lines.append(f"| where properties.changeType =~ 'Delete' or {touched}")
    lines.append("| project id, properties, changeTime")
    lines.append("| order by changeTime asc, id asc")
    return "\n".join(lines)


class GraphRetryPolicy(BudgetRetryPolicy):
    """The budget-bounded retry policy, with the Resource Graph query treated as the read it is."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._method_whitelist = frozenset({*self._method_whitelist, "POST"})

    def get_retry_after(self, response: Any) -> float | None:
        wait = super().get_retry_after(response)
        if wait is not None:
            return wait
        http = getattr(response, "http_response", None)
        if http is None or http.status_code != 429:
            return None
        match = _CLOCK.match(str(http.headers.get("x-ms-user-quota-resets-after") or "").strip())
        if not match:
            return None
        hours, minutes, seconds = (int(part) for part in match.groups())
        return float(hours * 3600 + minutes * 60 + seconds) or 1.0


class ResourceGraph:
    """The only place that talks to Microsoft.ResourceGraph. One client per process, thread-safe."""

    def __init__(self, endpoint: str, credential: Any, *, transport: Any = None):
        self.endpoint = endpoint.rstrip("/")
        self.scope = self.endpoint + "/.default"
        self._credential = credential
        self._transport = transport
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.core.pipeline import policies
                from azure.mgmt.core import ARMPipelineClient
                from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

                if self._transport is None:
                    from dlp.azure.arm import shared_transport

                    self._transport = shared_transport()
                from dlp import __version__

                self._client = ARMPipelineClient(base_url=self.endpoint, transport=self._transport, policies=[
                    policies.RequestIdPolicy(),
                    policies.HeadersPolicy(),
                    policies.UserAgentPolicy(sdk_moniker=f"acr-dlp-responder/{__version__}"),
                    policies.ProxyPolicy(),
                    policies.ContentDecodePolicy(),
                    policies.RedirectPolicy(),
                    GraphRetryPolicy(),
                    ARMChallengeAuthenticationPolicy(self._credential, self.scope),
                    policies.CustomHookPolicy(),
                    policies.NetworkTraceLoggingPolicy(),
                    policies.DistributedTracingPolicy(),
                    policies.SensitiveHeaderCleanupPolicy(),
                    ARMHttpLoggingPolicy(),
                ])
            return self._client

    def registries(self, subscriptions: Sequence[str] = (), resource_groups: Sequence[str] = (),
                   *, on_page: Callable[[Page], None] | None = None) -> Iterator[Page]:
        """Pages of raw registry rows in these subscriptions (none: tenant scope), optionally only
        in resource groups with these names. Raises the SDK's HttpResponseError, or GraphError."""
        subs = list(dict.fromkeys(s.lower() for s in subscriptions))
        for sub in subs:
            if not _GUID.match(sub):
                raise ValueError(f"not a subscription ID: {sub[:100]!r}")
        return self._query(registry_query(resource_groups), subs, on_page)

    def changes(self, since: datetime, *, registry_ids: Sequence[str] = (), subscriptions: Sequence[str] = (),
                resource_groups: Sequence[str] = (), on_page: Callable[[Page], None] | None = None
                ) -> Iterator[Page]:
        """Pages of `resourcechanges` rows of registries since `since` that touch a DLP property (or delete the
        registry), oldest first: of these registries, or of every registry in these subscriptions (none:
        tenant scope). Raises the SDK's HttpResponseError, or GraphError."""
        subs = list(dict.fromkeys(s.lower() for s in subscriptions))
        for sub in subs:
            if not _GUID.match(sub):
                raise ValueError(f"not a subscription ID: {sub[:100]!r}")
        return self._query(changes_query(since, registry_ids, resource_groups), subs, on_page)

    def _query(self, query: str, subs: list[str], on_page: Callable[[Page], None] | None) -> Iterator[Page]:
        chunks: list[list[str] | None] = (
            [subs[i:i + MAX_SUBSCRIPTIONS] for i in range(0, len(subs), MAX_SUBSCRIPTIONS)] if subs else [None])
        number = 0
        for chunk in chunks:
            for page in self._pages(query, chunk, number):
                number = page.number
                if on_page is not None:
                    on_page(page)
                yield page

    def _pages(self, query: str, subscriptions: list[str] | None, numbered: int) -> Iterator[Page]:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        client = self._get_client()
        url = f"{self.endpoint}/providers/Microsoft.ResourceGraph/resources?api-version={API_VERSION}"
        token: str | None = None
        seen: set[str] = set()
        for number in range(numbered + 1, numbered + MAX_PAGES + 1):
            response = client.send_request(HttpRequest("POST", url, json=query_body(query, subscriptions, token)))
            if response.status_code != 200:
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            try:
                body = response.json()
            except ValueError as exc:
                raise GraphError(f"Resource Graph answered something that is not JSON: {exc}") from None
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise GraphError("Resource Graph answered without a `data` array")
            token = body.get("$skipToken") or None
            if token is None and str(body.get("resultTruncated", "false")).lower() == "true":
                raise GraphError("Resource Graph truncated the result and gave no $skipToken to page with")
            rows = [row for row in body["data"] if isinstance(row, dict)]
            total = body.get("totalRecords") if isinstance(body.get("totalRecords"), int) else len(rows)
            yield Page(number, rows, total, token is not None)
            if token is None:
                return
            if token in seen:
                raise GraphError("Resource Graph repeated a $skipToken")
            seen.add(token)
        raise GraphError(f"more than {MAX_PAGES} pages of registries")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def graph_for(services: Any) -> ResourceGraph:
    """The Resource Graph adapter of these Services, built on first use and kept on them.

    Same endpoint as the ARM adapter and the process's credential (the managed identity in
    Azure), so importing function_app stays cheap; tests and benchmarks may inject `services.graph`.
    """
    with _graph_lock:
        if getattr(services, "graph", None) is None:
            from dlp.azure.credential import get_credential
            from dlp.azure.identity import LearningCredential

            credential = get_credential()
            identity = getattr(services, "identity", None)
            if identity is not None:        # a process whose first request is a history query learns who it is too
                credential = LearningCredential(credential, identity)
            services.graph = ResourceGraph(services.settings.arm_endpoint, credential)
        return services.graph


_graph_lock = threading.Lock()
