"""ARM PATCH semantics for a registry: merge the partial body, then refuse what ACR refuses.

Kept apart from the HTTP layer so the rules can be read (and tested) on their own.
Property names in the body match case-insensitively (ARM's JSON binding does); enum
values are stored in Azure's canonical casing. Only transitions the request causes are
validated: an already-inconsistent registry (seeded with `add`) can still get a tag patch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

# Values ACR accepts for the properties the responder cares about, canonical casing first.
_ENUMS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("properties", "publicNetworkAccess"): ("Enabled", "Disabled"),
    ("properties", "policies", "exportPolicy", "status"): ("enabled", "disabled"),
    ("properties", "networkRuleSet", "defaultAction"): ("Allow", "Deny"),
    ("properties", "networkRuleBypassOptions"): ("AzureServices", "None"),
    ("properties", "zoneRedundancy"): ("Enabled", "Disabled"),
    ("sku", "name"): ("Basic", "Standard", "Premium"),
}
# Read-only: silently ignored in a PATCH body, as ARM does.
_READ_ONLY = {"loginservername", "loginserver", "creationdate", "provisioningstate", "status",
              "privateendpointconnections", "dataendpointhostnames"}


class PatchError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ExportPipelinesExist(PatchError):
    """Disabling exports while export pipelines exist. ARM's status and code for it are not documented, so the
    emulator lets a test choose them (ArmEmulator.export_refusal)."""


def _ci_merge(target: dict[str, Any], patch: Mapping[str, Any], top: bool = False, path: tuple[str, ...] = ()) -> None:
    existing = {k.lower(): k for k in target}
    for raw_key, value in patch.items():
        key = existing.get(raw_key.lower(), raw_key)
        if path == ("properties",) and key.lower() in _READ_ONLY:
            continue
        if isinstance(value, Mapping) and isinstance(target.get(key), dict) and not (top and key == "tags"):
            _ci_merge(target[key], value, path=(*path, key))
        else:
            target[key] = copy.deepcopy(value)


def _get(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = doc
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = next((v for k, v in node.items() if k.lower() == part.lower()), None)
    return node


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for depth, part in enumerate(path):
        key = next((k for k in node if k.lower() == part.lower()), part)
        if depth == len(path) - 1:
            node[key] = value
        else:
            node = node.setdefault(key, {})


def _canonicalise(doc: dict[str, Any], request_body: Mapping[str, Any]) -> None:
    for path, allowed in _ENUMS.items():
        sent = _get(request_body, path)
        if sent is None:
            continue
        match = next((a for a in allowed if isinstance(sent, str) and a.lower() == sent.lower()), None)
        if match is None:
            raise PatchError(400, "InvalidRequestContent",
                             f"The request content was invalid and could not be deserialized: Error converting value "
                             f"\"{sent}\" at '{'.'.join(path)}'. Allowed values: {', '.join(allowed)}.")
        _set(doc, path, match)
    if _get(request_body, ("sku", "name")) is not None:
        doc["sku"]["tier"] = doc["sku"]["name"]


def _lower(value: Any, default: str) -> str:
    return (value if isinstance(value, str) else default).lower()


def apply_patch(registry: Mapping[str, Any], body: Any, pipelines: list[dict[str, Any]],
                caller: str = "dlp-responder") -> dict[str, Any]:
    """The registry after the PATCH, or PatchError with the status/code/message ACR answers."""
    if not isinstance(body, Mapping):
        raise PatchError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "
                                                       "expected a JSON object.")
    after = copy.deepcopy(dict(registry))
    _ci_merge(after, body, top=True)
    _canonicalise(after, body)

    name = registry.get("name", "")
    sku = str(_get(after, ("sku", "name")) or "Basic")
    public_before = _lower(_get(registry, ("properties", "publicNetworkAccess")), "enabled")
    public_after = _lower(_get(after, ("properties", "publicNetworkAccess")), "enabled")
    export_before = _lower(_get(registry, ("properties", "policies", "exportPolicy", "status")), "enabled")
    export_after = _lower(_get(after, ("properties", "policies", "exportPolicy", "status")), "enabled")

    if public_after == "disabled" and public_before != "disabled" and sku.lower() != "premium":
        raise PatchError(400, "DisablingPublicNetworkAccessNotSupported",
                         f"Disabling public network access is not supported for the SKU {sku}.")
    if public_after == "enabled" and public_before == "disabled" and export_after == "disabled":
        raise PatchError(400, "BadRequest",
                         f"Enabling public network access is not supported because the registry '{name}' has "
                         f"exports disabled.")
    if export_after == "disabled" and export_before != "disabled":
        if public_after != "disabled":
            raise PatchError(400, "BadRequest",
                             f"Disabling exports is not supported because the registry '{name}' has public network "
                             f"access enabled. Disable public network access first or in the same request.")
        if pipelines:
            raise ExportPipelinesExist(400, "BadRequest",
                             f"The export policy of registry '{name}' cannot be disabled while export pipelines exist "
                             f"({', '.join(p.get('name', '?') for p in pipelines)}). Delete the export pipelines first.")

    now = time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00", time.gmtime())
    system = after.setdefault("systemData", {})
    system.update({"lastModifiedBy": caller, "lastModifiedByType": "Application", "lastModifiedAt": now})
    return after
