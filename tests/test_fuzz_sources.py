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

from dlp.cli import report
from dlp.domain.model import Registry
from dlp.domain.rules import evaluate
from dlp.inputs.documents import registries_from_document
from dlp.inputs.sources import InputError

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


# --- Terraform: any plan or state shape, any attribute values ---------------------------------------

TF_TYPES = ["azurerm_container_registry", "azapi_resource", "azapi_update_resource", "azurerm_private_endpoint",
            "azurerm_storage_account", ""]
AZAPI_TYPES = ["Microsoft.ContainerRegistry/registries@2025-04-01", "microsoft.containerregistry/registries",
               "Microsoft.ContainerRegistry/registries/exportPipelines@2025-04-01", "Microsoft.Storage/x@1", "@"]
TF_KEYS = ["name", "sku", "admin_enabled", "anonymous_pull_enabled", "data_endpoint_enabled", "export_policy_enabled",
           "public_network_access_enabled", "network_rule_bypass_option", "network_rule_bypass_for_tasks_enabled",
           "network_rule_set", "default_action", "type", "body", "parent_id", "id", "resource_group_name",
           "private_service_connection", "private_connection_resource_id", "subresource_names", "is_manual_connection"]
tf_values = st.recursive(scalars | st.sampled_from([*AZAPI_TYPES, "registry", "Deny"]),
                         lambda children: st.lists(children, max_size=3)
                         | st.dictionaries(st.sampled_from(TF_KEYS) | st.text(max_size=8), children, max_size=6),
                         max_leaves=30)
tf_attributes = st.dictionaries(st.sampled_from(TF_KEYS), tf_values, max_size=10) | tf_values
tf_resource = st.fixed_dictionaries({"type": st.sampled_from(TF_TYPES) | tf_values}, optional={
    "address": st.text(max_size=40) | tf_values, "mode": st.sampled_from(["managed", "data"]) | tf_values,
    "values": tf_attributes})
tf_change = st.fixed_dictionaries({"type": st.sampled_from(TF_TYPES) | tf_values}, optional={
    "address": st.text(max_size=40) | tf_values, "mode": st.sampled_from(["managed", "data"]) | tf_values,
    "change": st.fixed_dictionaries({}, optional={"actions": tf_values, "after": tf_attributes,
                                                  "after_unknown": tf_attributes | st.booleans()}) | tf_values})
tf_module = st.recursive(st.fixed_dictionaries({}, optional={"resources": st.lists(tf_resource | tf_values, max_size=3)
                                                             | tf_values}),
                         lambda children: st.fixed_dictionaries({}, optional={
                             "resources": st.lists(tf_resource, max_size=3), "child_modules": st.lists(children, max_size=2)
                             | tf_values}), max_leaves=6)
terraform_documents = st.fixed_dictionaries({"format_version": st.sampled_from(["1.0", "1.2", "0.1", "2.0", "x"])}, optional={
    "terraform_version": st.just("1.14.0"), "values": st.fixed_dictionaries({"root_module": tf_module | tf_values}) | tf_values,
    "planned_values": st.fixed_dictionaries({"root_module": tf_module}) | tf_values,
    "resource_changes": st.lists(tf_change | tf_values, max_size=4) | tf_values,
    "configuration": tf_values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=terraform_documents)
def test_any_terraform_document_gives_registries_or_an_input_error(document):
    check(document)


registry_attributes = st.fixed_dictionaries({}, optional={key: tf_values for key in TF_KEYS})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["azurerm_container_registry", "azapi_resource"]), after=registry_attributes,
       unknown=registry_attributes | st.booleans(), body=tf_values,
       others=st.lists(tf_change.filter(lambda c: c["type"] not in ("azapi_resource", "azurerm_container_registry",
                                                                    "azapi_update_resource")),
                       max_size=3),
       state_shape=st.booleans())
@example(kind="azapi_resource", after={}, unknown={"body": [True]}, body=None, others=[], state_shape=False)
def test_a_terraform_registry_with_any_attribute_values_is_evaluated(kind, after, unknown, body, others, state_shape):
    """An azurerm_container_registry or azapi registries resource is always read, whatever its attribute values
    and the plan's unknown marks: odd values take defaults or leave rules unknown; nothing crashes."""
    if kind == "azapi_resource":
        after = {**after, "type": "Microsoft.ContainerRegistry/registries@2025-04-01", "body": body}
    resource = {"address": f"{kind}.fuzz", "mode": "managed", "type": kind}
    if state_shape:
        document = {"format_version": "1.0", "values": {"root_module": {"resources": [{**resource, "values": after}]}}}
    else:
        document = {"format_version": "1.2", "resource_changes": [
            {**resource, "change": {"actions": ["create"], "after": after, "after_unknown": unknown}}, *others]}
    found = check(document)
    if found is not None:
        assert found[0].id == f"{kind}.fuzz"
    else:      # only an azapi body that is no object (nor JSON text of one) refuses it; a null body whose unknown
        # marks have a list's shape is a list known after apply, as Terraform writes it, so no object either
        list_marks = not state_shape and isinstance(unknown, dict) and _marks_a_list(unknown.get("body"))
        assert kind == "azapi_resource" and not isinstance(body, dict) and (body is not None or list_marks)


def _marks_a_list(marks):
    """Whether Terraform's unknown marks make a value a list with something known after apply."""
    def any_true(value):
        return value is True or (isinstance(value, (list, dict))
                                 and any(any_true(v) for v in (value.values() if isinstance(value, dict) else value)))
    return isinstance(marks, list) and any_true(marks)
