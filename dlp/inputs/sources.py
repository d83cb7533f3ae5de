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
    """A value that cannot be known offline (a template expression over `reference()`, a parameter with no value,
    a plan value known only after apply); rules reading it answer `unknown` unless every value it could take decides.

    `options`, when not None, lists every value it can take (a parameter's `allowedValues`, both branches of an
    `if` whose condition is unknown): the rules then check only those. A superset is always safe; never a guess."""

    __slots__ = ("expression", "options")

    def __init__(self, expression: str, options: tuple[Any, ...] | None = None):
        self.expression = expression
        self.options = options

    def __repr__(self) -> str:
        extra = f", options={self.options!r}" if self.options is not None else ""
        return f"Unresolved({self.expression!r}{extra})"


def is_expression(value: Any) -> bool:
    """An ARM template expression string: `[...]`, but not the `[[...]` escape of a literal."""
    return type(value) is str and value[:1] == "[" and value[-1:] == "]" and value[:2] != "[["


Resolver = Callable[[Any], Any]


def ci_get(mapping: Any, *path: str) -> Any:
    """`mapping[path...]` with keys compared ignoring A-Z case only (as ARM does); None when any step is absent or not
    an object. Never `str.lower()`: "publicNetwor\u212aAccess" (Kelvin sign) is not a property ARM knows, and must
    not stand in for publicNetworkAccess in a template.

    A step that is `Unresolved` (or a template expression string nobody evaluated) is never "absent": the value
    below it is Unresolved too (issue 23: `"networkRuleSet": "[if(...)]"` must not read as Azure's default)."""
    node = mapping
    for depth, key in enumerate(path):
        if type(node) is not dict and not isinstance(node, Mapping):   # dict first: the ABC check is slow
            return _below_unresolved(node, path[depth:])
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


def _below_unresolved(node: Any, rest: tuple[str, ...]) -> Any:
    """What lies at `rest` below a node that is no object: Unresolved when the node is not known (its options
    followed down the path), else None (a literal of another type: absent, as before)."""
    if isinstance(node, Unresolved):
        if node.options is None:
            return Unresolved(node.expression)
        below = tuple(ci_get(option, *rest) for option in node.options)
        if any(isinstance(b, Unresolved) and b.options is None for b in below):
            return Unresolved(node.expression)
        flat: list[Any] = []
        for b in below:
            flat.extend(b.options if isinstance(b, Unresolved) else (b,))
        return Unresolved(node.expression, tuple(flat))
    if is_expression(node):
        return Unresolved(node)
    return None


def is_registry(resource: Any) -> bool:
    kind = ci_get(resource, "type")
    return isinstance(kind, str) and kind.lower() == REGISTRY_TYPE


def _identity(value: Any) -> Any:
    return value


class _Reader:
    """Reads one registry's properties, applying defaults and recording unresolved ones (and, when an unresolved
    value can take only some values, which: `choices`)."""

    def __init__(self, resolve: Resolver):
        self.resolve = resolve
        self.unresolved: set[str] = set()
        self.choices: dict[str, tuple[Any, ...]] = {}

    def value(self, prop: str, raw: Any) -> Any:
        value = self.resolve(raw)
        if isinstance(value, Unresolved):
            self.unresolved.add(prop)
            return None
        return value

    def _narrow(self, prop: str, value: Unresolved, read: Callable[[Any], Any]) -> None:
        """Record the snapshot values an unresolved property can take, when each option reads as one."""
        if value.options is None or not value.options:
            return
        read_options = [read(option) for option in value.options]
        if all(option is not None for option in read_options):
            self.choices[prop] = tuple(dict.fromkeys(read_options))

    def enum(self, prop: str, raw: Any, choices: tuple[str, ...], default: str) -> str:
        value = self.resolve(raw)
        if isinstance(value, Unresolved):
            self.unresolved.add(prop)
            self._narrow(prop, value, lambda option: _enum_value(option, choices, default))
            return default
        if value is None:
            return default
        if not isinstance(value, str):
            self.unresolved.add(prop)      # a value of the wrong type: never a silent pass
            return default
        return next((c for c in choices if c.lower() == value.strip().lower()), value.strip())

    def flag(self, prop: str, raw: Any, default: bool = False) -> bool:
        value = self.resolve(raw)
        if isinstance(value, Unresolved):
            self.unresolved.add(prop)
            self._narrow(prop, value, lambda option: _flag_value(option, default))
            return default
        if value is None:
            return default
        if type(value) is bool:              # the common case first: the sweep reads 10,000 registries
            return value
        read = _flag_value(value, default)
        if read is None:
            self.unresolved.add(prop)
            return default
        return read


def _enum_value(value: Any, choices: tuple[str, ...], default: str) -> str | None:
    """One possible value -> the snapshot's spelling; None when it cannot be read (then nothing is narrowed)."""
    if value is None:
        return default or None             # absent: Azure's default (the SKU has none)
    if not isinstance(value, str):
        return None
    return next((c for c in choices if c.lower() == value.strip().lower()), value.strip())


def _flag_value(value: Any, default: bool) -> bool | None:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


_NO_CHOICES: Mapping[str, tuple[Any, ...]] = MappingProxyType({})
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
    if isinstance(props, str) and is_expression(props):
        props = Unresolved(props)            # a template's whole `properties` as one expression nobody evaluated
    if not isinstance(props, (Mapping, Unresolved)):
        props = resource                     # az acr show / az acr list: properties flattened
    # (an Unresolved `properties` stays: every property read below it is unknown, never Azure's default)
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
        choices=MappingProxyType(reader.choices) if reader.choices else _NO_CHOICES,
    )
