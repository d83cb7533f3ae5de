"""Values an expression evaluates to beyond plain JSON.

- `Unresolved` (dlp.inputs.sources): cannot be known offline; `options` lists what it can be when that is few.
- `Placeholder`: text standing for a deployment-time value (`resourceGroup().name`, `uniqueString(...)`). It may
  build names and IDs (`format('acr{0}', uniqueString(resourceGroup().id))`), but anything that would decide on it
  (`equals`, `contains`, `length`, an `if` condition) is Unresolved: a placeholder is never a guess.
- `Lambda`: `lambda('x', ...)` for `map`, `filter`, `reduce`, `sort`, `toObject`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dlp.inputs.sources import Unresolved

MAX_OPTIONS = 32          # beyond this many combinations an unknown stays plainly unknown


class Placeholder(str):
    """A deployment-time value's stand-in text, e.g. `{resourceGroup().name}`."""

    __slots__ = ()


@dataclass(frozen=True)
class Lambda:
    names: tuple[str, ...]
    body: Any                       # expressions.Node
    scope: Any                      # the evaluator.Scope it closes over


def is_unknown(value: Any) -> bool:
    return isinstance(value, Unresolved)


def anywhere(value: Any, test: Callable[[Any], bool], depth: int = 0) -> bool:
    """`test` holds for the value or anything inside it (past 64 levels: assumed to hold, never to be absent)."""
    if depth > 64 or test(value):
        return True
    if isinstance(value, Mapping):
        return any(anywhere(v, test, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(anywhere(v, test, depth + 1) for v in value)
    return False


def contains_unresolved(value: Any) -> bool:
    """Unresolved anywhere inside (a deeply nested value counts as unknown)."""
    return anywhere(value, is_unknown)


def contains_placeholder(value: Any, depth: int = 0) -> bool:
    if isinstance(value, Placeholder) or depth > 64:
        return True
    if isinstance(value, Mapping):
        return any(contains_placeholder(k, depth + 1) or contains_placeholder(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_placeholder(v, depth + 1) for v in value)
    return False


def taint(value: Any, why: str) -> Any:
    """A result computed from a placeholder: text stays a placeholder, anything else cannot be known."""
    if isinstance(value, str):
        return Placeholder(value)
    if isinstance(value, list):
        return [taint(v, why) for v in value]
    if isinstance(value, Mapping):
        return {k: taint(v, why) for k, v in value.items()}
    return Unresolved(why)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def one_of(values: Sequence[Any], why: str) -> Any:
    """The value when all are the same, else Unresolved listing them (plain Unresolved when one is unknown)."""
    flat: list[Any] = []
    for value in values:
        if isinstance(value, Unresolved):
            if value.options is None:
                return Unresolved(value.expression)
            flat.extend(value.options)
        else:
            flat.append(value)
    unique = list({_key(v): v for v in flat}.values())
    if len(unique) == 1 and not contains_unresolved(unique[0]):
        return unique[0]
    if len(unique) > MAX_OPTIONS:
        return Unresolved(why)
    return Unresolved(why, tuple(unique))


def lift(fn: Callable[..., Any], args: Sequence[Any], why: str) -> Any:
    """`fn` over every combination of the options of its unresolved arguments: the values the call can take.
    Plain Unresolved when an argument has no options, or there are too many combinations."""
    choices: list[tuple[Any, ...]] = []
    size = 1
    for arg in args:
        if isinstance(arg, Unresolved):
            if arg.options is None:
                return Unresolved(arg.expression)
            choices.append(arg.options)
            size *= max(1, len(arg.options))
        else:
            choices.append((arg,))
    if size > MAX_OPTIONS:
        return Unresolved(why)
    results = []
    for combination in itertools.product(*choices):
        try:
            results.append(fn(*combination))
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, AttributeError):
            return Unresolved(why)     # one combination is an error ARM would refuse: say unknown, not a value
    return one_of(results, why)
