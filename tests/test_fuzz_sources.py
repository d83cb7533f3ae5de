"""Fuzzing the registry normaliser: any JSON value, in any of the shapes it recognises, gives registries the
rule engine can evaluate, or InputError with a message. Never another exception.

`registries_from_document` is what `dlp evaluate` runs on every file a user points it at, so its input is
whatever people have lying around: exports of other tools, half-written templates, wrong files.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlp import report
from dlp.model import Registry
from dlp.rules import evaluate
from dlp.sources import InputError, registries_from_document

pytestmark = pytest.mark.slow  # fuzzing: CI runs it; `pytest -m "not slow"` skips it locally

REGISTRY_TYPES = ["Microsoft.ContainerRegistry/registries", "microsoft.containerregistry/registries",
                  "MICROSOFT.CONTAINERREGISTRY/REGISTRIES", "Microsoft.ContainerRegistry/registries/exportPipelines",
                  "Microsoft.Network/privateEndpoints", "Microsoft.Resources/deployments", "registries", ""]
SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
KEYS = ["properties", "Properties", "sku", "name", "id", "type", "tags", "policies", "exportPolicy", "status",
        "publicNetworkAccess", "networkRuleSet", "defaultAction", "privateEndpointConnections",
        "privateLinkServiceConnectionState", "adminUserEnabled", "anonymousPullEnabled", "dataEndpointEnabled",
        "networkRuleBypassOptions", "networkRuleBypassAllowedForTasks", "provisioningState", "resources", "value",
        "data", "rows", "columns", "parameters", "defaultValue", "dependsOn", "apiVersion", "location", "tier"]
EXPRESSIONS = ["[parameters('p')]", "[parameters('P')]", "[concat('a', 'b')]", "[[escaped]", "[", "]", "[]",
               "[parameters('missing')]", "[resourceId('x')]", "[parameters('p'", "[ parameters ( 'p' ) ]"]
VALUES = ["Enabled", "Disabled", "enabled", "disabled", "Allow", "Deny", "Premium", "Basic", "Standard", "None",
          "AzureServices", "Approved", "Pending", "true", "false", "Succeeded", "Updating"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(VALUES + EXPRESSIONS + REGISTRY_TYPES))
keys = st.sampled_from(KEYS) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=5)
                           | st.dictionaries(keys, children, max_size=6), max_leaves=40)


def resource(props=json_values):
    """Something shaped like an ARM resource, every field drawn (types included)."""
    return st.fixed_dictionaries({"type": st.sampled_from(REGISTRY_TYPES) | json_values}, optional={
        "id": st.text(max_size=200) | json_values, "name": st.text(max_size=60) | json_values,
        "sku": st.fixed_dictionaries({}, optional={"name": st.sampled_from(VALUES) | json_values}) | json_values,
        "properties": props, "Properties": props, "tags": json_values, "resources": st.lists(json_values, max_size=3),
        "apiVersion": st.text(max_size=20) | json_values, "dependsOn": json_values,
    })


registry_props = st.fixed_dictionaries({}, optional={
    key: st.sampled_from(VALUES + EXPRESSIONS) | json_values
    for key in ("publicNetworkAccess", "adminUserEnabled", "anonymousPullEnabled", "dataEndpointEnabled",
                "networkRuleBypassOptions", "networkRuleBypassAllowedForTasks", "provisioningState")
} | {"policies": st.fixed_dictionaries({}, optional={"exportPolicy": st.fixed_dictionaries(
    {}, optional={"status": st.sampled_from(VALUES + EXPRESSIONS) | json_values}) | json_values}) | json_values,
     "networkRuleSet": st.fixed_dictionaries({}, optional={"defaultAction": st.sampled_from(VALUES) | json_values})
     | json_values,
     "privateEndpointConnections": st.lists(json_values | st.fixed_dictionaries({}, optional={
         "name": json_values, "properties": st.fixed_dictionaries({}, optional={
             "privateLinkServiceConnectionState": st.fixed_dictionaries({}, optional={
                 "status": st.sampled_from(VALUES) | json_values})})}), max_size=3) | json_values})

resources = resource(registry_props | json_values)
templates = st.fixed_dictionaries({"resources": st.lists(resources | json_values, max_size=4)
                                   | st.dictionaries(st.text(max_size=8), resources | json_values, max_size=3)
                                   | json_values}, optional={
    "$schema": st.just(SCHEMA) | json_values, "contentVersion": st.just("1.0.0.0") | json_values,
    "languageVersion": st.just("2.0") | json_values,
    "parameters": st.dictionaries(st.sampled_from(["p", "P", "q"]) | st.text(max_size=5), st.fixed_dictionaries(
        {}, optional={"type": st.just("string"), "defaultValue": st.sampled_from(VALUES + EXPRESSIONS) | json_values})
        | json_values, max_size=3) | json_values})
documents = st.one_of(
    json_values,
    resources,
    st.lists(resources | json_values, max_size=5),
    st.fixed_dictionaries({"data": st.lists(resources | json_values, max_size=5) | json_values}),
    st.fixed_dictionaries({"value": st.lists(resources | json_values, max_size=5) | json_values},
                          optional={"nextLink": json_values}),
    st.fixed_dictionaries({"data": st.fixed_dictionaries({
        "columns": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["id", "name", "type", "sku", "properties"])
                                                   | json_values}) | json_values, max_size=5) | json_values,
        "rows": st.lists(st.lists(json_values, max_size=5) | json_values, max_size=4) | json_values})}),
    templates,
)
parameters = st.none() | st.dictionaries(st.sampled_from(["p", "q"]) | st.text(max_size=5), json_values, max_size=3)


def check(document, params=None):
    """The contract: registries the rules and the report can take, or InputError naming the source."""
    try:
        found = registries_from_document(document, "fuzz.json", params)
    except InputError as exc:
        assert str(exc).startswith("fuzz.json: ") and len(str(exc)) > len("fuzz.json: ")
        return None
    assert isinstance(found, list) and found and all(isinstance(r, Registry) for r in found)
    assessments = [evaluate(registry) for registry in found]
    for fmt in ("table", "json", "sarif"):                  # what `dlp evaluate` prints next
        assert report.render(assessments, fmt)
    json.loads(report.render_json(assessments))
    return found


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents, params=parameters)
# found by this test: a table-shaped Resource Graph result whose column names are not strings, or whose
# columns are not a list, raised TypeError
@example(document={"data": {"columns": [{"name": []}], "rows": [[None]]}}, params=None)
@example(document={"data": {"columns": 5, "rows": [[None]]}}, params=None)
def test_any_document_gives_registries_or_an_input_error(document, params):
    check(document, params)


@settings(max_examples=150, deadline=None)
@given(props=registry_props, sku=st.sampled_from(VALUES) | json_values, name=st.text(max_size=60) | json_values)
def test_a_registry_with_any_property_values_is_evaluated(props, sku, name):
    """A resource typed as a registry is always accepted, whatever its property values and their types:
    absent or odd values take Azure's defaults or leave rules unknown; nothing crashes the rule engine."""
    found = check({"type": "Microsoft.ContainerRegistry/registries", "name": name, "sku": {"name": sku},
                   "properties": props})
    assert found is not None and len(found) == 1


def nested(depth: int, leaf=None, key: str = "properties"):
    value = leaf
    for _ in range(depth):
        value = {key: value}
    return value


@pytest.mark.parametrize("document", [
    {"type": "Microsoft.ContainerRegistry/registries", "properties": nested(50_000)},
    {"type": "Microsoft.ContainerRegistry/registries", "properties": {"policies": nested(50_000, key="exportPolicy")}},
    {"data": [nested(50_000, key="data")]},
    nested(50_000, key="data"),
    {"$schema": SCHEMA, "resources": [{"type": "Microsoft.ContainerRegistry/registries", "name": "acrdeep01",
                                       "properties": {"publicNetworkAccess": nested(50_000, key="x")}}]},
    {"$schema": SCHEMA, "resources": nested(50_000, key="resources")},
], ids=["registry properties", "export policy", "resource graph row", "data chain", "template value",
        "template resources"])
def test_deeply_nested_documents_give_a_result_or_an_input_error(document):
    check(document)


def test_huge_documents_are_handled():
    big = "x" * 5_000_000
    rows = [{"type": "Microsoft.ContainerRegistry/registries", "id": f"/subscriptions/s/resourceGroups/rg/providers/"
             f"Microsoft.ContainerRegistry/registries/acr{i:05d}", "name": f"acr{i:05d}", "sku": {"name": "Premium"},
             "tags": {"blob": big if i == 0 else ""}, "properties": {"publicNetworkAccess": "Disabled"}}
            for i in range(2_000)]
    found = check({"data": rows})
    assert found is not None and len(found) == 2_000
    with pytest.raises(InputError):
        registries_from_document({"data": [{"type": big}] * 1000}, "fuzz.json")
