"""The ARM expression evaluator (dlp/inputs/arm): the parser, each function templates and AVM use, lazy `if`,
unknowns that stay unknown (with the values they can take), placeholders that never decide."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlp.inputs.arm.evaluator import Context, evaluate_value
from dlp.inputs.arm.expressions import Call, ExpressionError, Index, Literal, Member, parse, render
from dlp.inputs.arm.values import Placeholder
from dlp.inputs.sources import Unresolved

PARAMETERS = {
    "sku": {"type": "string", "defaultValue": "Premium", "allowedValues": ["Basic", "Standard", "Premium"]},
    "status": {"type": "string", "allowedValues": ["enabled", "disabled"]},            # no value: its choices
    "open": {"type": "bool"},                                                           # no value: true or false
    "nothing": {"type": "array", "nullable": True},                                     # left out: null
    "rules": {"type": "array", "defaultValue": [{"action": "Allow", "value": "10.0.0.0/8"}]},
    "settings": {"type": "object", "defaultValue": {"Inner": {"a": 1}, "list": [1, 2]}},
    "fromOther": {"type": "string", "defaultValue": "[toUpper(parameters('sku'))]"},
}
VARIABLES = {
    "props": "[createObject('adminUserEnabled', true(), 'anonymousPullEnabled', true())]",
    "loop": "[variables('loop')]",
    "copy": [{"name": "names", "count": 3, "input": "[format('acr{0}', copyIndex('names', 1))]"}],
}


def value(expression: Any, supplied: dict[str, Any] | None = None) -> Any:
    context = Context({"parameters": PARAMETERS, "variables": VARIABLES}, supplied or {})
    return evaluate_value(expression, context.frame())


@pytest.mark.parametrize(("expression", "expected"), [
    ("[parameters('sku')]", "Premium"),
    ("[parameters('SKU')]", "Premium"),                                      # names ignore case
    ("[parameters('fromOther')]", "PREMIUM"),                                # a default may be an expression
    ("[parameters('nothing')]", None),
    ("[variables('props').adminUserEnabled]", True),
    ("[variables('props')['anonymousPullEnabled']]", True),
    ("[variables('names')]", ["acr1", "acr2", "acr3"]),
    ("[parameters('settings').inner.a]", 1),                                 # property names ignore case
    ("[parameters('settings').list[1]]", 2),
    ("[parameters('settings').?missing]", None),
    ("[parameters('settings').?missing.deeper]", Unresolved),               # .? only guards its own step
    ("[parameters('nothing')[?0]]", None),
    ("[tryGet(parameters('settings'), 'Inner', 'a')]", 1),
    ("[tryGet(parameters('settings'), 'nope')]", None),
    ("[if(equals(parameters('sku'), 'Premium'), 'Disabled', 'Enabled')]", "Disabled"),
    ("[if(equals(parameters('sku'), 'premium'), 'Disabled', 'Enabled')]", "Enabled"),   # equals is case-sensitive
    ("[if(true(), 'a', reference('x').y)]", "a"),                            # the branch not taken is not evaluated
    ("[not(empty(parameters('rules')))]", True),
    ("[and(true(), or(false(), true()))]", True),
    ("[and(false(), reference('x').y)]", False),                             # false decides whatever the rest is
    ("[or(true(), reference('x').y)]", True),
    ("[coalesce(parameters('nothing'), createArray())]", []),
    ("[coalesce(null(), '', 'x')]", ""),                                     # an empty string is not null
    ("[contains(parameters('settings'), 'INNER')]", True),
    ("[contains(createArray('a', 'b'), 'b')]", True),
    ("[contains('Premium', 'prem')]", False),
    ("[union(createObject('a', createObject('b', 1)), createObject('a', createObject('c', 2)))]", {"a": {"b": 1, "c": 2}}),
    ("[union(createArray(1, 2), createArray(2, 3))]", [1, 2, 3]),
    ("[intersection(createArray(1, 2, 3), createArray(2, 3, 4))]", [2, 3]),
    ("[concat('a', 'b', string(1))]", "ab1"),
    ("[concat(createArray(1), createArray(2))]", [1, 2]),
    ("[format('{0}-{1}', 'acr', 2)]", "acr-2"),
    ("[toLower('ABC')]", "abc"),
    ("[length(parameters('rules'))]", 1),
    ("[int('42')]", 42),
    ("[bool('true')]", True),
    ("[json('{\"a\": [1]}').a[0]]", 1),
    ("[first(createArray('x', 'y'))]", "x"),
    ("[last(split('a/b/c', '/'))]", "c"),
    ("[take(createArray(1, 2, 3), 2)]", [1, 2]),
    ("[skip('abcdef', 4)]", "ef"),
    ("[replace('a-b', '-', '')]", "ab"),
    ("[startsWith('Microsoft.X', 'microsoft')]", True),
    ("[endsWith('abc', 'BC')]", True),
    ("[items(createObject('b', 2, 'a', 1))]", [{"key": "a", "value": 1}, {"key": "b", "value": 2}]),
    ("[map(createArray(1, 2), lambda('x', mul(lambdaVariables('x'), 10)))]", [10, 20]),
    ("[filter(createArray(1, 2, 3), lambda('x', greater(lambdaVariables('x'), 1)))]", [2, 3]),
    ("[reduce(createArray(1, 2, 3), 0, lambda('c', 'n', add(lambdaVariables('c'), lambdaVariables('n'))))]", 6),
    ("[[parameters('sku')]", "[parameters('sku')]"),                          # the [[ escape is a literal
    ("plain text", "plain text"),
])
def test_functions_and_access(expression, expected):
    result = value(expression)
    if expected is Unresolved:
        assert isinstance(result, Unresolved)
    else:
        assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("expression", [
    "[reference('acr').properties.publicNetworkAccess]", "[listKeys('x', '2023-01-01').keys[0]]", "[utcNow()]",
    "[newGuid()]", "[parameters('undeclared')]", "[variables('loop')]", "[pickZones('x', 'y', 'z')]",
    "[notAFunction(1)]", "[parameters('settings').missing]", "[createArray(1)[5]]", "[int('x')]", "[concat('a']",
    "[if(parameters('sku'), 'a', 'b')]", "[(]",
])
def test_what_cannot_be_known_offline_is_unresolved_never_a_guess(expression):
    assert isinstance(value(expression), Unresolved)


def test_a_parameter_with_no_value_can_take_its_allowed_values():
    assert value("[parameters('status')]").options == ("enabled", "disabled")
    assert value("[parameters('open')]").options == (False, True)
    # an `if` on an unknown condition can take both branches; equal branches are a value
    assert value("[if(parameters('open'), 'Disabled', 'Enabled')]").options == ("Disabled", "Enabled")
    assert value("[if(parameters('open'), 'Disabled', 'Disabled')]") == "Disabled"
    # functions of an unknown with few values are computed for each: toLower of enabled|disabled
    assert value("[toLower(parameters('status'))]").options == ("enabled", "disabled")
    assert value("[equals(parameters('status'), 'disabled')]").options == (False, True)
    # a supplied value wins
    assert value("[parameters('status')]", {"status": "disabled"}) == "disabled"


def test_placeholders_build_names_but_never_decide():
    name = value("[format('acr{0}', uniqueString(resourceGroup().id))]")
    assert name == "acr{uniqueString}" and isinstance(name, Placeholder)
    assert isinstance(value("[resourceId('Microsoft.ContainerRegistry/registries', 'acr1')]"), str)
    assert value("[resourceId('Microsoft.ContainerRegistry/registries', 'acr1')]").endswith(
        "/providers/Microsoft.ContainerRegistry/registries/acr1")
    for decision in ("[equals(resourceGroup().location, 'westeurope')]", "[empty(subscription().subscriptionId)]",
                     "[if(contains(resourceGroup().name, 'prod'), 'Disabled', 'Enabled')]",
                     "[length(deployment().name)]"):
        assert isinstance(value(decision), Unresolved), decision


def test_user_defined_functions_see_only_their_arguments():
    template = {"functions": [{"namespace": "__bicep", "members": {"mode": {
        "parameters": [{"name": "locked", "type": "bool"}],
        "output": {"type": "string", "value": "[if(parameters('locked'), 'Disabled', 'Enabled')]"}}}}],
        "parameters": {"locked": {"type": "bool", "defaultValue": False}}}
    frame = Context(template, {}).frame()
    assert evaluate_value("[__bicep.mode(true())]", frame) == "Disabled"
    assert evaluate_value("[__bicep.mode(parameters('locked'))]", frame) == "Enabled"


def test_property_copy_builds_an_array():
    assert value({"ipRules": [], "copy": [{"name": "ipRules", "count": 2,
                                          "input": {"value": "[format('10.0.{0}.0/24', copyIndex('ipRules'))]"}}]}) == {
        "ipRules": [{"value": "10.0.0.0/24"}, {"value": "10.0.1.0/24"}]}


# --- the parser ----------------------------------------------------------------------------------

def test_parser_shapes():
    assert parse("[parameters('a').b[0].?c[?1]]") == Index(Member(Index(Member(
        Call("parameters", (Literal("a"),)), "b", False), Literal(0), False), "c", True), Literal(1), True)
    assert parse("[ concat( 'it''s' , -1 ) ]") == Call("concat", (Literal("it's"), Literal(-1)))
    assert parse("[__bicep.fn(true, null)]") == Call("__bicep.fn", (Literal(True), Literal(None)))
    for bad in ("[concat('a']", "[unknown]", "['open]", "[a(1) b]", "[1.2.3]"):
        with pytest.raises(ExpressionError):
            parse(bad)


_names = st.sampled_from(["concat", "if", "equals", "createObject", "format", "tryGet", "coalesce"])
_literals = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8).map(Literal),
                      st.integers(-1000, 1000).map(Literal), st.sampled_from([True, False, None]).map(Literal))
_nodes = st.recursive(_literals, lambda inner: st.one_of(
    st.builds(lambda n, a: Call(n.lower(), tuple(a)), _names, st.lists(inner, max_size=3)),
    st.builds(Member, inner.filter(lambda x: isinstance(x, Call)),
              st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True), st.booleans()),
    st.builds(Index, inner.filter(lambda x: isinstance(x, Call)), inner, st.booleans()),
), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_nodes.filter(lambda n: not isinstance(n, Literal)))
def test_parser_round_trips(node):
    assert parse(f"[{render(node)}]") == node


# --- laws ----------------------------------------------------------------------------------------

_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.sampled_from("abc"), inner, max_size=3)), max_leaves=8)
_objects = st.dictionaries(st.sampled_from("abcd"), _json, max_size=4)
_scalars = st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=3))
# deep merge is associative when each key holds one kind of value: scalars at a/b, objects at c/d (at every level)
_merged = st.recursive(st.fixed_dictionaries({}, optional={"a": _scalars, "b": _scalars}),
                       lambda inner: st.fixed_dictionaries({}, optional={"a": _scalars, "b": _scalars,
                                                                         "c": inner, "d": inner}), max_leaves=10)


def _call(name: str, *args: Any) -> Any:
    context = Context({"parameters": {f"p{i}": {"type": "object"} for i in range(len(args))}},
                      {f"p{i}": arg for i, arg in enumerate(args)})
    arguments = ", ".join(f"parameters('p{i}')" for i in range(len(args)))
    text = f"[{name}({arguments})]"
    return evaluate_value(text, context.frame())


@settings(max_examples=150, deadline=None)
@given(_merged, _merged, _merged, _objects, _objects)
def test_union_of_objects_is_associative_and_the_last_value_wins(a, b, c, x, y):
    # (a null or an array replacing an object breaks associativity, as in any deep merge)
    assert _call("union", _call("union", a, b), c) == _call("union", a, _call("union", b, c))
    merged = _call("union", x, y)
    for key, item in y.items():
        if not (isinstance(item, dict) and isinstance(x.get(key), dict)):
            assert merged[key] == item
    assert _call("union", x, {}) == x
    merged = _call("union", a, b)
    for key, item in b.items():
        if not (isinstance(item, dict) and isinstance(a.get(key), dict)):
            assert merged[key] == item
    assert _call("union", a, {}) == a


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), _json), max_size=5))
def test_coalesce_is_the_first_non_null(values):
    expected = next((v for v in values if v is not None), None)
    assert _call("coalesce", *values) == expected


@pytest.mark.parametrize("body", ["[concat(variables('v{i}'), variables('v{i}'))]",
                                  "[format('{{0}}{{0}}', variables('v{i}'))]",
                                  "[replace(variables('v{i}'), 'x', variables('v{i}'))]"])
def test_a_template_that_doubles_a_value_until_it_is_huge_is_unknown_not_a_hang(body):
    """An attacker's template must not make the gate run out of memory (then it would not gate at all)."""
    chain = {f"v{i + 1}": body.format(i=i) for i in range(64)}
    chain["v0"] = "x" * 64
    found = evaluate_value("[variables('v64')]", Context({"variables": chain}, {}).frame())
    assert isinstance(found, Unresolved)
    assert isinstance(value("[range(0, 100000000)]"), Unresolved)
    assert isinstance(value("[padLeft('a', 100000000, 'x')]"), Unresolved)
