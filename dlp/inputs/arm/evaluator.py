"""Template values -> what ARM would deploy: expressions evaluated in a template's scope.

A `Context` is one template's parameters and variables (evaluated lazily, once, with cycles caught); a `Frame`
adds what changes inside it (copy indexes, lambda variables). `evaluate_value` walks any JSON value: expression
strings are evaluated, `[[` escapes unescaped, property `copy` arrays expanded. Nothing here raises for a bad or
unknowable expression: the value becomes `Unresolved` saying why, and only that value is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlp.inputs.arm import functions
from dlp.inputs.arm.expressions import Call, ExpressionError, Literal, Member, Node, is_expression, parse, unescape
from dlp.inputs.arm.functions import FUNCTIONS, TEXT_BUILDERS, TemplateError, member
from dlp.inputs.arm.values import Lambda, Placeholder, contains_placeholder, contains_unresolved, lift, one_of, taint
from dlp.inputs.sources import Unresolved, ci_get

MAX_COPY = 800                 # ARM's limit on a copy loop's count
MAX_NESTING = 200
MAX_SIZE = 4_000_000           # characters or items: ARM refuses templates over 4 MB
_ERRORS = (TemplateError, TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, AttributeError, OverflowError)
# functions that only carry their arguments into a container: values inside may stay unknown or placeholders
_CARRIERS = frozenset({"createobject", "createarray", "union", "intersection", "tryget", "trygetvalue", "array",
                       "items", "objectkeys", "length", "empty", "first", "last", "take", "skip", "concat"})
_LAZY: dict[str, Callable[..., Any]] = {}


class Context:
    """One template's scope: declared parameters with the values supplied, variables, user-defined functions."""

    def __init__(self, template: Mapping[str, Any], supplied: Mapping[str, Any], *,
                 outer: Context | None = None):
        self.template = template
        self.outer = outer                     # `scope: outer` nested templates read the parent's values
        self.supplied = {str(k).lower(): v for k, v in supplied.items()}
        self._declared = _by_lower(ci_get(template, "parameters"))
        self._variables = _by_lower(ci_get(template, "variables"))
        self._copy_variables = {str(ci_get(c, "name")).lower(): c for c in (ci_get(template, "variables", "copy") or [])
                                if isinstance(c, Mapping)}
        self._functions = _user_functions(template)
        self._values: dict[tuple[str, str], Any] = {}
        self._busy: set[tuple[str, str]] = set()

    def frame(self) -> Frame:
        return Frame(self)

    def parameter(self, name: str) -> Any:
        if self.outer is not None:
            return self.outer.parameter(name)
        return self._memo("parameters", name, self._parameter)

    def variable(self, name: str) -> Any:
        if self.outer is not None:
            return self.outer.variable(name)
        return self._memo("variables", name, self._variable)

    def function(self, name: str) -> Mapping[str, Any] | None:
        found = self._functions.get(name)
        return found if found is not None or self.outer is None else self.outer.function(name)

    def _memo(self, kind: str, name: str, compute: Callable[[str], Any]) -> Any:
        key = (kind, name.lower())
        if key in self._values:
            return self._values[key]
        if key in self._busy:
            return Unresolved(f"{kind}('{name}') refers to itself")
        self._busy.add(key)
        try:
            value = compute(name.lower())
        finally:
            self._busy.discard(key)
        self._values[key] = value
        return value

    def _parameter(self, key: str) -> Any:
        spec = self._declared.get(key)
        if not isinstance(spec, Mapping):
            return Unresolved(f"parameters('{key}') is not declared")
        if key in self.supplied:
            return self.supplied[key]
        if "defaultValue" in spec or ci_get(spec, "defaultValue") is not None:
            return evaluate_value(ci_get(spec, "defaultValue"), self.frame())
        if ci_get(spec, "nullable") is True:
            return None                        # languageVersion 2.0: a nullable parameter left out is null
        allowed = ci_get(spec, "allowedValues")
        kind = str(ci_get(spec, "type") or "").lower()
        options: tuple[Any, ...] | None = None
        if isinstance(allowed, list) and allowed and kind != "array":
            options = tuple(allowed)
        elif kind == "bool":
            options = (False, True)
        return Unresolved(f"parameter '{key}' has no value", options)

    def _variable(self, key: str) -> Any:
        if key in self._variables and key != "copy":
            return evaluate_value(self._variables[key], self.frame())
        loop = self._copy_variables.get(key)
        if loop is not None:
            return _expand_copy(loop, self.frame())
        return Unresolved(f"variables('{key}') is not declared")


@dataclass(frozen=True)
class Frame:
    """Where an expression is evaluated: its template's context, the copy loops around it, lambda variables."""

    context: Context
    copies: Mapping[str, Any] = field(default_factory=dict)     # loop name (lower) -> index
    current: str = ""                                            # the innermost loop, for copyIndex()
    lambdas: Mapping[str, Any] = field(default_factory=dict)
    bound: Mapping[str, Any] | None = None                       # a user-defined function's arguments

    def in_copy(self, name: str, index: Any) -> Frame:
        return Frame(self.context, {**self.copies, name.lower(): index}, name.lower(), self.lambdas, self.bound)

    def with_lambdas(self, values: Mapping[str, Any]) -> Frame:
        return Frame(self.context, self.copies, self.current, {**self.lambdas, **values}, self.bound)


def _by_lower(section: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in section.items()} if isinstance(section, Mapping) else {}


def _user_functions(template: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for group in ci_get(template, "functions") or []:
        namespace = str(ci_get(group, "namespace") or "").lower()
        for name, spec in (ci_get(group, "members") or {}).items():
            if isinstance(spec, Mapping):
                found[f"{namespace}.{str(name).lower()}"] = spec
    return found


# --- values ----------------------------------------------------------------------------------

def evaluate_value(value: Any, frame: Frame, depth: int = 0) -> Any:
    """Any template value with every expression in it evaluated (property `copy` arrays expanded)."""
    if depth > MAX_NESTING:
        raise RecursionError("template value nested too deeply")     # the reader's "JSON nested too deeply"
    if type(value) is str:
        if value[:1] != "[":
            return value
        if is_expression(value):
            return evaluate_expression(value, frame)
        return unescape(value)
    if isinstance(value, Mapping):
        loops = value.get("copy")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "copy" and isinstance(loops, list):
                continue
            out[key] = evaluate_value(item, frame, depth + 1)
        if isinstance(loops, list):
            for loop in loops:
                name = ci_get(loop, "name")
                if isinstance(name, str):
                    out[name] = _expand_copy(loop, frame)
        return out
    if isinstance(value, list):
        return [evaluate_value(item, frame, depth + 1) for item in value]
    return value


def _expand_copy(loop: Mapping[str, Any], frame: Frame) -> Any:
    """A variable or property `copy` ({name, count, input}) -> the array it builds."""
    name = str(ci_get(loop, "name") or "")
    count = copy_count(ci_get(loop, "count"), frame)
    if isinstance(count, Unresolved):
        return Unresolved(f"copy '{name}': {count.expression}")
    return [evaluate_value(ci_get(loop, "input"), frame.in_copy(name, i)) for i in range(count)]


def copy_count(raw: Any, frame: Frame) -> int | Unresolved:
    count = evaluate_value(raw, frame)
    if isinstance(count, Unresolved) or contains_placeholder(count):
        return count if isinstance(count, Unresolved) else Unresolved("a copy count from a deployment-time value")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COPY:
        return Unresolved(f"copy count {count!r} is not an integer from 0 to {MAX_COPY}")
    return count


def evaluate_expression(text: str, frame: Frame) -> Any:
    try:
        node = parse(text)
    except ExpressionError as exc:
        return Unresolved(f"not a valid expression ({exc})")
    except RecursionError:
        return Unresolved("expression nested too deeply")
    try:
        return evaluate(node, frame)
    except RecursionError:
        return Unresolved(f"{text}: nested too deeply")


def evaluate(node: Node, frame: Frame) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Call):
        lazy = _LAZY.get(node.name)
        if lazy is not None:
            return lazy(node, frame)
        if "." in node.name:
            return _user_function(node, frame)
        return apply(node.name, [evaluate(arg, frame) for arg in node.args])
    base = evaluate(node.base, frame)
    if isinstance(node, Member):
        return _access(base, node.name, node.safe)
    return _access(base, evaluate(node.index, frame), node.safe)


def _access(base: Any, key: Any, safe: bool) -> Any:
    if isinstance(base, Unresolved) or isinstance(key, Unresolved):
        return lift(lambda b, k: _access(b, k, safe), [base, key], "a property of an unknown value")
    if base is None and safe:
        return None
    try:
        if isinstance(base, list):
            if isinstance(key, bool) or not isinstance(key, int):
                raise TemplateError(f"array index {key!r} is not an integer")
            if 0 <= key < len(base):
                return base[key]
            if safe:
                return None
            raise TemplateError(f"index {key} is out of range (length {len(base)})")
        found, value = member(base, functions._string(key))
    except TemplateError as exc:
        return Unresolved(str(exc))
    if not found:
        return None if safe else Unresolved(f"property {key!r} does not exist")
    return value


def apply(name: str, args: list[Any]) -> Any:
    fn = FUNCTIONS.get(name)
    if fn is None:
        if functions.is_unknown_function(name):
            return Unresolved(f"{name}(): secrets and keys are read from Azure when the deployment runs")
        return Unresolved(f"{name}() is not evaluated offline")
    if any(isinstance(a, Unresolved) for a in args):
        return lift(lambda *a: apply(name, list(a)), args, f"{name}() of a value that cannot be known offline")
    if name not in _CARRIERS and any(contains_unresolved(a) for a in args):
        return Unresolved(f"{name}() of a value that cannot be known offline")
    placeholder = any(contains_placeholder(a) for a in args)
    if placeholder and name not in TEXT_BUILDERS and not (name in _CARRIERS and not isinstance(args[0], str)):
        return Unresolved(f"{name}() of a deployment-time value")
    if name == "concat" and sum(len(a) for a in args if isinstance(a, (str, list))) > MAX_SIZE:
        return Unresolved("concat(): a value larger than a template can be")    # a doubling loop must not hang the gate
    try:
        result = fn(*args)
    except _ERRORS as exc:
        return Unresolved(f"{name}(): {exc}")
    if isinstance(result, (str, list)) and len(result) > MAX_SIZE:
        return Unresolved(f"{name}(): a value larger than a template can be")
    if placeholder and name in TEXT_BUILDERS and not (name in _CARRIERS and not isinstance(args[0], str)):
        return taint(result, f"{name}() of a deployment-time value")
    return result


# --- lazy forms and functions that read the frame ----------------------------------------------

def _lazy(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _LAZY[name] = fn
        return fn
    return register


def truth(value: Any, name: str) -> bool | Unresolved:
    if isinstance(value, Unresolved):
        return value
    if isinstance(value, Placeholder):
        return Unresolved(f"{name}() condition from a deployment-time value")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return Unresolved(f"{name}() condition is not a bool: {value!r}")


@_lazy("if")
def _if(node: Call, frame: Frame) -> Any:
    if len(node.args) != 3:
        return Unresolved("if() takes three arguments")
    condition = truth(evaluate(node.args[0], frame), "if")
    if condition is True:
        return evaluate(node.args[1], frame)
    if condition is False:
        return evaluate(node.args[2], frame)
    branches = [evaluate(node.args[1], frame), evaluate(node.args[2], frame)]
    if condition.options is not None:
        truths = {truth(o, "if") for o in condition.options if not isinstance(truth(o, "if"), Unresolved)}
        if truths == {True}:
            return branches[0]
        if truths == {False}:
            return branches[1]
    return one_of(branches, f"if() whose condition cannot be known offline ({condition.expression})")


def _logic(node: Call, frame: Frame, decisive: bool) -> Any:
    unknown: Unresolved | None = None
    for arg in node.args:
        value = truth(evaluate(arg, frame), node.name)
        if value is decisive:
            return decisive
        if isinstance(value, Unresolved):
            if value.options is not None and decisive not in value.options:
                continue                       # every value it can take is the neutral one
            unknown = value
    if unknown is not None:
        return Unresolved(f"{node.name}() of {unknown.expression}", (False, True))
    return not decisive


_lazy("and")(lambda node, frame: _logic(node, frame, False))
_lazy("or")(lambda node, frame: _logic(node, frame, True))


@_lazy("coalesce")
def _coalesce(node: Call, frame: Frame) -> Any:
    return _coalesce_from([evaluate(arg, frame) for arg in node.args])


def _coalesce_from(values: list[Any]) -> Any:
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, Unresolved):
            if value.options is None:
                return Unresolved(f"coalesce() of {value.expression}")
            rest = _coalesce_from(values[i + 1:])
            return one_of([rest if o is None else o for o in value.options], "coalesce() of an unknown value")
        return value
    return None


def _by_name(lookup: Callable[[Frame, str], Any]) -> Callable[[Call, Frame], Any]:
    """`parameters('x')`, `variables('x')`, `lambdaVariables('x')`: one name, looked up in the frame."""
    def lazy(node: Call, frame: Frame) -> Any:
        name = _name_argument(node, frame)
        return name if isinstance(name, Unresolved) else lookup(frame, name)
    return lazy


def _parameter(frame: Frame, name: str) -> Any:
    if frame.bound is not None:               # inside a user-defined function: only its own arguments
        return frame.bound.get(name.lower(), Unresolved(f"parameters('{name}') is not a parameter of the function"))
    return frame.context.parameter(name)


_LAZY["parameters"] = _by_name(_parameter)
_LAZY["variables"] = _by_name(lambda frame, name: frame.context.variable(name))
_LAZY["lambdavariables"] = _by_name(lambda frame, name: frame.lambdas.get(
    name.lower(), Unresolved(f"lambdaVariables('{name}') is not bound")))


def _name_argument(node: Call, frame: Frame) -> str | Unresolved:
    if len(node.args) != 1:
        return Unresolved(f"{node.name}() takes one name")
    name = evaluate(node.args[0], frame)
    return name if isinstance(name, str) and not isinstance(name, Placeholder) else Unresolved(
        f"{node.name}() with a name that cannot be known offline")


@_lazy("copyindex")
def _copy_index(node: Call, frame: Frame) -> Any:
    args = [evaluate(arg, frame) for arg in node.args]
    name, offset = frame.current, 0
    for arg in args:
        if isinstance(arg, Unresolved):
            return arg
        if isinstance(arg, str):
            name = arg.lower()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            offset = arg
    if name not in frame.copies:
        return Unresolved(f"copyIndex({name!r}) outside that copy loop")
    index = frame.copies[name]
    return index if isinstance(index, Unresolved) else index + offset


@_lazy("lambda")
def _lambda(node: Call, frame: Frame) -> Any:
    names = [evaluate(arg, frame) for arg in node.args[:-1]]
    if not node.args or not all(isinstance(n, str) for n in names):
        return Unresolved("lambda() takes names and a body")
    return Lambda(tuple(str(n).lower() for n in names), node.args[-1], frame)


def _invoke(fn: Any, *args: Any) -> Any:
    if not isinstance(fn, Lambda):
        raise TemplateError("expected a lambda")
    values = dict(zip(fn.names, args, strict=False))
    return evaluate(fn.body, fn.scope.with_lambdas(values))


def _higher(name: str, run: Callable[[list[Any]], Any]) -> None:
    def lazy(node: Call, frame: Frame) -> Any:
        args = [evaluate(arg, frame) for arg in node.args]
        if any(isinstance(a, Unresolved) for a in args):
            return Unresolved(f"{name}() over a value that cannot be known offline")
        try:
            result = run(args)
        except _ERRORS as exc:
            return Unresolved(f"{name}(): {exc}")
        return result
    _LAZY[name] = lazy


def _filtered(args: list[Any]) -> Any:
    kept = []
    for index, item in enumerate(args[0]):
        keep = truth(_invoke(args[1], item, index), "filter")
        if isinstance(keep, Unresolved):
            return Unresolved("filter() whose predicate cannot be known offline")
        if keep:
            kept.append(item)
    return kept


def _reduced(args: list[Any]) -> Any:
    total = args[1]
    for index, item in enumerate(args[0]):
        total = _invoke(args[2], total, item, index)
    return total


def _to_object(args: list[Any]) -> Any:
    out: dict[str, Any] = {}
    for item in args[0]:
        key = _invoke(args[1], item)
        if not isinstance(key, str):
            return Unresolved("toObject() with a key that cannot be known offline")
        out[key] = _invoke(args[2], item) if len(args) > 2 else item
    return out


_higher("map", lambda a: [_invoke(a[1], item, index) for index, item in enumerate(a[0])])
_higher("filter", _filtered)
_higher("reduce", _reduced)
_higher("toobject", _to_object)
_higher("mapvalues", lambda a: {k: _invoke(a[1], v) for k, v in a[0].items()})


def _user_function(node: Call, frame: Frame) -> Any:
    spec = frame.context.function(node.name)
    if spec is None:
        return Unresolved(f"{node.name}() is not defined in the template")
    declared = ci_get(spec, "parameters") or []
    args = [evaluate(arg, frame) for arg in node.args]
    bound = {str(ci_get(p, "name")).lower(): v for p, v in zip(declared, args, strict=False)}
    output = ci_get(spec, "output", "value")
    return evaluate_value(output, Frame(frame.context, bound=bound))
