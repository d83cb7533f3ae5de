"""ARM templates -> registry snapshots, evaluated the way ARM deploys them, so a pipeline can block a bad
deployment before it happens.

dlp.inputs.arm expands the template (parameters, variables, functions, copy loops, conditions, nested
deployments); this module picks out the registries, their export pipelines and the private endpoints that
connect to them. Whatever cannot be known offline stays `Unresolved` and makes the rules that read it `unknown`
(or decides them when every value it can take does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dlp.domain.model import P_PRIVATE_ENDPOINTS, PrivateEndpoint, Registry
from dlp.inputs.arm.deployments import Deployed, Expansion, expand, resources_of
from dlp.inputs.arm.evaluator import evaluate_value
from dlp.inputs.arm.values import Placeholder, anywhere
from dlp.inputs.sources import (
    PIPELINE_TYPE,
    REGISTRY_TYPE,
    InputError,
    NoRegistry,
    Unresolved,
    ci_get,
    is_expression,
    registry_from_resource,
    writable_properties,
)

PRIVATE_ENDPOINT_TYPE = "microsoft.network/privateendpoints"
_READ = ("name", "type", "location", "sku", "tags", "properties")      # what the rules can read of a registry


class LinkedOnly(NoRegistry):
    """A template whose only deployments are by templateLink: its registries (if any) cannot be seen offline.
    An error when the file is named; in a directory walk a note that is always shown, never a silent skip."""


@dataclass(frozen=True)
class TemplateReading:
    """The registries a template deploys, and what a person must know about how they were read."""

    registries: list[Registry]
    notes: list[str] = field(default_factory=list)


def is_template(document: Mapping[str, Any]) -> bool:
    schema = ci_get(document, "$schema")
    if isinstance(schema, str) and "deploymenttemplate" in schema.lower():
        return True
    return ci_get(document, "resources") is not None and (
        ci_get(document, "contentVersion") is not None or ci_get(document, "languageVersion") is not None)


def parameters_from_file(document: Any, source: str) -> dict[str, Any]:
    """A deployment parameters file (`{"parameters": {"x": {"value": ...}}}`) -> values by lower-case name.
    A Key Vault `reference` is a value that cannot be known offline."""
    params = ci_get(document, "parameters")
    if not isinstance(params, Mapping):
        raise InputError(source, "not a parameters file: expected {\"parameters\": {\"name\": {\"value\": ...}}}")
    values: dict[str, Any] = {}
    for name, entry in params.items():
        if isinstance(entry, Mapping) and "value" in entry:
            values[str(name).lower()] = entry["value"]
        elif isinstance(entry, Mapping) and ci_get(entry, "reference") is not None:
            values[str(name).lower()] = Unresolved(f"parameter '{name}' is a Key Vault reference")
    return values


def _contains_expression(value: Any) -> bool:
    return anywhere(value, is_expression)


def registries_from_template(template: Mapping[str, Any], source: str, supplied: Mapping[str, Any]) -> list[Registry]:
    return read_template(template, source, supplied).registries


def read_template(template: Mapping[str, Any], source: str, supplied: Mapping[str, Any]) -> TemplateReading:
    """Expand, then snapshot every registry; NoRegistry / InputError when there is none to evaluate."""
    # a parameters file holding an expression is ignored: its text is no value the template's default should lose to
    values = {k: v for k, v in supplied.items() if not _contains_expression(v)}
    expansion = expand(template, values)
    notes = [f"{source}: {note}" for note in expansion.notes]
    registries = [d for d in expansion.resources if d.kind == REGISTRY_TYPE]
    if not registries:
        if expansion.links:
            raise LinkedOnly(source, "nested deployments by templateLink are not fetched, so their registries cannot "
                                     f"be evaluated: {', '.join(expansion.links)}; evaluate the linked templates "
                                     "themselves (or compile the Bicep project to one template)")
        raise NoRegistry(source, "the ARM template declares no Microsoft.ContainerRegistry/registries resource")
    notes += [f"{source}: nested deployment {link} is not fetched (templateLink): registries in it are not evaluated"
              for link in expansion.links]
    pipelines = list(_pipelines(expansion))
    endpoints = [e for d in expansion.resources if d.kind == PRIVATE_ENDPOINT_TYPE for e in _registry_endpoints(d)]
    result = []
    for deployed in registries:
        registry = _snapshot(deployed, source, registries, pipelines, endpoints)
        if deployed.condition:
            notes.append(f"{source}: registry {registry.id} is deployed only when {deployed.condition} holds, "
                         "which cannot be known offline: it is evaluated as deployed")
        result.append(registry)
    return TemplateReading(result, notes)


def _evaluated(deployed: Deployed) -> dict[str, Any]:
    resource: dict[str, Any] = {}
    for key in _READ:
        raw = ci_get(deployed.resource, key)
        if raw is not None:
            resource[key] = evaluate_value(raw, deployed.frame)
    properties = resource.get("properties")
    if isinstance(properties, Mapping):      # read-only properties a template declares are ignored by ARM
        resource["properties"] = writable_properties(properties)
    return resource


def _label(deployed: Deployed, name: Any) -> tuple[str, str]:
    """(registryId, name): by its evaluated name when known (a placeholder's text names it, but is no ID),
    else by where the template declares it; inside nested deployments, prefixed by their names."""
    known = isinstance(name, str) and bool(name) and not isinstance(name, Placeholder)
    suffix = f"[{deployed.copy_index}]" if deployed.copy_index is not None and not known else ""
    if isinstance(name, str) and name:
        shown = str(name)
    else:
        shown = (f"<{deployed.symbol}>" if not deployed.symbol.isdigit() else f"<resources[{deployed.symbol}]>") + suffix
    if deployed.modules:
        return "/".join((*deployed.modules, shown if known or not suffix else shown + suffix)), shown
    if known:
        return f"Microsoft.ContainerRegistry/registries/{name}", shown
    return f"#resources/{deployed.symbol}{suffix}", shown


def _snapshot(deployed: Deployed, source: str, registries: list[Deployed],
              pipelines: list[tuple[str, str]], endpoints: list[tuple[str, str, str]]) -> Registry:
    resource = _evaluated(deployed)
    identifier, shown = _label(deployed, resource.get("name"))
    if identifier.startswith("#"):
        identifier = f"{source}{identifier}"
    resource["name"] = shown
    name = shown.lower()
    alone = len(registries) == 1
    declared = [leaf for parent, leaf in pipelines
                if alone or parent.lower() in (name, deployed.symbol.lower())]
    declared += list(_child_pipelines(deployed))
    mine = [PrivateEndpoint(pe_name, status) for pe_name, status, target in endpoints
            if alone or f"registries/{name}" in target or target.endswith(f"/{name}")]
    registry = registry_from_resource(resource, source, identifier=identifier,
                                      export_pipelines=tuple(declared) if declared else None)
    registry = replace(registry, declared_at=deployed.pointer)
    if mine:
        return replace(registry, private_endpoints=registry.private_endpoints + tuple(mine))
    if not registry.private_endpoints:
        # private endpoints are usually deployed elsewhere: unknown, not a false failure
        return replace(registry, unresolved=registry.unresolved | {P_PRIVATE_ENDPOINTS})
    return registry


def _leaf(name: Any) -> str:
    return str(name).rsplit("/", 1)[-1] if isinstance(name, str) else "<unresolved>"


def _pipelines(expansion: Expansion) -> Iterator[tuple[str, str]]:
    """(registry name or symbol, pipeline name) of every registries/exportPipelines resource deployed."""
    for deployed in expansion.resources:
        if deployed.kind != PIPELINE_TYPE:
            continue
        name = deployed.value("name")
        parent = ci_get(deployed.resource, "parent")
        hint = str(parent) if isinstance(parent, str) else (
            str(name).split("/")[0] if isinstance(name, str) and "/" in name else "")
        yield hint, _leaf(name)


def _child_pipelines(deployed: Deployed) -> Iterator[str]:
    """Export pipelines declared as child resources inside the registry resource."""
    for _, _, child in resources_of(deployed.resource, deployed.pointer):
        kind = evaluate_value(ci_get(child, "type"), deployed.frame)
        if isinstance(kind, str) and kind.lower() in ("exportpipelines", PIPELINE_TYPE):
            yield _leaf(evaluate_value(ci_get(child, "name"), deployed.frame))


def _registry_endpoints(deployed: Deployed) -> Iterator[tuple[str, str, str]]:
    """Private endpoints a template creates for a registry: automatic connections are approved on creation."""
    name = deployed.value("name")
    properties = deployed.value("properties")
    for key, status in (("privateLinkServiceConnections", "Approved"), ("manualPrivateLinkServiceConnections", "Pending")):
        connections = ci_get(properties, key)
        for connection in connections if isinstance(connections, list) else []:
            groups = ci_get(connection, "properties", "groupIds")
            if isinstance(groups, list) and any(isinstance(g, str) and g.lower() == "registry" for g in groups):
                target = ci_get(connection, "properties", "privateLinkServiceId")
                yield (str(name) if isinstance(name, str) else "private-endpoint"), status, (
                    target.lower() if isinstance(target, str) else "")
