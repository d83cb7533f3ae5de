"""A template's resources as ARM would deploy them: copy loops, conditions, nested deployments, symbolic names.

`expand` walks `resources` (an array, or the languageVersion 2.0 object keyed by symbolic name) and yields one
`Deployed` per resource instance: each copy of a `copy` loop with its own copyIndex, nothing for a resource whose
`condition` is false or that is `existing`, and, for a `Microsoft.Resources/deployments` with an inline template,
the nested template's resources, evaluated in its own scope (`expressionEvaluationOptions.scope: inner`, parameters
passed by value) or in the parent's (`outer`, the default), to any depth. A `templateLink` is not fetched: the
expansion names it, so the caller can say so. A resource whose condition cannot be known offline is expanded and
marked: it is evaluated as if deployed, and said so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlp.inputs.arm.evaluator import Context, Frame, copy_count, evaluate_value, truth
from dlp.inputs.sources import Unresolved, ci_get

DEPLOYMENT_TYPE = "microsoft.resources/deployments"
MAX_DEPTH = 32


@dataclass(frozen=True)
class Deployed:
    """One resource instance ARM would deploy, with the frame its expressions are evaluated in."""

    resource: Mapping[str, Any]          # as written in the template (expressions not yet evaluated)
    frame: Frame
    kind: str                            # the type, lower case
    symbol: str                          # symbolic name, or the index in `resources`
    pointer: str                         # JSON pointer to it in the document
    modules: tuple[str, ...] = ()        # names of the nested deployments it is in, outermost first
    copy_index: int | None = None
    condition: str = ""                  # a condition that cannot be known offline ("" when none or known true)

    def value(self, *path: str) -> Any:
        """A property of the resource, evaluated (`Unresolved` when it cannot be known)."""
        return evaluate_value(ci_get(self.resource, *path), self.frame)


@dataclass
class Expansion:
    resources: list[Deployed] = field(default_factory=list)
    links: list[str] = field(default_factory=list)        # nested deployments by templateLink (not fetched)
    notes: list[str] = field(default_factory=list)


def expand(template: Mapping[str, Any], supplied: Mapping[str, Any]) -> Expansion:
    expansion = Expansion()
    _walk(template, Context(template, supplied).frame(), "", (), "", expansion, 0)
    return expansion


def _pointer_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def resources_of(container: Any, pointer: str) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(symbol or index, JSON pointer, resource) of `resources` as an array or a languageVersion 2.0 object."""
    resources = ci_get(container, "resources")
    if isinstance(resources, list):
        for index, resource in enumerate(resources):
            if isinstance(resource, Mapping):
                yield str(index), f"{pointer}/resources/{index}", resource
    elif isinstance(resources, Mapping):
        for symbol, resource in resources.items():
            if isinstance(resource, Mapping):
                yield str(symbol), f"{pointer}/resources/{_pointer_token(str(symbol))}", resource


def _instances(resource: Mapping[str, Any], frame: Frame, where: str, expansion: Expansion) -> list[tuple[Frame, int | None]]:
    loop = ci_get(resource, "copy")
    if not isinstance(loop, Mapping):
        return [(frame, None)]
    name = str(ci_get(loop, "name") or "copy")
    count = copy_count(ci_get(loop, "count"), frame)
    if isinstance(count, Unresolved):
        expansion.notes.append(f"{where}: copy loop '{name}' has a count that cannot be known offline "
                               f"({count.expression}); one instance is evaluated, with copyIndex() unknown")
        return [(frame.in_copy(name, Unresolved(f"copyIndex('{name}') of a loop whose count is unknown")), None)]
    return [(frame.in_copy(name, index), index) for index in range(count)]


def _walk(container: Mapping[str, Any], frame: Frame, pointer: str, modules: tuple[str, ...],
          condition: str, expansion: Expansion, depth: int) -> None:
    if depth > MAX_DEPTH:
        expansion.notes.append(f"{pointer}: nested deployments deeper than {MAX_DEPTH} levels are not read")
        return
    for symbol, at, resource in resources_of(container, pointer):
        if ci_get(resource, "existing") is True:
            continue                                        # referenced, not deployed here
        where = "/".join((*modules, symbol)) if modules else f"resources/{symbol}"
        for instance, index in _instances(resource, frame, where, expansion):
            decided = _condition(resource, instance)
            if decided is False:
                continue                                    # not deployed, not evaluated
            unknown = condition or (decided if isinstance(decided, str) else "")
            kind = evaluate_value(ci_get(resource, "type"), instance)
            kind = kind.lower() if isinstance(kind, str) else ""
            deployed = Deployed(resource, instance, kind, symbol, at, modules, index, unknown)
            if kind == DEPLOYMENT_TYPE:
                _nested(deployed, expansion, depth)
            else:
                expansion.resources.append(deployed)


def _condition(resource: Mapping[str, Any], frame: Frame) -> bool | str:
    """True / False, or the condition's text when it cannot be known offline."""
    raw = ci_get(resource, "condition")
    if raw is None:
        return True
    value = truth(evaluate_value(raw, frame), "condition")
    if isinstance(value, Unresolved):
        if value.options is not None and all(o is False for o in value.options):
            return False
        if value.options is not None and all(o is True for o in value.options):
            return True
        return raw if isinstance(raw, str) else "condition"
    return value


def module_name(deployed: Deployed) -> str:
    name = deployed.value("name")
    if isinstance(name, str) and name:
        return str(name)
    return f"<{deployed.symbol}>" if not deployed.symbol.isdigit() else f"<resources[{deployed.symbol}]>"


def _nested(deployed: Deployed, expansion: Expansion, depth: int) -> None:
    properties = ci_get(deployed.resource, "properties")
    name = module_name(deployed)
    path = (*deployed.modules, name)
    link = ci_get(properties, "templateLink")
    if link is not None:
        target = evaluate_value(ci_get(link, "uri") or ci_get(link, "id") or ci_get(link, "relativePath"), deployed.frame)
        text = target if isinstance(target, str) else "an address that cannot be known offline"
        expansion.links.append(f"{'/'.join(path)} ({text})")
        return
    template = ci_get(properties, "template")
    if not isinstance(template, Mapping):
        expansion.notes.append(f"{'/'.join(path)}: a nested deployment without an inline template is not read")
        return
    scope = ci_get(properties, "expressionEvaluationOptions", "scope")
    pointer = f"{deployed.pointer}/properties/template"
    if isinstance(scope, str) and scope.lower() == "inner":
        frame = Context(template, _passed(deployed)).frame()
    else:
        frame = deployed.frame                              # outer: the parent's parameters, variables, copy loops
    _walk(template, frame, pointer, path, deployed.condition, expansion, depth + 1)


def _passed(deployed: Deployed) -> dict[str, Any]:
    """The parameters a parent passes to an inner-scope nested template, by value."""
    passed: dict[str, Any] = {}
    declared = ci_get(deployed.resource, "properties", "parameters")
    if not isinstance(declared, Mapping):
        return passed
    for name, entry in declared.items():
        value = evaluate_value(entry, deployed.frame)       # AVM passes whole entries as `[if(..., createObject('value', ...))]`
        if isinstance(value, Unresolved):
            passed[name] = value
        elif isinstance(value, Mapping) and ci_get(value, "reference") is not None:
            passed[name] = Unresolved(f"parameter '{name}' is a Key Vault reference")
        elif isinstance(value, Mapping) and any(isinstance(k, str) and k.lower() == "value" for k in value):
            passed[name] = ci_get(value, "value")
    return passed

