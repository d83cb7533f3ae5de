"""ARM templates -> registry snapshots, so a pipeline can block a bad deployment before it happens.

Only `[parameters('x')]` is resolved (from a parameters file, else a literal `defaultValue`);
every other expression stays `Unresolved` and makes the rules that read it `unknown`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from dlp.domain.model import P_PRIVATE_ENDPOINTS, PrivateEndpoint, Registry
from dlp.inputs.sources import (
    PIPELINE_TYPE,
    REGISTRY_TYPE,
    InputError,
    NoRegistry,
    Unresolved,
    ci_get,
    registry_from_resource,
    writable_properties,
)

PRIVATE_ENDPOINT_TYPE = "microsoft.network/privateendpoints"
DEPLOYMENT_TYPE = "microsoft.resources/deployments"
_PARAMETER_EXPR = re.compile(r"^\[\s*parameters\(\s*'([^']+)'\s*\)\s*\]$", re.IGNORECASE)


def is_template(document: Mapping[str, Any]) -> bool:
    schema = ci_get(document, "$schema")
    if isinstance(schema, str) and "deploymenttemplate" in schema.lower():
        return True
    return ci_get(document, "resources") is not None and (
        ci_get(document, "contentVersion") is not None or ci_get(document, "languageVersion") is not None)


def parameters_from_file(document: Any, source: str) -> dict[str, Any]:
    """A deployment parameters file (`{"parameters": {"x": {"value": ...}}}`) -> literal values by lower-case name."""
    params = ci_get(document, "parameters")
    if not isinstance(params, Mapping):
        raise InputError(source, "not a parameters file: expected {\"parameters\": {\"name\": {\"value\": ...}}}")
    values: dict[str, Any] = {}
    for name, entry in params.items():
        if isinstance(entry, Mapping) and "value" in entry:
            values[str(name).lower()] = entry["value"]
    return values


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and value.endswith("]") and not value.startswith("[[")


class _Resolver:
    def __init__(self, template: Mapping[str, Any], supplied: Mapping[str, Any]):
        declared = ci_get(template, "parameters")
        self.defaults: dict[str, Any] = {}
        if isinstance(declared, Mapping):
            for name, spec in declared.items():
                default = ci_get(spec, "defaultValue")
                if default is not None and not _contains_expression(default):
                    self.defaults[str(name).lower()] = default
        self.supplied = {str(k).lower(): v for k, v in supplied.items()}

    def __call__(self, value: Any) -> Any:
        if not _is_expression(value):
            if isinstance(value, str) and value.startswith("[["):
                return value[1:]                       # escaped literal "[[...]" means "[...]"
            return value
        match = _PARAMETER_EXPR.match(value)
        if match:
            name = match.group(1).lower()
            if name in self.supplied and not _contains_expression(self.supplied[name]):
                return self.supplied[name]
            if name in self.defaults:
                return self.defaults[name]
        return Unresolved(value)


def _contains_expression(value: Any, depth: int = 0) -> bool:
    if depth > 50:
        return True
    if _is_expression(value):
        return True
    if isinstance(value, Mapping):
        return any(_contains_expression(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_contains_expression(v, depth + 1) for v in value)
    return False


def _resources(container: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(symbolic name or index, resource) of `resources` as an array or a languageVersion 2.0 object."""
    resources = ci_get(container, "resources")
    if isinstance(resources, list):
        for index, resource in enumerate(resources):
            if isinstance(resource, Mapping):
                yield str(index), resource
    elif isinstance(resources, Mapping):
        for symbol, resource in resources.items():
            if isinstance(resource, Mapping):
                yield str(symbol), resource


def _resolve_deep(value: Any, resolve: _Resolver) -> Any:
    """Resolve a whole resource so that nested values (e.g. `sku.name`) see resolved parameters."""
    if isinstance(value, Mapping):
        return {k: _resolve_deep(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_deep(v, resolve) for v in value]
    return resolve(value)


def _leaf_name(name: Any) -> str:
    return name.rsplit("/", 1)[-1] if isinstance(name, str) else ""


def registries_from_template(template: Mapping[str, Any], source: str, supplied: Mapping[str, Any]) -> list[Registry]:
    resolve = _Resolver(template, supplied)
    registries: list[tuple[str, dict[str, Any]]] = []
    pipelines: list[tuple[Mapping[str, Any], str]] = []      # (pipeline resource, parent hint)
    endpoints: list[tuple[str, str, str]] = []               # (name, status, target text)
    nested_pipelines: dict[str, list[str]] = {}

    for symbol, resource in _resources(template):
        if ci_get(resource, "existing") is True:
            continue                                           # referenced, not deployed here
        kind = str(ci_get(resource, "type") or "").lower()
        if kind == REGISTRY_TYPE:
            resolved = _resolve_deep(resource, resolve)
            registries.append((symbol, resolved))
            for _, child in _resources(resource):            # nested child resources
                child_type = str(ci_get(child, "type") or "").lower()
                if child_type in ("exportpipelines", PIPELINE_TYPE):
                    nested_pipelines.setdefault(symbol, []).append(_pipeline_name(child, resolve))
        elif kind == PIPELINE_TYPE:
            parent = ci_get(resource, "parent")
            name = resolve(ci_get(resource, "name"))
            hint = str(parent) if isinstance(parent, str) else (
                name.split("/")[0] if isinstance(name, str) and "/" in name else "")
            pipelines.append((resource, hint))
        elif kind == PRIVATE_ENDPOINT_TYPE:
            endpoints.extend(_registry_endpoints(resource, resolve))

    if not registries:
        if any(str(ci_get(r, "type") or "").lower() == DEPLOYMENT_TYPE and REGISTRY_TYPE in repr(r).lower()
               for _, r in _resources(template)):
            raise InputError(source, "the ARM template declares its registries inside nested deployments "
                                     "(Microsoft.Resources/deployments, e.g. Bicep modules), which are not read: "
                                     "evaluate the module's own template")
        raise NoRegistry(source, "the ARM template declares no Microsoft.ContainerRegistry/registries resource")

    result = []
    for symbol, resource in registries:
        name = resource.get("name") if isinstance(resource.get("name"), str) else None
        declared = list(nested_pipelines.get(symbol, []))
        for pipeline, hint in pipelines:
            if (hint and hint.lower() in (symbol.lower(), (name or "").lower())) or len(registries) == 1:
                declared.append(_pipeline_name(pipeline, resolve))
        mine = [PrivateEndpoint(pe_name, status) for pe_name, status, target in endpoints
                if len(registries) == 1 or symbol.lower() in target or (name and name.lower() in target)]
        identifier = f"Microsoft.ContainerRegistry/registries/{name or symbol}"
        named = resource
        properties = ci_get(resource, "properties")
        if isinstance(properties, Mapping):      # read-only properties a template declares are ignored by ARM
            named = {**{k: v for k, v in resource.items() if not (isinstance(k, str) and k.lower() == "properties")},
                     "properties": writable_properties(properties)}
        if name is None:
            named = {**named, "name": f"<{symbol}>" if not symbol.isdigit() else f"<resources[{symbol}]>"}
            identifier = f"{source}#resources/{symbol}"
        registry = registry_from_resource(named, source, resolve=lambda v: v, identifier=identifier,
                                          export_pipelines=tuple(declared) if declared else None)
        if mine:
            registry = replace(registry, private_endpoints=registry.private_endpoints + tuple(mine))
        elif not registry.private_endpoints:
            # private endpoints are usually deployed elsewhere: unknown, not a false failure
            registry = replace(registry, unresolved=registry.unresolved | {P_PRIVATE_ENDPOINTS})
        result.append(registry)
    return result


def _registry_endpoints(resource: Mapping[str, Any], resolve: _Resolver) -> Iterator[tuple[str, str, str]]:
    """Private endpoints a template creates for a registry: automatic connections are approved on creation."""
    name = resolve(ci_get(resource, "name"))
    for key, status in (("privateLinkServiceConnections", "Approved"), ("manualPrivateLinkServiceConnections", "Pending")):
        for connection in ci_get(resource, "properties", key) or []:
            groups = ci_get(connection, "properties", "groupIds") or []
            if isinstance(groups, list) and any(str(g).lower() == "registry" for g in groups):
                target = str(ci_get(connection, "properties", "privateLinkServiceId") or "").lower()
                yield (name if isinstance(name, str) else "private-endpoint"), status, target


def _pipeline_name(resource: Mapping[str, Any], resolve: _Resolver) -> str:
    name = resolve(ci_get(resource, "name"))
    return _leaf_name(name) if isinstance(name, str) else str(ci_get(resource, "name"))
