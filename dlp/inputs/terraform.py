"""`terraform show -json` plans and state -> registry snapshots, so a pipeline can stop a plan before apply.

Read: `azurerm_container_registry` (attributes mapped to the ARM properties, with the azurerm
provider's own defaults when null) and `azapi_resource` of type `Microsoft.ContainerRegistry/
registries@<api-version>` (ARM properties in `body`, an object since azapi 2.x or a JSON string
before), `azapi_update_resource`s that patch them, their `registries/exportPipelines` children
(azapi) and `azurerm_private_endpoint`s aimed at them, in the root module and in `child_modules`
at any depth.

A plan is read from `resource_changes`: `after` with `after_unknown` laid over it, so a value the
plan does not know yet ("known after apply") is `Unresolved` and makes the rules that read it
`unknown`. `planned_values` cannot be used for that: it silently leaves unknown values out, and a
default would then pass for them. A resource being destroyed (`after` is null) is not evaluated.
State is read from `values.root_module`. `registryId` is the resource address
(`module.acr.azurerm_container_registry.this`), the name a Terraform user searches for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dlp import ids
from dlp.domain import model
from dlp.domain.model import PrivateEndpoint, Registry, parse_registry_id
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

AZURERM_REGISTRY = "azurerm_container_registry"
AZURERM_PRIVATE_ENDPOINT = "azurerm_private_endpoint"
AZAPI_RESOURCE = "azapi_resource"
AZAPI_UPDATE = "azapi_update_resource"
KNOWN_AFTER_APPLY = "(known after apply)"


def is_terraform(document: Any) -> bool:
    """`terraform show -json` output: a plan (`planned_values`, `resource_changes`) or state (`values`)."""
    return (isinstance(document, Mapping) and isinstance(document.get("format_version"), str)
            and any(key in document for key in ("terraform_version", "planned_values", "resource_changes", "values")))


def is_address(text: str) -> bool:
    """Whether a registry ID is a Terraform resource address rather than an ARM ID or a template name."""
    return text.startswith(("module.", AZURERM_REGISTRY + ".", AZAPI_RESOURCE + "."))


@dataclass(frozen=True)
class _Resource:
    address: str
    type: str
    values: Mapping[str, Any]      # known values, with Unresolved where the plan does not know yet


def _unknown(after: Any, after_unknown: Any) -> Any:
    """`after` with every leaf `after_unknown` marks true replaced by Unresolved (Terraform leaves those out
    of `after`, so a key may exist only in `after_unknown`). Marks whose shape does not match the value
    (a list of marks over a string) are ignored: the value is known."""
    if after_unknown is True:
        return Unresolved(KNOWN_AFTER_APPLY)
    if not _marks_any(after_unknown):
        return after
    if isinstance(after_unknown, Mapping) and (after is None or isinstance(after, Mapping)):
        merged = dict(after) if isinstance(after, Mapping) else {}
        for key, marks in after_unknown.items():
            merged[key] = _unknown(merged.get(key), marks)
        return merged
    if isinstance(after_unknown, list) and (after is None or isinstance(after, list)):
        items = list(after) if isinstance(after, list) else []
        items += [None] * max(0, len(after_unknown) - len(items))
        return [_unknown(item, after_unknown[i] if i < len(after_unknown) else None) for i, item in enumerate(items)]
    return after


def _marks_any(after_unknown: Any) -> bool:
    """Whether `after_unknown` marks anything unknown at all (Terraform writes `false`, `{}` or `[]` otherwise)."""
    stack = [after_unknown]
    while stack:
        marks = stack.pop()
        if marks is True:
            return True
        if isinstance(marks, Mapping):
            stack.extend(marks.values())
        elif isinstance(marks, list):
            stack.extend(marks)
    return False


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _module_resources(module: Any) -> Iterator[Mapping[str, Any]]:
    """Resources of a state/planned-values module and of its child modules, at any depth."""
    stack = [module]
    while stack:
        current = stack.pop(0)
        if not isinstance(current, Mapping):
            continue
        yield from (r for r in _list(current.get("resources")) if isinstance(r, Mapping))
        stack.extend(c for c in _list(current.get("child_modules")) if isinstance(c, Mapping))


def _resources(document: Mapping[str, Any]) -> tuple[list[_Resource], list[str]]:
    """Managed resources after the plan (or in the state), and the addresses a plan destroys."""
    found: list[_Resource] = []
    destroyed: list[str] = []
    changes = document.get("resource_changes")
    if isinstance(changes, list):                              # a plan
        for change in changes:
            if not isinstance(change, Mapping) or change.get("mode", "managed") != "managed":
                continue
            body = change.get("change") if isinstance(change.get("change"), Mapping) else {}
            address, kind = str(change.get("address") or ""), str(change.get("type") or "")
            after = body.get("after")
            if after is None:                                  # delete (or forget): nothing left to evaluate
                destroyed.append(address)
                continue
            marks = body.get("after_unknown")
            if marks is True and isinstance(after, Mapping):   # the whole object unknown: each attribute is
                marks = {key: True for key in after if key != "type"}
            values = _unknown(after, marks)
            found.append(_Resource(address, kind, values if isinstance(values, Mapping) else {}))
        return found, destroyed
    root = (document.get("planned_values") or {}) if "planned_values" in document else (document.get("values") or {})
    for resource in _module_resources(root.get("root_module") if isinstance(root, Mapping) else None):
        if resource.get("mode", "managed") == "managed":
            found.append(_Resource(str(resource.get("address") or ""), str(resource.get("type") or ""),
                                   resource.get("values") if isinstance(resource.get("values"), Mapping) else {}))
    return found, destroyed


def _azapi_type(resource: _Resource) -> str:
    kind = resource.values.get("type")
    return ids.fold(kind.split("@", 1)[0]) if isinstance(kind, str) else ""


def _on_off(value: Any, on: str, off: str) -> Any:
    """A provider boolean -> the ARM enum; null stays null (Azure's default); Unresolved stays; anything else
    is not a boolean and becomes Unresolved (a wrong type is never a silent pass)."""
    if value is True:
        return on
    if value is False:
        return off
    if value is None or isinstance(value, Unresolved):
        return value
    return Unresolved(f"not a boolean: {value!r}")


def _first_block(value: Any) -> Any:
    """A MaxItems=1 nested block (a list of one object in JSON), or Unresolved."""
    if isinstance(value, Unresolved):
        return value
    if isinstance(value, list) and value:
        return value[0]
    return None


def _azurerm_registry(resource: _Resource) -> dict[str, Any]:
    """azurerm_container_registry (azurerm 4.x/5.x schema) -> the ARM body registry_from_resource reads."""
    v = resource.values
    rule_set = _first_block(v.get("network_rule_set"))
    default_action = rule_set if isinstance(rule_set, Unresolved) else (
        rule_set.get("default_action") if isinstance(rule_set, Mapping) else None)
    # provider defaults (Default: in the schema) when the attribute is null: the same as Azure's, except that
    # anonymous_pull_enabled / data_endpoint_enabled have none and stay null (Azure: false)
    return {
        "type": REGISTRY_TYPE,
        "name": v.get("name"),
        "location": v.get("location") if isinstance(v.get("location"), str) else "",
        "tags": v.get("tags"),
        "sku": {"name": v.get("sku")},
        "properties": {
            "publicNetworkAccess": _on_off(v.get("public_network_access_enabled", True), model.ENABLED, model.DISABLED),
            "policies": {"exportPolicy": {"status": _on_off(v.get("export_policy_enabled", True),
                                                            model.EXPORT_ENABLED, model.EXPORT_DISABLED)}},
            "networkRuleSet": {"defaultAction": default_action},
            "networkRuleBypassOptions": v.get("network_rule_bypass_option"),
            "networkRuleBypassAllowedForTasks": v.get("network_rule_bypass_for_tasks_enabled"),
            "adminUserEnabled": v.get("admin_enabled"),
            "anonymousPullEnabled": v.get("anonymous_pull_enabled"),
            "dataEndpointEnabled": v.get("data_endpoint_enabled"),
        },
    }


_EVERY_PROPERTY_UNKNOWN = {
    "publicNetworkAccess": None, "policies": {"exportPolicy": {"status": None}}, "networkRuleSet": {"defaultAction": None},
    "networkRuleBypassOptions": None, "networkRuleBypassAllowedForTasks": None, "adminUserEnabled": None,
    "anonymousPullEnabled": None, "dataEndpointEnabled": None,
}


def _all_unresolved(template: Any) -> Any:
    if isinstance(template, Mapping):
        return {key: _all_unresolved(value) for key, value in template.items()}
    return Unresolved(KNOWN_AFTER_APPLY)


def _azapi_body(resource: _Resource, source: str) -> Mapping[str, Any] | Unresolved:
    body = resource.values.get("body")
    if isinstance(body, str):                                  # azapi 1.x: jsonencode({...})
        try:
            body = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError as exc:
            raise InputError(source, f"{resource.address}: body is not JSON ({exc.msg})") from None
    if isinstance(body, Unresolved):
        return body
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise InputError(source, f"{resource.address}: body is neither an object nor a JSON string")
    return body


def _azapi_registry(resource: _Resource, source: str) -> dict[str, Any]:
    """azapi_resource Microsoft.ContainerRegistry/registries@... -> ARM body (name and location are attributes)."""
    body = _azapi_body(resource, source)
    if isinstance(body, Unresolved):                           # the whole body is known after apply
        return {"type": REGISTRY_TYPE, "name": resource.values.get("name"), "sku": {"name": body},
                "properties": _all_unresolved(_EVERY_PROPERTY_UNKNOWN)}
    properties = ci_get(body, "properties")
    if isinstance(properties, Unresolved):
        properties = _all_unresolved(_EVERY_PROPERTY_UNKNOWN)
    elif isinstance(properties, Mapping):
        properties = writable_properties(properties)
    sku = ci_get(body, "sku")
    return {"type": REGISTRY_TYPE, "name": resource.values.get("name"),
            "location": resource.values.get("location") if isinstance(resource.values.get("location"), str) else "",
            "tags": resource.values.get("tags", body.get("tags")),
            "sku": sku if isinstance(sku, Mapping) else {"name": sku if isinstance(sku, Unresolved) else None},
            "properties": properties if isinstance(properties, Mapping) else {}}


def _registry_key(values: Mapping[str, Any], kind: str) -> tuple[str, str] | None:
    """(resource group, name), A-Z folded as ARM compares them (dlp/ids.py: a look-alike resource group is
    another one): what an ARM ID pointing at this registry must end with."""
    name = values.get("name")
    if not isinstance(name, str):
        return None
    if kind == AZURERM_REGISTRY:
        group = values.get("resource_group_name")
    else:
        parent = values.get("parent_id")       # azapi: the resource group's ID
        in_group = isinstance(parent, str) and "/resourcegroups/" in ids.fold(parent)
        group = parent.rstrip("/").rsplit("/", 1)[-1] if in_group else None
    return (ids.fold(group), ids.fold(name)) if isinstance(group, str) else None


def _target_key(resource_id: Any) -> tuple[str, str] | None:
    parts = parse_registry_id(resource_id) if isinstance(resource_id, str) else None
    return (ids.fold(parts[1]), ids.fold(parts[2])) if parts else None


_INSTANCE_KEY = re.compile(r'\[(?:"(?:[^"\\]|\\.)*"|\d+)\]')


def _config_address(address: str) -> str:
    """`module.acr[0].azurerm_container_registry.this["a"]` -> `module.acr.azurerm_container_registry.this`."""
    return _INSTANCE_KEY.sub("", address)


def _module_prefix(config_address: str) -> str:
    """`module.acr.module.mirror.azapi_resource.export` -> `module.acr.module.mirror.`"""
    parts = config_address.split(".")
    return "".join(f"module.{parts[i + 1]}." for i in range(0, len(parts) - 2, 2) if parts[i] == "module")


def _configured_expressions(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Config address -> `expressions` of every resource in a plan's `configuration`, module calls included."""
    found: dict[str, Mapping[str, Any]] = {}
    configuration = document.get("configuration")
    stack = [("", configuration.get("root_module") if isinstance(configuration, Mapping) else None)]
    while stack:
        prefix, module = stack.pop()
        if not isinstance(module, Mapping):
            continue
        for resource in _list(module.get("resources")):
            if isinstance(resource, Mapping) and isinstance(resource.get("expressions"), Mapping):
                found[prefix + str(resource.get("address"))] = resource["expressions"]
        calls = module.get("module_calls")
        for name, call in (calls.items() if isinstance(calls, Mapping) else []):
            if isinstance(call, Mapping):
                stack.append((f"{prefix}module.{name}.", call.get("module")))
    return found


class _Targets:
    """Which registry of this document an ARM ID points at: by resource group and name when the ID is known,
    else through the configuration's `references` (`azurerm_container_registry.this.id`), which a plan keeps
    even when the value itself is known only after apply."""

    def __init__(self, document: Mapping[str, Any], registries: list[_Resource]):
        self.keys = [_registry_key(resource.values, resource.type) for resource in registries]
        self.expressions = _configured_expressions(document)
        self.by_config: dict[str, list[int]] = {}
        for index, resource in enumerate(registries):
            self.by_config.setdefault(_config_address(resource.address), []).append(index)

    def find(self, value: Any, referrer: str, *path: str | int) -> int | None:
        """Index of the registry `value` (an ARM ID, or Unresolved) points at; None when it cannot be told,
        -1 when it is known to point at a registry outside this document."""
        key = _target_key(value)
        if key is not None:
            return self.keys.index(key) if key in self.keys else (-1 if None not in self.keys else None)
        if not isinstance(value, Unresolved):
            return -1
        expression: Any = self.expressions.get(_config_address(referrer))
        for step in path:
            if isinstance(step, int):
                expression = expression[step] if isinstance(expression, list) and len(expression) > step else None
            else:
                expression = expression.get(step) if isinstance(expression, Mapping) else None
        references = expression.get("references") if isinstance(expression, Mapping) else None
        prefix = _module_prefix(_config_address(referrer))
        for reference in references if isinstance(references, list) else []:
            parts = _config_address(str(reference)).split(".")
            if len(parts) >= 2 and parts[0] not in ("var", "local", "module", "data", "each", "count", "path", "self"):
                candidates = self.by_config.get(prefix + ".".join(parts[:2]), [])
                if len(candidates) == 1:          # one instance: the reference names it
                    return candidates[0]
        return None


def registries_from_terraform(document: Mapping[str, Any], source: str) -> list[Registry]:
    """Every container registry a plan leaves in place (or a state holds) -> snapshots."""
    major = str(document.get("format_version", "")).split(".", 1)[0]
    if major not in ("0", "1"):
        raise InputError(source, f"Terraform JSON format_version {document.get('format_version')} is not supported "
                                 "(1.x is)")
    resources, destroyed = _resources(document)
    registries: list[tuple[_Resource, dict[str, Any]]] = []
    for resource in resources:
        if resource.type == AZURERM_REGISTRY:
            registries.append((resource, _azurerm_registry(resource)))
        elif resource.type == AZAPI_RESOURCE and _azapi_type(resource) == REGISTRY_TYPE:
            registries.append((resource, _azapi_registry(resource, source)))
    if not registries:
        gone = f" ({len(destroyed)} resource(s) destroyed by the plan are not evaluated)" if destroyed else ""
        raise NoRegistry(source, f"the Terraform {'plan' if 'resource_changes' in document else 'state'} holds no "
                                 f"azurerm_container_registry or azapi_resource Microsoft.ContainerRegistry/registries{gone}")

    targets = _Targets(document, [resource for resource, _ in registries])
    _apply_updates(resources, registries, targets, source)
    pipelines: list[tuple[str, int | None]] = []        # (name, index of its registry)
    endpoints: list[tuple[str, str, int | None]] = []   # (name, status, index of the registry it connects to)
    for resource in resources:
        if resource.type == AZAPI_RESOURCE and _azapi_type(resource) == PIPELINE_TYPE:
            name = resource.values.get("name")
            pipelines.append((name if isinstance(name, str) else resource.address,
                              targets.find(resource.values.get("parent_id"), resource.address, "parent_id")))
        elif resource.type == AZURERM_PRIVATE_ENDPOINT:
            endpoints.extend(_registry_endpoints(resource, targets))

    single = len(registries) == 1
    untold = any(target is None for _, target in pipelines)
    result = []
    for index, (resource, body) in enumerate(registries):
        mine = [name for name, target in pipelines if target == index or (target is None and single)]
        registry = registry_from_resource(body, source, identifier=resource.address,
                                          export_pipelines=tuple(mine) if mine else None)
        unresolved = set(registry.unresolved)
        if untold and not single and not mine:   # a pipeline whose registry the plan does not tell: maybe this one
            unresolved.add(model.P_PIPELINES)
        if "name" in unresolved:
            registry = replace(registry, name=resource.address)
        attached = [PrivateEndpoint(name, status) for name, status, target in endpoints
                    if target == index or (target is None and single)]
        if attached:
            registry = replace(registry, private_endpoints=registry.private_endpoints + tuple(attached))
        elif not registry.private_endpoints:
            unresolved.add(model.P_PRIVATE_ENDPOINTS)          # usually created elsewhere: unknown, not a failure
        result.append(replace(registry, unresolved=frozenset(unresolved)))
    return result


def _update_target(resource: _Resource, targets: _Targets) -> int | None:
    """The registry an azapi_update_resource writes: by `resource_id`, else by `parent_id` + `name`."""
    values = resource.values
    if "resource_id" in values and values.get("resource_id") is not None:
        return targets.find(values.get("resource_id"), resource.address, "resource_id")
    parent, name = values.get("parent_id"), values.get("name")
    if isinstance(parent, str) and isinstance(name, str):
        return targets.find(f"{parent.rstrip('/')}/providers/Microsoft.ContainerRegistry/registries/{name}",
                            resource.address)
    return None


def _overlay(base: Any, update: Any) -> Any:
    """`update` written over `base` the way an ARM PATCH merges a body: objects merge, anything else replaces.
    Property names match without regard to A-Z case, as ARM matches them (`Properties` patches `properties`)."""
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        merged = dict(base)
        for key, value in update.items():
            same = next((k for k in merged if isinstance(k, str) and isinstance(key, str) and ids.fold(k) == ids.fold(key)),
                        key)
            merged[same] = _overlay(merged.get(same), value)
        return merged
    return update


def _all_unresolved_like(update: Any) -> Any:
    """Every leaf `update` sets, as Unresolved: for a registry it may or may not write."""
    if isinstance(update, Mapping):
        return {key: _all_unresolved_like(value) for key, value in update.items()}
    return Unresolved("an azapi_update_resource whose target is known only after apply")


def _apply_updates(resources: list[_Resource], registries: list[tuple[_Resource, dict[str, Any]]],
                   targets: _Targets, source: str) -> None:
    """azapi_update_resource of a registry (e.g. re-enabling exports behind an azurerm registry declared locked)
    patches its body: the rules see the registry as it will be after both writes. An update whose registry
    cannot be told makes what it sets unresolved on every registry of the file."""
    for resource in resources:
        if resource.type != AZAPI_UPDATE or _azapi_type(resource) != REGISTRY_TYPE:
            continue
        update = _azapi_body(resource, source)
        if isinstance(update, Unresolved):
            update = {"sku": {"name": update}, "properties": _all_unresolved(_EVERY_PROPERTY_UNKNOWN)}
        patch = {key: ci_get(update, key) for key in ("sku", "properties") if ci_get(update, key) is not None}
        if isinstance(patch.get("properties"), Mapping):
            patch["properties"] = writable_properties(patch["properties"])
        target = _update_target(resource, targets)
        if target is None and len(registries) == 1:
            target = 0
        for index, (owner, body) in enumerate(registries):
            if target == index:
                registries[index] = (owner, _overlay(body, patch))
            elif target is None:
                registries[index] = (owner, _overlay(body, _all_unresolved_like(patch)))


def _registry_endpoints(resource: _Resource, targets: _Targets) -> Iterator[tuple[str, str, int | None]]:
    """azurerm_private_endpoint connections to a registry (subresource `registry`): an automatic connection is
    approved on creation, a manual one waits (Pending), as for the template's private endpoints."""
    name = resource.values.get("name")
    name = name if isinstance(name, str) else resource.address
    connections = resource.values.get("private_service_connection")
    for position, connection in enumerate(connections if isinstance(connections, list) else []):
        if not isinstance(connection, Mapping):
            continue
        subresources = connection.get("subresource_names")
        if not (isinstance(subresources, list) and any(ids.fold(str(s)) == "registry" for s in subresources)):
            continue
        status = "Pending" if connection.get("is_manual_connection") is True else "Approved"
        target = targets.find(connection.get("private_connection_resource_id"), resource.address,
                              "private_service_connection", position, "private_connection_resource_id")
        if target != -1:
            yield name, status, target
