"""Azure Resource Manager for container registries, plus Resource Graph on the same host.

Log labels: "arm" (resource reads/writes/lists), "graph" (Resource Graph queries of `resources`),
"graph-changes" (queries of `resourcechanges`, dlp/emulator/changes.py) and "arm-op" (polls of
operationStatuses / operationResults URLs), so a test can assert
e.g. `arm.log.count(service="arm", method="GET") == 1`.

Paths match without case (`resourcegroups` == `resourceGroups`); every request needs a
bearer token minted by the identity emulator for ARM (`https://management.azure.com`,
`https://management.core.windows.net` or this emulator's own URL, since
`DLP_ARM_ENDPOINT` + `/.default` is the scope the app asks for).

PATCH is a long-running operation configured by `lro` (global) or `set_lro(id, ...)`:
"sync" answers 200 with the updated registry; "async" answers 201 with
`Azure-AsyncOperation` + `Location`, the registry reads `Updating` until its status URL was
polled `polls` times with `InProgress` and then answers `Succeeded` (or `Failed`, which
restores the previous properties with provisioningState `Failed`). Changed properties are
visible at once, only provisioningState waits (as ACR shows them).

Every write applied (and the restore of a failed one) appends a row to Resource Graph's
`resourcechanges` table (`graph.changes`, dlp/emulator/changes.py): `changedBy` is the caller's
client ID (the identity emulator's `client_id`, the system identity's when none was asked for).
`write(id, body, caller=...)` applies a write by someone else, as a test's attacker or colleague.

Disabling exports while export pipelines exist is refused as `export_refusal` says (a 400
`BadRequest` unless a test picks another status/code, or an operation that ends `Failed`):
the real status and code are not documented.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from dlp.emulator.arm_update import ExportPipelinesExist, PatchError, apply_patch
from dlp.emulator.base import Emulator, Request, Response
from dlp.emulator.graph import Graph
from dlp.emulator.registries import RegistryStore, key_of, make_registry
from dlp.emulator.tokens import SYSTEM_CLIENT_ID, TokenStore

ARM_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")
# api-versions ARM accepts for Microsoft.ContainerRegistry/registries (azure-mgmt-containerregistry 15 sends 2025-11-01)
REGISTRY_API_VERSIONS = (
    "2016-06-27-preview", "2017-03-01", "2017-10-01", "2019-05-01", "2019-12-01-preview", "2020-11-01-preview",
    "2021-06-01-preview", "2021-08-01-preview", "2021-09-01", "2021-12-01-preview", "2022-02-01-preview",
    "2022-12-01", "2023-01-01-preview", "2023-06-01-preview", "2023-07-01", "2023-08-01-preview",
    "2023-11-01-preview", "2024-11-01-preview", "2025-03-01-preview", "2025-04-01", "2025-05-01-preview",
    "2025-06-01-preview", "2025-11-01",
)
# exportPipelines exist only in preview api-versions (2019-12-01-preview and later)
PIPELINE_API_VERSIONS = tuple(v for v in REGISTRY_API_VERSIONS if v.endswith("-preview") and v >= "2019-12-01")
EXPORT_POLICY_SINCE = "2021-06-01-preview"     # older api-versions do not show policies.exportPolicy

_PROVIDER = r"/providers/microsoft\.containerregistry/registries"
_REG = r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)" + _PROVIDER + r"/(?P<name>[^/]+)"
R_REGISTRY = re.compile(_REG + r"$", re.IGNORECASE)
R_CHILD = re.compile(_REG + r"/(?P<kind>exportPipelines|privateEndpointConnections)(?:/(?P<child>[^/]+))?$", re.IGNORECASE)
R_OPERATION = re.compile(_REG + r"/(?P<kind>operationStatuses|operationResults)/(?P<op>[^/]+)$", re.IGNORECASE)
R_LIST = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?" + _PROVIDER + "$", re.IGNORECASE)
R_GRAPH = re.compile(r"^/providers/microsoft\.resourcegraph/resources$", re.IGNORECASE)


@dataclass(frozen=True)
class LroConfig:
    mode: str = "sync"              # "sync": 200 + body; "async": 201 + Azure-AsyncOperation
    polls: int = 1                  # InProgress answers before the terminal status
    retry_after: int | None = None  # Retry-After (s) on the 201 and on polls; None: header absent
    outcome: str = "Succeeded"      # or "Failed"


@dataclass(frozen=True)
class ExportRefusal:
    """How the emulator refuses to disable exports while export pipelines exist. Microsoft documents that
    pipelines block it, not the answer: 400 `BadRequest` by default; any status/code, or (`lro=True`) a 201
    whose operation ends `Failed` with `code`."""

    status: int = 400
    code: str = "BadRequest"
    lro: bool = False


@dataclass
class Operation:
    id: str
    key: str
    config: LroConfig
    before: dict[str, Any]
    polls: int = 0
    status: str = "InProgress"
    start_time: str = ""
    error_code: str = "InternalServerError"
    error_message: str = "The registry update failed."


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())


class ArmEmulator(Emulator):
    name = "arm"

    def __init__(self, tokens: TokenStore, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.tokens = tokens
        self.registries = RegistryStore()
        self.graph = Graph(self.registries)
        self.lro = LroConfig()
        self.page_size = 100                      # registries per page of the list APIs (nextLink beyond)
        self.check_audience = True
        self.export_refusal = ExportRefusal()
        self._lro_overrides: dict[str, LroConfig] = {}
        self.operations: dict[str, Operation] = {}
        self._lock = threading.RLock()

    # state helpers ------------------------------------------------------------------------------
    def reset_state(self) -> None:
        with self._lock:
            self.registries.clear()
            self.graph.reset()
            self.lro = LroConfig()
            self.page_size = 100
            self.check_audience = True
            self.export_refusal = ExportRefusal()
            self._lro_overrides.clear()
            self.operations.clear()

    def add(self, registry: dict[str, Any], pipelines: list[Any] | None = None) -> dict[str, Any]:
        return self.registries.add(registry, pipelines)

    def create(self, subscription: str, resource_group: str, name: str, **kwargs: Any) -> dict[str, Any]:
        """`make_registry(...)` and `add` in one call; returns the stored JSON."""
        return self.registries.add(make_registry(subscription, resource_group, name, **kwargs), copy_json=False)

    def get(self, resource_id: str) -> dict[str, Any] | None:
        return self.registries.get(resource_id)

    def move(self, resource_ids: list[str], target_resource_group: str) -> list[str]:
        """What `POST .../resourceGroups/{rg}/moveResources` does to registries (the responder never calls it): each
        gets its ID in the target resource group, same name, same settings and images. Returns the new IDs."""
        parts = target_resource_group.rstrip("/").split("/")
        subscription, group = parts[2], parts[4]
        self.registries.add_resource_group(subscription, group)
        moved = []
        for resource_id in resource_ids:
            body = self.registries.get(resource_id)
            if body is None:
                continue
            pipelines = self.registries.pipelines(resource_id)
            self.registries.remove(resource_id)
            body["id"] = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/" \
                         f"Microsoft.ContainerRegistry/registries/{resource_id.rsplit('/', 1)[-1]}"
            moved.append(self.registries.add(body, pipelines)["id"])
        return moved

    def remove(self, resource_id: str) -> bool:
        return self.registries.remove(resource_id)

    def pipelines(self, resource_id: str) -> list[dict[str, Any]]:
        return self.registries.pipelines(resource_id)

    def set_pipelines(self, resource_id: str, pipelines: list[Any]) -> None:
        self.registries.set_pipelines(resource_id, pipelines)

    def write(self, resource_id: str, body: dict[str, Any], *, caller: str, client_type: str = "Azure Portal",
              at: Any = None, correlation_id: str = "") -> dict[str, Any]:
        """Apply a PATCH body as someone else would (no HTTP, no LRO) and record its change row. `correlation_id`:
        the `x-ms-correlation-request-id` that caller sent (ARM adopts it), e.g. one copied from the Activity Log."""
        with self._lock, self.registries.lock:
            registry = self.registries.get(resource_id)
            if registry is None:
                raise KeyError(resource_id)
            after = apply_patch(registry, body, self.registries.pipelines(key_of(resource_id)))
            before = copy.deepcopy(registry)
            registry.clear()
            registry.update(after)
            registry["properties"]["provisioningState"] = "Succeeded"
            self.graph.changes.record(before, registry, changed_by=caller, client_type=client_type, at=at,
                                      correlation_id=correlation_id)
            return copy.deepcopy(registry)

    def delete(self, resource_id: str, *, caller: str, at: Any = None) -> bool:
        """Delete a registry as someone else would, recording its Delete change row."""
        registry = self.registries.get(resource_id)
        if registry is None:
            return False
        self.graph.changes.record(registry, registry, changed_by=caller, change_type="Delete", at=at,
                                  operation="microsoft.containerregistry/registries/delete")
        return self.registries.remove(resource_id)

    def write_correlation(self, registry: str) -> str:
        """The correlation ID ARM gives the last PATCH of `registry` (a name or an ID): the caller's
        `x-ms-correlation-request-id` when it sent one, which is what the write's Event Grid event then carries as
        `data.correlationId`. Tests and the demo build that event with it."""
        name = registry.rstrip("/").rsplit("/", 1)[-1].lower()
        writes = [r for r in self.log.filter(method="PATCH") if r.path.rstrip("/").rsplit("/", 1)[-1].lower() == name]
        if not writes:
            raise LookupError(f"no PATCH of {registry} was received")
        headers = {k.lower(): v for k, v in writes[-1].headers.items()}
        return headers.get("x-ms-correlation-request-id") or headers.get("x-ms-client-request-id", "")

    def set_lro(self, resource_id: str | None = None, **changes: Any) -> None:
        """Change LRO behaviour globally (no id) or for one registry: mode, polls, retry_after, outcome."""
        with self._lock:
            if resource_id is None:
                self.lro = dataclasses.replace(self.lro, **changes)
            else:
                base = self._lro_overrides.get(key_of(resource_id), self.lro)
                self._lro_overrides[key_of(resource_id)] = dataclasses.replace(base, **changes)

    def complete_operations(self) -> int:
        """Finish every pending async PATCH now (as if polled); returns how many were pending."""
        with self._lock:
            pending = [op for op in self.operations.values() if op.status == "InProgress"]
            for op in pending:
                self._finish(op)
        return len(pending)

    # HTTP ---------------------------------------------------------------------------------------
    def classify(self, request: Request) -> str:
        path = request.path.rstrip("/")
        if R_GRAPH.match(path):
            return "graph-changes" if b"resourcechanges" in request.body.lower() else "graph"
        if R_OPERATION.match(path):
            return "arm-op"
        return "arm"

    def handle(self, request: Request) -> Response:
        audiences = (*ARM_AUDIENCES, self.url) if self.check_audience else ()
        denied = self.tokens.check(request, audiences)
        if denied is not None:
            return denied
        response = self._route(request)
        response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
        response.headers.setdefault("x-ms-correlation-request-id", str(uuid.uuid4()))
        kind = "reads" if request.method == "GET" else "writes"
        response.headers.setdefault(f"x-ms-ratelimit-remaining-subscription-{kind}", "249" if kind == "reads" else "199")
        return response

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        method = request.method
        if R_GRAPH.match(path):
            if method != "POST":
                return _method_not_allowed(method)
            try:
                body = request.json()
            except ValueError as exc:
                return Response.error(400, "BadRequest", str(exc))
            return self.graph.query(body)
        version = request.param("api-version")
        if not version:
            return Response.error(400, "MissingApiVersionParameter",
                                  "The api-version query parameter (?api-version=) is required for all requests.")
        if m := R_OPERATION.match(path):
            return self._poll(request, m.group("kind"), m.group("op")) if method == "GET" else _method_not_allowed(method)
        if m := R_CHILD.match(path):
            return self._child(request, m, version)
        if m := R_REGISTRY.match(path):
            if version not in REGISTRY_API_VERSIONS:
                return _no_provider(version, "registries", REGISTRY_API_VERSIONS)
            if method == "GET":
                return self._get(m, version)
            if method == "PATCH":
                return self._patch(request, m, version)
            return _method_not_allowed(method)
        if m := R_LIST.match(path):
            if method != "GET":
                return _method_not_allowed(method)
            if version not in REGISTRY_API_VERSIONS:
                return _no_provider(version, "registries", REGISTRY_API_VERSIONS)
            return self._list(request, m, version)
        return Response.error(404, "NotFound", f"No HTTP resource was found that matches the request URI "
                                               f"'{request.base_url}{request.path}'.")

    def _missing(self, sub: str, rg: str, name: str) -> Response:
        if not self.registries.has_resource_group(sub, rg):
            return Response.error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        return Response.error(404, "ResourceNotFound",
                              f"The Resource 'Microsoft.ContainerRegistry/registries/{name}' under resource group '{rg}' "
                              f"was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")

    def _find(self, m: re.Match[str]) -> tuple[dict[str, Any] | None, Response | None]:
        sub, rg, name = m.group("sub"), m.group("rg"), m.group("name")
        registry = self.registries.get(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                                       f"Microsoft.ContainerRegistry/registries/{name}")
        return (registry, None) if registry is not None else (None, self._missing(sub, rg, name))

    @staticmethod
    def _shape(registry: dict[str, Any], version: str) -> dict[str, Any]:
        """The registry as this api-version shows it."""
        if version >= EXPORT_POLICY_SINCE:
            return registry
        shaped = copy.deepcopy(registry)
        shaped.get("properties", {}).get("policies", {}).pop("exportPolicy", None)
        return shaped

    def _get(self, m: re.Match[str], version: str) -> Response:
        with self.registries.lock:
            registry, missing = self._find(m)
            return missing or Response.json(200, self._shape(registry, version))

    def _patch(self, request: Request, m: re.Match[str], version: str) -> Response:
        try:
            body = request.json()
        except ValueError as exc:
            return Response.error(400, "InvalidRequestContent", str(exc))
        with self._lock, self.registries.lock:
            registry, missing = self._find(m)
            if missing:
                return missing
            key = key_of(registry["id"])
            config = self._lro_overrides.get(key, self.lro)
            refused: ExportPipelinesExist | None = None
            try:
                after = apply_patch(registry, body, self.registries.pipelines(key))
            except ExportPipelinesExist as exc:
                if not self.export_refusal.lro:
                    return Response.error(self.export_refusal.status, self.export_refusal.code, exc.message)
                refused, after = exc, copy.deepcopy(registry)          # accepted, then the operation fails
                config = dataclasses.replace(config, mode="async", outcome="Failed")
            except PatchError as exc:
                return Response.error(exc.status, exc.code, exc.message)
            before = copy.deepcopy(registry)
            registry.clear()
            registry.update(after)
            token = self.tokens.get(request.bearer or "")
            self.graph.changes.record(before, registry, changed_by=(token.client_id if token else None)
                                      or SYSTEM_CLIENT_ID, client_type="azure-sdk-for-python",
                                      changed_by_type="Application",
                                      correlation_id=request.headers.get("x-ms-correlation-request-id") or "")
            if config.mode == "sync":
                registry["properties"]["provisioningState"] = "Succeeded"
                return Response.json(200, self._shape(registry, version))
            registry["properties"]["provisioningState"] = "Updating"
            op = Operation(f"registries-{uuid.uuid4()}", key, config, before, start_time=_now())
            if refused is not None:
                op.error_code, op.error_message = self.export_refusal.code, refused.message
            self.operations[op.id] = op
            base = f"{request.base_url}{request.path.rstrip('/')}"
            headers = {"Azure-AsyncOperation": f"{base}/operationStatuses/{op.id}?api-version={version}",
                       "Location": f"{base}/operationResults/{op.id}?api-version={version}"}
            if config.retry_after is not None:
                headers["Retry-After"] = str(config.retry_after)
            return Response.json(201, self._shape(registry, version), headers)

    def _finish(self, op: Operation) -> None:
        op.status = op.config.outcome
        registry = self.registries.get_by_key(op.key)
        if registry is None:
            return
        if op.status == "Succeeded":
            registry["properties"]["provisioningState"] = "Succeeded"
        else:
            applied = copy.deepcopy(registry)
            registry.clear()
            registry.update(op.before)
            registry["properties"]["provisioningState"] = "Failed"
            self.graph.changes.record_system(applied, registry)

    def _poll(self, request: Request, kind: str, op_id: str) -> Response:
        with self._lock, self.registries.lock:
            op = self.operations.get(op_id)
            if op is None:
                return Response.error(404, "OperationNotFound", f"The operation '{op_id}' could not be found.")
            op.polls += 1
            if op.status == "InProgress" and op.polls > op.config.polls:
                self._finish(op)
            headers = {}
            if op.status == "InProgress" and op.config.retry_after is not None:
                headers["Retry-After"] = str(op.config.retry_after)
            if kind.lower() == "operationresults":
                registry = self.registries.get_by_key(op.key)
                if op.status == "InProgress" or registry is None:
                    return Response(202, b"", {**headers, "Location": f"{request.base_url}{request.path}"
                                                                      f"?api-version={request.param('api-version')}"})
                return Response.json(200, registry, headers)
            status: dict[str, Any] = {"id": f"{request.base_url}{request.path}", "name": op.id, "status": op.status,
                                      "startTime": op.start_time}
            if op.status != "InProgress":
                status["endTime"] = _now()
            if op.status == "Failed":
                status["error"] = {"code": op.error_code, "message": op.error_message}
            return Response.json(200, status, headers)

    def _child(self, request: Request, m: re.Match[str], version: str) -> Response:
        kind, child = m.group("kind").lower(), m.group("child")
        if request.method != "GET":
            return _method_not_allowed(request.method)
        if kind == "exportpipelines" and version not in PIPELINE_API_VERSIONS:
            return _no_provider(version, "registries/exportPipelines", PIPELINE_API_VERSIONS)
        if kind == "privateendpointconnections" and version not in REGISTRY_API_VERSIONS:
            return _no_provider(version, "registries/privateEndpointConnections", REGISTRY_API_VERSIONS)
        with self.registries.lock:
            registry, missing = self._find(m)
            if missing:
                return missing
            if kind == "exportpipelines":
                items = self.registries.pipelines(registry["id"])
                label = "Microsoft.ContainerRegistry/registries/exportPipelines"
            else:
                items = registry.get("properties", {}).get("privateEndpointConnections", [])
                label = "Microsoft.ContainerRegistry/registries/privateEndpointConnections"
            if child is None:
                return Response.json(200, {"value": items})
            found = next((i for i in items if str(i.get("name", "")).lower() == child.lower()), None)
            if found is None:
                return Response.error(404, "ResourceNotFound", f"The Resource '{label}/{child}' under resource group "
                                                               f"'{m.group('rg')}' was not found.")
            return Response.json(200, found)

    def _list(self, request: Request, m: re.Match[str], version: str) -> Response:
        sub, rg = m.group("sub"), m.group("rg")
        if rg is not None and not self.registries.has_resource_group(sub, rg):
            return Response.error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        try:
            start = int(request.param("$skipToken") or 0)
        except ValueError:
            return Response.error(400, "InvalidSkipToken", "The $skipToken is invalid.")
        with self.registries.lock:
            keys = self.registries.keys_in([sub])
            if rg is not None:
                keys = [k for k in keys if k.split("/")[4] == key_of(rg)]
            page = [self._shape(self.registries.get_by_key(k), version) for k in keys[start:start + self.page_size]]
            payload: dict[str, Any] = {"value": page}
            if start + self.page_size < len(keys):
                payload["nextLink"] = (f"{request.base_url}{request.path}?api-version={version}"
                                       f"&$skipToken={start + self.page_size}")
            return Response.json(200, payload)


def _method_not_allowed(method: str) -> Response:
    return Response.error(405, "MethodNotAllowed", f"The requested resource does not support http method '{method}'.")


def _no_provider(version: str, resource_type: str, supported: tuple[str, ...]) -> Response:
    return Response.error(400, "NoRegisteredProviderFound",
                          f"No registered resource provider found for location 'westeurope' and API version "
                          f"'{version}' for type '{resource_type}'. The supported api-versions are "
                          f"'{', '.join(supported)}'. The supported locations are 'westeurope, northeurope, eastus, "
                          f"westus2'.")
