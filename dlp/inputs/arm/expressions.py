"""The ARM template expression language -> a small syntax tree.

    [parameters('x')]  [if(equals(variables('a').b, 'c'), 1, 2)]  [coalesce(p, createArray())[copyIndex()]]
    [tryGet(parameters('o'), 'k')]  [parameters('o').?k]  [parameters('a')[?0]]  [__bicep.myFunc(1)]

Strings are single-quoted with `''` for a quote; integers may be negative; `true`, `false` and `null` are accepted
bare as well as as functions. A string that starts with `[[` is the literal text without the first `[` (`escaped`).
Parsing is cached: a copy loop or a module evaluates the same expression text many times.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dlp.inputs.sources import is_expression


class ExpressionError(ValueError):
    """Text that is not a valid expression: ARM would refuse the template."""


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class Call:
    name: str                     # lower case, with its namespace (`__bicep.myfunc`)
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Member:
    base: Node
    name: str
    safe: bool                    # `.?name`: null instead of an error when absent


@dataclass(frozen=True, slots=True)
class Index:
    base: Node
    index: Node
    safe: bool                    # `[?index]`


Node = Literal | Call | Member | Index

_BARE = {"true": True, "false": False, "null": None}


def unescape(text: str) -> str:
    """`[[x]` is the literal `[x]`; any other string is itself."""
    return text[1:] if text[:2] == "[[" else text


@lru_cache(maxsize=8192)
def parse(text: str) -> Node:
    """A whole template string `[...]` -> its syntax tree; ExpressionError when it is not valid."""
    if not is_expression(text):
        raise ExpressionError(f"not an expression: {text!r}")
    parser = _Parser(text, 1, len(text) - 1)
    node = parser.expression()
    parser.skip()
    if parser.pos != parser.end:
        raise ExpressionError(f"unexpected {text[parser.pos:parser.end]!r} in {text!r}")
    return node


class _Parser:
    def __init__(self, text: str, start: int, end: int):
        self.text = text
        self.pos = start
        self.end = end

    def skip(self) -> None:
        while self.pos < self.end and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < self.end else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = self.text[self.pos] if self.pos < self.end else "the end"
            raise ExpressionError(f"expected {char!r} at {self.pos}, found {found!r} in {self.text!r}")
        self.pos += 1

    def expression(self) -> Node:
        node = self.primary()
        while True:
            char = self.peek()
            if char == ".":
                self.pos += 1
                safe = self.text[self.pos:self.pos + 1] == "?"
                self.pos += safe
                node = Member(node, self.identifier(), safe)
            elif char == "[":
                self.pos += 1
                safe = self.peek() == "?"
                self.pos += safe
                index = self.expression()
                self.expect("]")
                node = Index(node, index, safe)
            else:
                return node

    def primary(self) -> Node:
        char = self.peek()
        if char == "'":
            return Literal(self.string())
        if char == "-" or char.isdigit():
            return Literal(self.number())
        if char == "(":
            self.pos += 1
            node = self.expression()
            self.expect(")")
            return node
        name = self.identifier()
        if self.peek() == "." and self._namespaced():
            self.pos += 1
            name = f"{name}.{self.identifier()}"
        if self.peek() != "(":
            if name.lower() in _BARE:
                return Literal(_BARE[name.lower()])
            raise ExpressionError(f"{name!r} is not a function call in {self.text!r}")
        self.pos += 1
        args: list[Node] = []
        if self.peek() != ")":
            args.append(self.expression())
            while self.peek() == ",":
                self.pos += 1
                args.append(self.expression())
        self.expect(")")
        return Call(name.lower(), tuple(args))

    def _namespaced(self) -> bool:
        """`ns.fn(` (a user-defined function) rather than a property access after a call."""
        probe = self.pos + 1
        while probe < self.end and (self.text[probe].isalnum() or self.text[probe] == "_"):
            probe += 1
        while probe < self.end and self.text[probe] in " \t":
            probe += 1
        return probe > self.pos + 1 and probe < self.end and self.text[probe] == "("

    def identifier(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < self.end and (self.text[self.pos].isalnum() or self.text[self.pos] in "_$"):
            self.pos += 1
        if start == self.pos:
            found = self.text[self.pos] if self.pos < self.end else "the end"
            raise ExpressionError(f"expected a name at {start}, found {found!r} in {self.text!r}")
        return self.text[start:self.pos]

    def string(self) -> str:
        self.pos += 1                          # the opening quote
        parts: list[str] = []
        while True:
            close = self.text.find("'", self.pos, self.end)
            if close < 0:
                raise ExpressionError(f"unterminated string in {self.text!r}")
            parts.append(self.text[self.pos:close])
            self.pos = close + 1
            if self.text[self.pos:self.pos + 1] == "'" and self.pos < self.end:
                parts.append("'")              # '' is one quote
                self.pos += 1
                continue
            return "".join(parts)

    def number(self) -> int | float:
        start = self.pos
        self.pos += self.text[self.pos] == "-"
        while self.pos < self.end and (self.text[self.pos].isdigit() or self.text[self.pos] == "."):
            self.pos += 1
        token = self.text[start:self.pos]
        try:
            return float(token) if "." in token else int(token)
        except ValueError:
            raise ExpressionError(f"not a number: {token!r} in {self.text!r}") from None


def render(node: Node) -> str:
    """A syntax tree -> expression text (without the brackets): for messages, and parser round trips."""
    if isinstance(node, Literal):
        value = node.value
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        if value is None or isinstance(value, bool):
            return {None: "null", True: "true", False: "false"}[value]
        return str(value)
    if isinstance(node, Call):
        return f"{node.name}({', '.join(render(a) for a in node.args)})"
    if isinstance(node, Member):
        return f"{render(node.base)}.{'?' if node.safe else ''}{node.name}"
    return f"{render(node.base)}[{'?' if node.safe else ''}{render(node.index)}]"
