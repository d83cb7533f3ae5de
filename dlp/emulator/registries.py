"""Registry JSON as ARM (api-version 2025-11-01) returns it, and the in-memory store behind ARM and Graph.

The store keys registries by lower-cased ARM ID (ARM IDs are case-insensitive) and keeps
a sorted per-subscription index, rebuilt lazily, so listing/paging 10,000+ registries
stays cheap.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
CREATED_AT = "2024-05-01T09:30:00.0000000+00:00"


class RegistryJson(dict):
    """A registry's ARM JSON (a plain dict for json.dumps) carrying its export pipelines on the side."""

    pipelines: list[dict[str, Any]]


def registry_id(subscription: str, resource_group: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{REGISTRY_TYPE}/{name}"


def split_registry_id(resource_id: str) -> tuple[str, str, str]:
    """(subscription, resource group, name) of a registry ID, any casing; ValueError otherwise."""
    parts = resource_id.strip("/").split("/")
    if (len(parts) != 8 or parts[0].lower() != "subscriptions" or parts[2].lower() != "resourcegroups"
            or "/".join(parts[4:7]).lower() != "providers/microsoft.containerregistry/registries"):
        raise ValueError(f"not a registry ID: {resource_id!r}")
    return parts[1], parts[3], parts[7]


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def key_of(resource_id: str) -> str:
    """ARM compares IDs ignoring case for A-Z only: a resource group named with a Kelvin sign is another group."""
    return resource_id.strip().rstrip("/").translate(_ASCII_LOWER)


def private_endpoint_connection(reg_id: str, name: str, status: str = "Approved") -> dict[str, Any]:
    sub, rg, _ = split_registry_id(reg_id)
    return {
        "id": f"{reg_id}/privateEndpointConnections/{name}",
        "name": name,
        "type": f"{REGISTRY_TYPE}/privateEndpointConnections",
        "properties": {
            "privateEndpoint": {
                "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/privateEndpoints/{name}"},
            "privateLinkServiceConnectionState": {
                "status": status,
                "description": "Auto-Approved" if status.lower() == "approved" else "",
                "actionsRequired": "None",
            },
            "provisioningState": "Succeeded",
        },
    }


def export_pipeline(reg_id: str, name: str, location: str = "westeurope", **properties: Any) -> dict[str, Any]:
    """An export pipeline as `GET .../exportPipelines` (preview api-versions) lists it."""
    return {
        "id": f"{reg_id}/exportPipelines/{name}",
        "name": name,
        "type": f"{REGISTRY_TYPE}/exportPipelines",
        "location": location,
        "identity": {"type": "SystemAssigned", "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, reg_id + name)),
                     "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"},
        "properties": {
            "target": {"type": "AzureStorageBlobContainer",
                       "uri": f"https://{name.lower()}sa.blob.core.windows.net/export",
                       "keyVaultUri": f"https://{name.lower()}-kv.vault.azure.net/secrets/export-sas"},
            "options": ["OverwriteBlobs"],
            "provisioningState": "Succeeded",
            **properties,
        },
    }


def make_registry(subscription: str, resource_group: str, name: str, sku: str = "Premium",
                  export: str = "enabled", public: str = "Enabled", default_action: str = "Allow",
                  private_endpoints: Sequence[tuple[str, str]] = (("pe1", "Approved"),),
                  pipelines: Iterable[str | Mapping[str, Any]] = (), location: str = "westeurope",
                  tags: Mapping[str, str] | None = None, **extra_props: Any) -> RegistryJson:
    """Full ARM JSON of one registry; `extra_props` override/add `properties` keys (deep-merged).

    `pipelines` (names or full pipeline JSON) ride along as `.pipelines`, picked up by
    `RegistryStore.add`. Pass `export=None` to omit `policies.exportPolicy` (older payloads).
    """
    reg_id = registry_id(subscription, resource_group, name)
    policies: dict[str, Any] = {
        "quarantinePolicy": {"status": "disabled"},
        "trustPolicy": {"type": "Notary", "status": "disabled"},
        "retentionPolicy": {"days": 7, "lastUpdatedTime": CREATED_AT, "status": "disabled"},
        "azureADAuthenticationAsArmPolicy": {"status": "enabled"},
    }
    if export is not None:
        policies["exportPolicy"] = {"status": export}
    properties: dict[str, Any] = {
        "loginServer": f"{name.lower()}.azurecr.io",
        "creationDate": CREATED_AT,
        "provisioningState": "Succeeded",
        "adminUserEnabled": False,
        "networkRuleSet": {"defaultAction": default_action, "ipRules": []},
        "policies": policies,
        "encryption": {"status": "disabled"},
        "dataEndpointEnabled": False,
        "dataEndpointHostNames": [],
        "privateEndpointConnections": [private_endpoint_connection(reg_id, pe, status) for pe, status in private_endpoints],
        "publicNetworkAccess": public,
        "networkRuleBypassOptions": "AzureServices",
        "networkRuleBypassAllowedForTasks": False,
        "zoneRedundancy": "Disabled",
        "anonymousPullEnabled": False,
        "metadataSearch": "Disabled",
        "roleAssignmentMode": "LegacyRegistryPermissions",
    }
    deep_merge(properties, extra_props)
    registry = RegistryJson(
        id=reg_id, name=name, type=REGISTRY_TYPE, location=location, tags=dict(tags or {}),
        sku={"name": sku, "tier": sku},
        systemData={"createdBy": "ops@example.com", "createdByType": "User", "createdAt": CREATED_AT,
                    "lastModifiedBy": "ops@example.com", "lastModifiedByType": "User", "lastModifiedAt": CREATED_AT},
        properties=properties,
    )
    registry.pipelines = [p if isinstance(p, Mapping) else export_pipeline(reg_id, p, location) for p in pipelines]
    return registry


def deep_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Merge-patch: dicts merge recursively, anything else (lists included) replaces."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class RegistryStore:
    """Registries by lower-cased ID, their export pipelines, and the resource groups ARM knows."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._registries: dict[str, dict[str, Any]] = {}
        self._pipelines: dict[str, list[dict[str, Any]]] = {}
        self._groups: set[tuple[str, str]] = set()           # (subscription, resource group), lower-case
        self._by_subscription: dict[str, list[str]] | None = None

    def add(self, registry: Mapping[str, Any], pipelines: Iterable[str | Mapping[str, Any]] | None = None,
            copy_json: bool = True) -> dict[str, Any]:
        """Store (or replace) a registry; returns the stored JSON (mutating it changes the emulator's state).

        `copy_json=False` stores the given dict itself (fresh `make_registry` output: saves a deep copy
        per registry when seeding 10,000 of them).
        """
        stored = copy.deepcopy(dict(registry)) if copy_json else registry
        sub, rg, _ = split_registry_id(stored["id"])
        key = key_of(stored["id"])
        if pipelines is None:
            pipelines = getattr(registry, "pipelines", [])
        with self.lock:
            self._registries[key] = stored
            self._pipelines[key] = [p if isinstance(p, Mapping) else export_pipeline(stored["id"], p, stored.get("location", ""))
                                    for p in pipelines]
            self._groups.add((key_of(sub), key_of(rg)))
            self._by_subscription = None
        return stored

    def add_many(self, registries: Iterable[Mapping[str, Any]]) -> int:
        count = 0
        for registry in registries:
            self.add(registry)
            count += 1
        return count

    def get(self, resource_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self._registries.get(key_of(resource_id))

    def remove(self, resource_id: str) -> bool:
        key = key_of(resource_id)
        with self.lock:
            self._pipelines.pop(key, None)
            found = self._registries.pop(key, None) is not None
            self._by_subscription = None
        return found

    def clear(self) -> None:
        with self.lock:
            self._registries.clear()
            self._pipelines.clear()
            self._groups.clear()
            self._by_subscription = None

    def __len__(self) -> int:
        return len(self._registries)

    def __contains__(self, resource_id: object) -> bool:
        return isinstance(resource_id, str) and key_of(resource_id) in self._registries

    def add_resource_group(self, subscription: str, resource_group: str) -> None:
        """Make an empty resource group exist (a missing one answers ResourceGroupNotFound)."""
        with self.lock:
            self._groups.add((key_of(subscription), key_of(resource_group)))

    def has_resource_group(self, subscription: str, resource_group: str) -> bool:
        with self.lock:
            return (key_of(subscription), key_of(resource_group)) in self._groups

    # export pipelines ----------------------------------------------------------------------
    def pipelines(self, resource_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return self._pipelines.get(key_of(resource_id), [])

    def set_pipelines(self, resource_id: str, pipelines: Iterable[str | Mapping[str, Any]]) -> None:
        registry = self.get(resource_id)
        if registry is None:
            raise KeyError(resource_id)
        with self.lock:
            self._pipelines[key_of(resource_id)] = [
                p if isinstance(p, Mapping) else export_pipeline(registry["id"], p, registry.get("location", ""))
                for p in pipelines]

    # listing ------------------------------------------------------------------------------------
    def keys_in(self, subscriptions: Iterable[str] | None) -> list[str]:
        """Keys of the registries in these subscriptions (all when None), sorted by ID; cheap to repeat."""
        with self.lock:
            if self._by_subscription is None:
                index: dict[str, list[str]] = {}
                for key in sorted(self._registries):
                    index.setdefault(key.split("/")[2], []).append(key)
                self._by_subscription = index
            index = self._by_subscription
            if subscriptions is None:
                return [key for sub in sorted(index) for key in index[sub]]
            keys: list[str] = []
            for sub in dict.fromkeys(s.lower() for s in subscriptions):
                keys.extend(index.get(sub, ()))
            return keys

    def get_by_key(self, key: str) -> dict[str, Any] | None:
        return self._registries.get(key)
