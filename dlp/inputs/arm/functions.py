"""ARM template functions over evaluated arguments (the lazy ones, `if`, `and`, `or`, `coalesce`, `lambda`, and the
ones that read the deployment, `parameters`, `variables`, `copyIndex`, live in dlp.inputs.arm.evaluator).

Semantics follow Microsoft Learn's template function reference: `equals` and `contains` on strings are
case-sensitive (Bicep's `=~` compiles to `equals(toLower(a), toLower(b))`); object property names are not;
`union` merges objects deeply, later values winning, and arrays without duplicates; `coalesce` skips only nulls.
Deployment-time values (`resourceGroup()`, `subscription()`, `deployment()`, `uniqueString()`, `guid()`) are
`Placeholder` text: good for names, never for a decision. `reference()`, `list*()`, `utcNow()`, `newGuid()` and
friends are `Unresolved`: they cannot be known before the deployment runs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from dlp.ids import fold
from dlp.inputs.arm.values import Placeholder
from dlp.inputs.sources import Unresolved


class TemplateError(ValueError):
    """A call ARM would refuse (wrong type, missing property, bad index): the value cannot be known."""


def member(value: Any, name: str) -> tuple[bool, Any]:
    """(found, value) of an object's property, name compared without A-Z case as ARM does."""
    if not isinstance(value, Mapping):
        raise TemplateError(f"cannot read property {name!r} of {_kind(value)}")
    if name in value:
        return True, value[name]
    lowered = fold(name)
    for key, item in value.items():
        if isinstance(key, str) and fold(key) == lowered:
            return True, item
    return False, None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "an object" if isinstance(value, Mapping) else type(value).__name__)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if len(a) != len(b):
            return False
        for key, value in a.items():
            found, other = member(b, key)
            if not found or not _equal(value, other):
                return False
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _string(value: Any) -> str:
    """`string()`: text as is; bools lower case; arrays and objects as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _format(template: str, *args: Any) -> str:
    """.NET composite format: {0}, {1:D}, and {{ / }} escapes."""
    out: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "{" and template[i + 1:i + 2] == "{":
            out.append("{")
            i += 2
        elif char == "}" and template[i + 1:i + 2] == "}":
            out.append("}")
            i += 2
        elif char == "{":
            close = template.find("}", i)
            if close < 0:
                raise TemplateError(f"bad format string {template!r}")
            spec = template[i + 1:close].split(":", 1)[0].split(",", 1)[0].strip()
            if not spec.isdigit() or int(spec) >= len(args):
                raise TemplateError(f"format index {spec!r} out of range in {template!r}")
            value = args[int(spec)]
            out.append(_string(value))
            i = close + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _union(*values: Any) -> Any:
    if all(isinstance(v, Mapping) for v in values):
        merged: dict[str, Any] = {}
        for value in values:
            for key, item in value.items():
                existing = next((k for k in merged if fold(k) == fold(key)), None)
                if existing is not None and isinstance(merged[existing], Mapping) and isinstance(item, Mapping):
                    merged[existing] = _union(merged[existing], item)
                else:
                    if existing is not None:
                        del merged[existing]
                    merged[key] = item
        return merged
    if all(isinstance(v, list) for v in values):
        out: list[Any] = []
        for value in values:
            for item in value:
                if not any(_equal(item, seen) for seen in out):
                    out.append(item)
        return out
    raise TemplateError("union takes all arrays or all objects")


def _has_equal(value: Mapping[str, Any], key: str, item: Any) -> bool:
    found, other = member(value, key)
    return found and _equal(other, item)


def _intersection(first: Any, *others: Any) -> Any:
    if isinstance(first, Mapping) and all(isinstance(o, Mapping) for o in others):
        return {k: v for k, v in first.items() if all(_has_equal(o, k, v) for o in others)}
    if isinstance(first, list) and all(isinstance(o, list) for o in others):
        out: list[Any] = []
        for item in first:
            if all(any(_equal(item, x) for x in o) for o in others) and not any(_equal(item, x) for x in out):
                out.append(item)
        return out
    raise TemplateError("intersection takes all arrays or all objects")


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return _string(item) in container
    if isinstance(container, list):
        return any(_equal(item, x) for x in container)
    if isinstance(container, Mapping):
        return member(container, _string(item))[0]
    raise TemplateError(f"contains over {_kind(container)}")


def _not(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TemplateError(f"not over {_kind(value)}")
    return not value


def _object_keys(value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        raise TemplateError(f"objectKeys over {_kind(value)}")
    return list(value)


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, list, Mapping)):
        return len(value) == 0
    raise TemplateError(f"empty over {_kind(value)}")


def _length(value: Any) -> int:
    if isinstance(value, (str, list, Mapping)):
        return len(value)
    raise TemplateError(f"length over {_kind(value)}")


def _first(value: Any) -> Any:
    if isinstance(value, (str, list)):
        return value[0] if value else ("" if isinstance(value, str) else None)
    raise TemplateError(f"first over {_kind(value)}")


def _last(value: Any) -> Any:
    if isinstance(value, (str, list)):
        return value[-1] if value else ("" if isinstance(value, str) else None)
    raise TemplateError(f"last over {_kind(value)}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TemplateError("int over a bool")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TemplateError(f"int over {_kind(value)}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int):
        return value != 0
    raise TemplateError(f"bool over {_kind(value)}")


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        raise TemplateError("json over a non-string")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"json: {exc.msg}") from None


def _split(value: Any, delimiters: Any) -> list[str]:
    if not isinstance(value, str):
        raise TemplateError(f"split over {_kind(value)}")
    separators = delimiters if isinstance(delimiters, list) else [delimiters]
    parts = [value]
    for separator in separators:
        parts = [piece for part in parts for piece in part.split(str(separator))]
    return parts


def _take(value: Any, count: Any) -> Any:
    if not isinstance(value, (str, list)):
        raise TemplateError(f"take over {_kind(value)}")
    return value[:max(0, _int(count))]


def _skip(value: Any, count: Any) -> Any:
    if not isinstance(value, (str, list)):
        raise TemplateError(f"skip over {_kind(value)}")
    return value[max(0, _int(count)):]


def _substring(value: Any, start: Any, length: Any = None) -> str:
    if not isinstance(value, str):
        raise TemplateError(f"substring over {_kind(value)}")
    begin = _int(start)
    end = len(value) if length is None else begin + _int(length)
    if begin < 0 or end > len(value) or end < begin:
        raise TemplateError("substring out of range")
    return value[begin:end]


def _create_object(*args: Any) -> dict[str, Any]:
    if len(args) % 2:
        raise TemplateError("createObject takes name/value pairs")
    out: dict[str, Any] = {}
    for key, value in zip(args[::2], args[1::2], strict=True):
        if not isinstance(key, str):
            raise TemplateError("createObject property names are strings")
        out[key] = value
    return out


def _try_get(value: Any, *keys: Any) -> Any:
    for key in keys:
        if value is None:
            return None
        if isinstance(value, Mapping):
            value = member(value, _string(key))[1]
        elif isinstance(value, list) and isinstance(key, int) and not isinstance(key, bool):
            value = value[key] if 0 <= key < len(value) else None
        else:
            return None
    return value


def _items(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise TemplateError(f"items over {_kind(value)}")
    return [{"key": k, "value": value[k]} for k in sorted(value, key=lambda k: fold(str(k)))]


_LARGEST = 4_000_000      # characters: ARM refuses templates over 4 MB; a value past it is a trap, not a value


def _replace(value: Any, old: Any, new: Any) -> str:
    text, old, new = str(value), str(old), str(new)
    if old and text.count(old) * len(new) > _LARGEST:
        raise TemplateError("replace() result larger than a template can be")
    return text.replace(old, new)


def _pad_left(value: Any, width: Any, char: Any = " ") -> str:
    if _int(width) > _LARGEST:
        raise TemplateError("padLeft() width larger than a template can be")
    return _string(value).rjust(_int(width), str(char)[:1] or " ")


def _range(start: Any, count: Any) -> list[int]:
    if not 0 <= _int(count) <= 10_000:
        raise TemplateError("range count must be from 0 to 10000")
    return list(range(_int(start), _int(start) + _int(count)))


def _compare(a: Any, b: Any) -> int:
    if (isinstance(a, str) and isinstance(b, str)) or (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return (a > b) - (a < b)
    raise TemplateError("compare strings with strings and numbers with numbers")


def _index_of(value: Any, item: Any) -> int:
    if isinstance(value, str):
        return value.lower().find(_string(item).lower())
    if isinstance(value, list):
        return next((i for i, x in enumerate(value) if _equal(x, item)), -1)
    raise TemplateError(f"indexOf over {_kind(value)}")


def _resource_id(*segments: Any) -> str:
    """`resourceId([subscriptionId], [resourceGroupName], type, name1, name2...)` as ARM builds it; the
    deployment's own subscription and group are placeholders."""
    parts = [str(s) for s in segments]
    type_at = next((i for i, p in enumerate(parts) if "/" in p and "." in p.split("/")[0]), None)
    if type_at is None:
        raise TemplateError("resourceId needs a resource type (Namespace/type)")
    scope = parts[:type_at]
    subscription = scope[0] if len(scope) == 2 else _SUBSCRIPTION_ID
    group = scope[-1] if scope else _GROUP_NAME
    return _child_id(f"/subscriptions/{subscription}/resourceGroups/{group}", parts[type_at], parts[type_at + 1:])


def _child_id(prefix: str, resource_type: str, names: list[str]) -> str:
    namespace, *types = resource_type.split("/")
    if len(types) != len(names):
        raise TemplateError(f"{resource_type} takes {len(types)} name(s), {len(names)} given")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"{prefix}/providers/{namespace}/{path}"


def _subscription_resource_id(*segments: Any) -> str:
    parts = [str(s) for s in segments]
    subscription = parts.pop(0) if parts and "/" not in parts[0] and len(parts) > 2 else _SUBSCRIPTION_ID
    return _child_id(f"/subscriptions/{subscription}", parts[0], parts[1:])


def _tenant_resource_id(*segments: Any) -> str:
    parts = [str(s) for s in segments]
    return _child_id("", parts[0], parts[1:])


def _extension_resource_id(scope: Any, *segments: Any) -> str:
    parts = [str(s) for s in segments]
    return _child_id(str(scope), parts[0], parts[1:])


_SUBSCRIPTION_ID = Placeholder("{subscriptionId}")
_GROUP_NAME = Placeholder("{resourceGroup}")


def subscription() -> dict[str, Any]:
    return {"id": Placeholder("/subscriptions/{subscriptionId}"), "subscriptionId": _SUBSCRIPTION_ID,
            "tenantId": Placeholder("{tenantId}"), "displayName": Placeholder("{subscription}")}


def resource_group() -> dict[str, Any]:
    return {"id": Placeholder("/subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}"),
            "name": _GROUP_NAME, "type": "Microsoft.Resources/resourceGroups",
            "location": Placeholder("{location}"), "properties": {"provisioningState": "Succeeded"}}


def deployment() -> dict[str, Any]:
    return {"name": Placeholder("{deployment}"), "location": Placeholder("{location}"),
            "properties": {"templateHash": Placeholder("{templateHash}")}}


def _placeholder_call(name: str) -> Callable[..., Any]:
    def call(*args: Any) -> Placeholder:
        return Placeholder("{" + name + "}")
    return call


def _unknown_call(name: str, why: str) -> Callable[..., Any]:
    def call(*args: Any) -> Unresolved:
        return Unresolved(f"{name}(): {why}")
    return call


_AT_DEPLOYMENT = "known only when the deployment runs"

# name (lower case) -> implementation over evaluated arguments
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "equals": _equal,
    "not": _not,
    "empty": _empty,
    "contains": _contains,
    "createobject": _create_object,
    "createarray": lambda *a: list(a),
    "array": lambda a: a if isinstance(a, list) else [a],
    "union": _union,
    "intersection": _intersection,
    "concat": lambda *a: ([x for v in a for x in v] if all(isinstance(v, list) for v in a)
                          else "".join(_string(v) for v in a)),
    "format": lambda template, *a: _format(str(template), *a),
    "tolower": lambda a: str(a).lower(),
    "toupper": lambda a: str(a).upper(),
    "trim": lambda a: str(a).strip(),
    "length": _length,
    "string": _string,
    "int": _int,
    "bool": _bool,
    "float": float,
    "json": _json,
    "null": lambda: None,
    "true": lambda: True,
    "false": lambda: False,
    "first": _first,
    "last": _last,
    "take": _take,
    "skip": _skip,
    "split": _split,
    "replace": _replace,
    "startswith": lambda a, b: str(a).lower().startswith(str(b).lower()),
    "endswith": lambda a, b: str(a).lower().endswith(str(b).lower()),
    "indexof": _index_of,
    "lastindexof": lambda a, b: (str(a).lower().rfind(str(b).lower()) if isinstance(a, str)
                                 else max((i for i, x in enumerate(a) if _equal(x, b)), default=-1)),
    "substring": _substring,
    "padleft": _pad_left,
    "uri": lambda base, rel: base.rsplit("/", 1)[0] + "/" + rel if not base.endswith("/") else base + rel,
    "uricomponent": lambda a: quote(str(a), safe=""),
    "base64": lambda a: base64.b64encode(str(a).encode()).decode(),
    "trygetvalue": _try_get,
    "tryget": _try_get,
    "items": _items,
    "objectkeys": _object_keys,
    "range": _range,
    "min": lambda *a: min(a[0] if len(a) == 1 and isinstance(a[0], list) else a),
    "max": lambda *a: max(a[0] if len(a) == 1 and isinstance(a[0], list) else a),
    "add": lambda a, b: _int(a) + _int(b),
    "sub": lambda a, b: _int(a) - _int(b),
    "mul": lambda a, b: _int(a) * _int(b),
    "div": lambda a, b: int(_int(a) / _int(b)),
    "mod": lambda a, b: _int(a) % _int(b),
    "less": lambda a, b: _compare(a, b) < 0,
    "lessorequals": lambda a, b: _compare(a, b) <= 0,
    "greater": lambda a, b: _compare(a, b) > 0,
    "greaterorequals": lambda a, b: _compare(a, b) >= 0,
    "resourceid": _resource_id,
    "subscriptionresourceid": _subscription_resource_id,
    "tenantresourceid": _tenant_resource_id,
    "extensionresourceid": _extension_resource_id,
    "subscription": subscription,
    "resourcegroup": resource_group,
    "deployment": deployment,
    "tenant": lambda: {"tenantId": Placeholder("{tenantId}")},
    "managementgroup": lambda *a: {"id": Placeholder("{managementGroupId}"), "name": Placeholder("{managementGroup}")},
    "environment": lambda: {"name": Placeholder("{environment}"),
                            "suffixes": {"acrLoginServer": Placeholder("{acrLoginServerSuffix}")}},
    "uniquestring": _placeholder_call("uniqueString"),
    "guid": _placeholder_call("guid"),
    "reference": _unknown_call("reference", _AT_DEPLOYMENT),
    "newguid": _unknown_call("newGuid", "a new value on every deployment"),
    "utcnow": _unknown_call("utcNow", "the time of the deployment"),
    "pickzones": _unknown_call("pickZones", "the region's zones are read from Azure"),
    "providers": _unknown_call("providers", "read from Azure"),
    "listaccountsas": _unknown_call("listAccountSas", _AT_DEPLOYMENT),
}

# results built from a placeholder's text stay placeholders only for these; everything else is unknown
TEXT_BUILDERS = frozenset({
    "concat", "format", "tolower", "toupper", "trim", "replace", "resourceid", "subscriptionresourceid",
    "tenantresourceid", "extensionresourceid", "uniquestring", "guid", "split", "last", "first", "take", "skip",
    "substring", "string", "createobject", "createarray", "union", "coalesce", "tryget", "trygetvalue", "padleft",
    "uri", "uricomponent", "array",
})


def is_unknown_function(name: str) -> bool:
    """`list*()` (listKeys, listSecrets, ...) read secrets from Azure at deployment time."""
    return name.startswith("list")
