"""Every JSON shape users hold a registry in -> `Registry` snapshots.

Shapes: ARM REST GET / `az resource show` (properties nested), `az acr show` / `az acr list`
(properties flattened), Resource Graph (`{"data": [...]}` or bare rows), ARM list responses
(`{"value": [...]}`); ARM templates (dlp.inputs.templates) and Terraform (dlp.inputs.terraform) build on
it, and dlp.inputs.documents tells the shapes apart. Keys and enum values are matched
case-insensitively because real payloads mix `Properties`/`properties`, `Disabled`/`disabled`.

From the SDK, normalise the REST JSON, never model attributes: pass the raw response body, or
`model.as_dict()` for azure-mgmt-containerregistry 15.x (its models are Mappings over the REST
body, so `as_dict()` is camelCase with nested `properties`; they have no `serialize()`). Attribute
values are enum members (`PublicNetworkAccess.ENABLED`) or plain strings in whatever casing the
service sent: a body with `"disabled"` gives an attribute that is not equal to
`PublicNetworkAccess.DISABLED`. (Older msrest models differ: their `as_dict()` is snake_case;
use `serialize(keep_readonly=True)` there.) tests/test_sources.py pins this down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from dlp.domain import model
from dlp.domain.model import PrivateEndpoint, Registry
from dlp.ids import fold

REGISTRY_TYPE = "microsoft.containerregistry/registries"
PIPELINE_TYPE = "microsoft.containerregistry/registries/exportpipelines"


class InputError(ValueError):
    """Input we cannot read as registries; the message names the file and what was expected."""

    def __init__(self, source: str, message: str):
        self.source = source
        super().__init__(f"{source}: {message}")


class NoRegistry(InputError):
    """A document this tool can read (or one that is no Azure shape at all) that holds no container registry:
    an error for a file named explicitly, a skipped file in a directory walk."""


class Unresolved:
    """A template expression we could not resolve; rules reading it answer `unknown`."""

    __slots__ = ("expression",)

    def __init__(self, expression: str):
        self.expression = expression

    def __repr__(self) -> str:
        return f"Unresolved({self.expression!r})"


Resolver = Callable[[Any], Any]


def ci_get(mapping: Any, *path: str) -> Any:
    """`mapping[path...]` with keys compared ignoring A-Z case only (as ARM does); None when any step is absent or not
    an object. Never `str.lower()`: "publicNetwor\u212aAccess" (Kelvin sign) is not a property ARM knows, and must
    not stand in for publicNetworkAccess in a template."""
    node = mapping
    for key in path:
        if type(node) is not dict and not isinstance(node, Mapping):   # dict first: the ABC check is slow
            return None
        if key in node:
            node = node[key]
            continue
        lowered = fold(key)
        for k, v in node.items():
            if isinstance(k, str) and fold(k) == lowered:
                node = v
                break
        else:
            return None
    return node


def is_registry(resource: Any) -> bool:
    kind = ci_get(resource, "type")
    return isinstance(kind, str) and kind.lower() == REGISTRY_TYPE


def _identity(value: Any) -> Any:
    return value


class _Reader:
    """Reads one registry's properties, applying defaults and recording unresolved ones."""

    def __init__(self, resolve: Resolver):
        self.resolve = resolve
        self.unresolved: set[str] = set()

    def value(self, prop: str, raw: Any) -> Any:
        value = self.resolve(raw)
        if isinstance(value, Unresolved):
            self.unresolved.add(prop)
            return None
        return value

    def enum(self, prop: str, raw: Any, choices: tuple[str, ...], default: str) -> str:
        value = self.value(prop, raw)
        if value is None:
            return default
        if not isinstance(value, str):
            self.unresolved.add(prop)      # a value of the wrong type: never a silent pass
            return default
        return next((c for c in choices if c.lower() == value.strip().lower()), value.strip())

    def flag(self, prop: str, raw: Any, default: bool = False) -> bool:
        value = self.value(prop, raw)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.unresolved.add(prop)
        return default


READ_ONLY_PROPERTIES = frozenset({"privateendpointconnections", "provisioningstate"})


def writable_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Declared properties (a template, a Terraform body) without the read-only ones ARM ignores on a write: a
    `privateEndpointConnections: [{... Approved}]` written into a template is no private endpoint, and must not
    make DLP.ACR.PrivateEndpoint pass. (A live read keeps them: there ARM reports what exists.)"""
    return {k: v for k, v in properties.items() if not (isinstance(k, str) and fold(k) in READ_ONLY_PROPERTIES)}


def registry_from_resource(resource: Mapping[str, Any], source: str, *, resolve: Resolver = _identity,
                           identifier: str | None = None,
                           export_pipelines: tuple[str, ...] | None = None) -> Registry:
    """One registry resource (nested or flattened properties) -> snapshot."""
    reader = _Reader(resolve)
    props = ci_get(resource, "properties")
    if not isinstance(props, Mapping):
        props = resource                     # az acr show / az acr list: properties flattened
    name = reader.value("name", ci_get(resource, "name"))
    name = name if isinstance(name, str) else ""
    resource_id = ci_get(resource, "id")
    rid = resource_id if isinstance(resource_id, str) and resource_id.startswith("/") else (
        identifier or f"Microsoft.ContainerRegistry/registries/{name or '<unnamed>'}")

    sku = reader.enum(model.P_SKU, ci_get(resource, "sku", "name"), model.SKUS, "")
    if not sku:
        reader.unresolved.add(model.P_SKU)   # absent or unreadable: SKU-dependent rules answer unknown
    tags_raw = reader.value(model.P_TAGS, ci_get(resource, "tags"))
    tags = {str(k): str(v) for k, v in tags_raw.items()} if isinstance(tags_raw, Mapping) else {}

    pe_raw = reader.value(model.P_PRIVATE_ENDPOINTS, ci_get(props, "privateEndpointConnections"))
    private_endpoints: list[PrivateEndpoint] = []
    if isinstance(pe_raw, list):
        for index, connection in enumerate(pe_raw):
            status = reader.value(model.P_PRIVATE_ENDPOINTS, ci_get(connection, "properties",
                                                                    "privateLinkServiceConnectionState", "status")
                                  or ci_get(connection, "privateLinkServiceConnectionState", "status"))
            pe_name = ci_get(connection, "name") or f"connection-{index}"
            private_endpoints.append(PrivateEndpoint(str(pe_name), str(status) if status else "Unknown"))
    elif pe_raw is not None:
        reader.unresolved.add(model.P_PRIVATE_ENDPOINTS)

    return Registry(
        id=rid,
        name=name or rid.rsplit("/", 1)[-1],
        sku=sku or "Unknown",
        location=str(ci_get(resource, "location") or ""),
        tags=MappingProxyType(tags),
        export_policy=reader.enum(model.P_EXPORT, ci_get(props, "policies", "exportPolicy", "status"),
                                  (model.EXPORT_ENABLED, model.EXPORT_DISABLED), model.EXPORT_ENABLED),
        public_network_access=reader.enum(model.P_PUBLIC, ci_get(props, "publicNetworkAccess"),
                                          (model.ENABLED, model.DISABLED), model.ENABLED),
        network_default_action=reader.enum(model.P_DEFAULT_ACTION, ci_get(props, "networkRuleSet", "defaultAction"),
                                           (model.ALLOW, model.DENY), model.ALLOW),
        network_bypass_options=reader.enum(model.P_BYPASS, ci_get(props, "networkRuleBypassOptions"),
                                           (model.AZURE_SERVICES, model.NONE), model.AZURE_SERVICES),
        tasks_bypass=reader.flag(model.P_TASKS_BYPASS, ci_get(props, "networkRuleBypassAllowedForTasks")),
        private_endpoints=tuple(private_endpoints),
        admin_user_enabled=reader.flag(model.P_ADMIN, ci_get(props, "adminUserEnabled")),
        anonymous_pull_enabled=reader.flag(model.P_ANONYMOUS, ci_get(props, "anonymousPullEnabled")),
        data_endpoint_enabled=reader.flag(model.P_DATA_ENDPOINT, ci_get(props, "dataEndpointEnabled")),
        provisioning_state=str(ci_get(props, "provisioningState") or "Succeeded"),
        export_pipelines=export_pipelines,
        source=source,
        unresolved=frozenset(reader.unresolved),
    )
