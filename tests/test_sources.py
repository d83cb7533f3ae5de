"""Every JSON shape a registry arrives in normalises to the same snapshot (dlp.inputs.sources).

SHAPES wraps one registry (SKU + REST `properties`) in each shape users hold; test_rules.py
runs every rule through every one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlp.domain import model
from dlp.domain.model import PrivateEndpoint, Registry
from dlp.domain.rules import evaluate
from dlp.inputs.documents import load_json, registries_from_document, registries_from_file
from dlp.inputs.sources import InputError, ci_get, registry_from_resource

SUB = "6c1f2f46-7f3e-4c3a-9a55-3b1f0e2d9c41"
TEMPLATE_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"


def arm_id(name: str = "contosoacr", rg: str = "rg-acr", segment: str = "resourceGroups") -> str:
    return f"/subscriptions/{SUB}/{segment}/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"


# --- the shapes --------------------------------------------------------------------------------

def arm_get(sku: str, props: dict[str, Any], name: str = "contosoacr") -> dict[str, Any]:
    """ARM REST GET / `az resource show`: properties nested."""
    return {"id": arm_id(name), "name": name, "type": "Microsoft.ContainerRegistry/registries",
            "location": "westeurope", "sku": {"name": sku, "tier": sku}, "tags": {"env": "test"},
            "identity": None, "kind": None, "managedBy": None, "plan": None, "properties": props}


def flattened(sku: str, props: dict[str, Any], name: str = "contosoacr") -> dict[str, Any]:
    """`az acr show` / `az acr list` element: properties at the top level."""
    return {**props, "id": arm_id(name), "name": name, "type": "Microsoft.ContainerRegistry/registries",
            "location": "westeurope", "resourceGroup": "rg-acr", "sku": {"name": sku, "tier": sku}, "tags": {}}


def graph_row(sku: str, props: dict[str, Any], name: str = "contosoacr") -> dict[str, Any]:
    """A Resource Graph row: lower-case type, `resourcegroups` in the ID as ARG often returns it."""
    return {"id": arm_id(name, segment="resourcegroups"), "name": name, "type": "microsoft.containerregistry/registries",
            "location": "westeurope", "resourceGroup": "rg-acr", "subscriptionId": SUB,
            "sku": {"name": sku, "tier": sku}, "tags": {}, "properties": props}


def template_resource(sku: str, props: dict[str, Any], name: str = "contosoacr") -> dict[str, Any]:
    return {"type": "Microsoft.ContainerRegistry/registries", "apiVersion": "2023-07-01", "name": name,
            "location": "[resourceGroup().location]", "sku": {"name": sku}, "properties": props}


SHAPES: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    "arm-get": arm_get,
    "az-acr-show": flattened,
    "az-acr-list": lambda sku, props: [flattened(sku, props)],
    "arm-list": lambda sku, props: {"value": [arm_get(sku, props)], "nextLink": None},
    "graph-rest": lambda sku, props: {"totalRecords": 1, "count": 1, "data": [graph_row(sku, props)],
                                      "facets": [], "resultTruncated": "false"},
    "az-graph-query": lambda sku, props: {"count": 1, "data": [graph_row(sku, props)], "skip_token": None,
                                          "total_records": 1},
    "graph-table": lambda sku, props: {"totalRecords": 1, "count": 1, "data": {
        "columns": [{"name": "id", "type": "string"}, {"name": "name", "type": "string"},
                    {"name": "type", "type": "string"}, {"name": "sku", "type": "object"},
                    {"name": "properties", "type": "object"}],
        "rows": [[arm_id(), "contosoacr", "microsoft.containerregistry/registries", {"name": sku}, props]]}},
    "bare-rows": lambda sku, props: [graph_row(sku, props)],
    "template-array": lambda sku, props: {"$schema": TEMPLATE_SCHEMA, "contentVersion": "1.0.0.0",
                                          "resources": [template_resource(sku, props)]},
    "template-symbolic": lambda sku, props: {"$schema": TEMPLATE_SCHEMA, "languageVersion": "2.0",
                                             "contentVersion": "1.0.0.0",
                                             "resources": {"registry": template_resource(sku, props)}},
}
TEMPLATE_SHAPES = ("template-array", "template-symbolic")


def only(document: Any, source: str = "input.json") -> Registry:
    registries = registries_from_document(document, source)
    assert len(registries) == 1
    return registries[0]


LOCKED = {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}},
          "networkRuleSet": {"defaultAction": "Deny"}, "networkRuleBypassOptions": "None",
          "networkRuleBypassAllowedForTasks": False, "adminUserEnabled": False, "anonymousPullEnabled": False,
          "dataEndpointEnabled": True,
          "privateEndpointConnections": [{"name": "pe1", "properties": {
              "privateLinkServiceConnectionState": {"status": "Approved"}}}]}


# --- every shape gives the same snapshot -------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_reads_every_property(shape):
    registry = only(SHAPES[shape]("Premium", json.loads(json.dumps(LOCKED))))
    assert registry.name == "contosoacr"
    assert registry.sku == "Premium"
    assert registry.export_policy == "disabled"
    assert registry.public_network_access == "Disabled"
    assert registry.network_default_action == "Deny"
    assert registry.network_bypass_options == "None"
    assert registry.tasks_bypass is False
    assert registry.admin_user_enabled is False
    assert registry.anonymous_pull_enabled is False
    assert registry.data_endpoint_enabled is True
    if shape in TEMPLATE_SHAPES:
        # read-only in a template: ARM ignores a declared connection, so it proves nothing (unknown, not a pass)
        assert registry.private_endpoints == ()
        assert registry.unresolved == frozenset({model.P_PRIVATE_ENDPOINTS})
    else:
        assert registry.private_endpoints == (PrivateEndpoint("pe1", "Approved"),)
        assert registry.unresolved == frozenset()
    assert registry.source == "input.json"
    if shape in TEMPLATE_SHAPES:
        assert registry.id == "Microsoft.ContainerRegistry/registries/contosoacr"   # name-based: no ARM ID offline
        assert not registry.is_arm_id
    else:
        assert registry.is_arm_id
        assert registry.subscription_id == SUB
        assert registry.resource_group == "rg-acr"


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_applies_azure_defaults_to_absent_properties(shape):
    registry = only(SHAPES[shape]("Premium", {}))
    assert registry.export_policy == model.EXPORT_ENABLED
    assert registry.public_network_access == model.ENABLED
    assert registry.network_default_action == model.ALLOW
    assert registry.network_bypass_options == model.AZURE_SERVICES
    assert registry.tasks_bypass is False
    assert registry.admin_user_enabled is False
    assert registry.anonymous_pull_enabled is False
    assert registry.data_endpoint_enabled is False
    assert registry.private_endpoints == ()
    assert registry.export_pipelines is None
    # a template that declares no private endpoint: unknown, not a false failure
    assert registry.unresolved == (frozenset({model.P_PRIVATE_ENDPOINTS}) if shape in TEMPLATE_SHAPES else frozenset())


def test_null_properties_take_defaults_too():
    registry = only(flattened("Premium", {"networkRuleSet": None, "policies": None, "publicNetworkAccess": None,
                                          "privateEndpointConnections": None, "adminUserEnabled": None}))
    assert (registry.network_default_action, registry.export_policy, registry.public_network_access) == (
        "Allow", "enabled", "Enabled")
    assert registry.private_endpoints == ()
    assert registry.admin_user_enabled is False
    assert registry.unresolved == frozenset()


def test_list_shapes_keep_every_registry_in_order_and_skip_other_resources():
    storage = {"id": "/subscriptions/x/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/s",
               "type": "Microsoft.Storage/storageAccounts", "name": "s"}
    rows = [graph_row("Premium", {}, "first"), storage, graph_row("Basic", {}, "second"), None, 7]
    assert [r.name for r in registries_from_document({"data": rows}, "g.json")] == ["first", "second"]
    assert [r.name for r in registries_from_document(rows, "g.json")] == ["first", "second"]
    assert [r.sku for r in registries_from_document({"value": rows}, "g.json")] == ["Premium", "Basic"]


# --- case variants -------------------------------------------------------------------------------

def test_key_and_value_casing_is_ignored():
    document = {"ID": arm_id("mixedacr", segment="resourcegroups").upper(),
                "Name": "mixedacr", "TYPE": "MICROSOFT.CONTAINERREGISTRY/REGISTRIES",
                "SKU": {"NAME": "premium"},
                "Properties": {"PUBLICNETWORKACCESS": "disabled",
                               "Policies": {"ExportPolicy": {"Status": "DISABLED"}},
                               "NetworkRuleSet": {"DefaultAction": "deny"},
                               "networkrulebypassoptions": "none",
                               "AdminUserEnabled": "False",
                               "DataEndpointEnabled": "TRUE",
                               "PrivateEndpointConnections": [{"Name": "pe", "Properties": {
                                   "PrivateLinkServiceConnectionState": {"Status": "approved"}}}]}}
    registry = only(document)
    # canonical spellings, whatever the input casing
    assert (registry.sku, registry.public_network_access, registry.export_policy) == ("Premium", "Disabled", "disabled")
    assert (registry.network_default_action, registry.network_bypass_options) == ("Deny", "None")
    assert registry.admin_user_enabled is False and registry.data_endpoint_enabled is True
    assert registry.approved_private_endpoints
    assert registry.is_arm_id and registry.resource_group == "RG-ACR"
    assert evaluate(registry).compliant


def _recase(value: Any, flips: Any) -> Any:
    """The same document with keys and string values in casing drawn by hypothesis."""
    if isinstance(value, dict):
        return {(k.upper() if flips.draw(st.booleans()) else k.lower()): _recase(v, flips) for k, v in value.items()}
    if isinstance(value, list):
        return [_recase(v, flips) for v in value]
    if isinstance(value, str) and not value.startswith("["):
        return value.upper() if flips.draw(st.booleans()) else value.lower()
    return value


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from(sorted(SHAPES)), sku=st.sampled_from(model.SKUS), locked=st.booleans(), flips=st.data())
def test_casing_never_changes_a_verdict(shape, sku, locked, flips):
    props = json.loads(json.dumps(LOCKED)) if locked else {"publicNetworkAccess": "Enabled", "adminUserEnabled": True}
    document = SHAPES[shape](sku, props)
    expected = [(f.rule_id, f.status) for f in evaluate(only(document)).findings]
    recased = [(f.rule_id, f.status) for f in evaluate(only(_recase(document, flips))).findings]
    assert recased == expected


# --- SDK models: normalise from the REST JSON, never compare enum objects ----------------------

def test_sdk_model_as_dict_is_rest_json_and_normalises():
    from azure.mgmt.containerregistry import models as sdk

    built = sdk.Registry(location="westeurope", sku=sdk.Sku(name=sdk.SkuName.PREMIUM),
                         public_network_access=sdk.PublicNetworkAccess.ENABLED,
                         network_rule_set=sdk.NetworkRuleSet(default_action=sdk.DefaultAction.DENY),
                         policies=sdk.Policies(export_policy=sdk.ExportPolicy(status=sdk.ExportPolicyStatus.DISABLED)))
    body = built.as_dict()
    # azure-mgmt-containerregistry 15.x models are REST-shaped: camelCase keys, nested `properties`
    assert body["properties"]["publicNetworkAccess"] == "Enabled"
    registry = registry_from_resource(json.loads(json.dumps(body)), "sdk")
    assert (registry.sku, registry.public_network_access, registry.export_policy, registry.network_default_action) == (
        "Premium", "Enabled", "disabled", "Deny")
    # the model itself (a Mapping whose values are str enums) normalises the same way
    assert registry_from_resource(built, "sdk") == registry


def test_sdk_enum_attributes_are_the_trap_the_raw_json_avoids():
    from azure.mgmt.containerregistry import models as sdk

    response = {"id": arm_id(), "name": "contosoacr", "type": "Microsoft.ContainerRegistry/registries",
                "sku": {"name": "premium"},
                "properties": {"publicNetworkAccess": "disabled", "policies": {"exportPolicy": {"status": "Disabled"}}}}
    deserialized = sdk.Registry(response)
    # what a naive adapter would do: compare the attribute with the enum, and get it wrong
    assert deserialized.public_network_access != sdk.PublicNetworkAccess.DISABLED
    assert deserialized.policies.export_policy.status != sdk.ExportPolicyStatus.DISABLED
    registry = only(deserialized.as_dict())
    assert (registry.public_disabled, registry.exports_disabled, registry.premium) == (True, True, True)


# --- wrong types never pass silently -----------------------------------------------------------

@pytest.mark.parametrize(("props", "prop"), [
    ({"publicNetworkAccess": 0}, model.P_PUBLIC),
    ({"policies": {"exportPolicy": {"status": ["disabled"]}}}, model.P_EXPORT),
    ({"adminUserEnabled": "sometimes"}, model.P_ADMIN),
    ({"anonymousPullEnabled": 1}, model.P_ANONYMOUS),
    ({"privateEndpointConnections": {"pe": "Approved"}}, model.P_PRIVATE_ENDPOINTS),
])
def test_a_value_of_the_wrong_type_is_unresolved(props, prop):
    registry = only(arm_get("Premium", props))
    assert prop in registry.unresolved


def test_unreadable_sku_is_unresolved_not_a_default():
    registry = only({"type": "Microsoft.ContainerRegistry/registries", "name": "nosku", "properties": {}})
    assert model.P_SKU in registry.unresolved
    assert registry.sku == "Unknown"


def test_connection_without_status_is_not_approved():
    registry = only(arm_get("Premium", {"privateEndpointConnections": [{"name": "pe", "properties": {}}]}))
    assert registry.private_endpoints == (PrivateEndpoint("pe", "Unknown"),)
    assert not registry.approved_private_endpoints


def test_ci_get_is_case_insensitive_and_tolerates_non_objects():
    assert ci_get({"A": {"b": 1}}, "a", "B") == 1
    assert ci_get({"a": [1]}, "a", "b") is None
    assert ci_get(None, "a") is None
    assert ci_get({1: "x", "a": 2}, "A") == 2


# --- malformed input: the documented InputError, never a traceback ----------------------------

NOT_A_SHAPE = ("not a container registry: expected a resource with type Microsoft.ContainerRegistry/registries, "
               "an array of them, a Resource Graph result ({\"data\": [...]}), an ARM template (resources) or "
               "`terraform show -json` output")
NOT_AN_OBJECT = ("expected a JSON object or array (a registry, an az acr list array, a Resource Graph result, "
                 "an ARM template or `terraform show -json` output)")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file; expected JSON"),
    (b"  \n\t\n", "empty file; expected JSON"),
    (b"{not json", "not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    (b'{"id": "x",\n}', r"not JSON: .+ at line \d+ column \d+"),     # wording and position vary across Python versions
    (b"\xff\xfe{\x00}\x00", r"not UTF-8 text \(it is UTF-16\); re-encode it as UTF-8: iconv -f UTF-16 -t UTF-8 .+"),
    ('{"a": 1}'.encode("utf-16-le"), r"not UTF-8 text \(it is UTF-16\); re-encode it as UTF-8: .+"),   # no BOM
    ('{"a": 1}'.encode("utf-32"), r"not UTF-8 text \(it is UTF-32\); re-encode it as UTF-8: iconv -f UTF-32 .+"),
    (b"caf\xe9 latin-1", r"not UTF-8 text \(invalid continuation byte\); re-encode it as UTF-8: iconv -f <encoding> .+"),
    (b'{"a": "x', "not JSON: Unterminated string starting at line 1 column 7"),         # not "at at line"
    (b"# registry\nname: acr1\nsku:\n  name: Premium\n",
     r"not JSON, and it looks like YAML \(.+ at line \d+ column \d+\): convert it first, e\.g\. yq -o json FILE > FILE\.json"),
    (b"---\n- name: acr1\n", r"not JSON, and it looks like YAML .+"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    (b"42", NOT_AN_OBJECT),
    (b'"registry"', NOT_AN_OBJECT),
    (b"null", NOT_AN_OBJECT),
    (b"true", NOT_AN_OBJECT),
    (b"[]", "the array holds no Microsoft.ContainerRegistry/registries resource"),
    (b'[{"type": "Microsoft.Storage/storageAccounts"}]', "the array holds no Microsoft.ContainerRegistry/registries resource"),
    (b"{}", NOT_A_SHAPE),
    (b'{"name": "contosoacr", "sku": {"name": "Premium"}}', NOT_A_SHAPE),
    (b'{"data": []}', "the Resource Graph result holds no Microsoft.ContainerRegistry/registries resource"),
    (b'{"value": []}', "the ARM list response holds no Microsoft.ContainerRegistry/registries resource"),
    (b'{"$schema": "' + TEMPLATE_SCHEMA.encode() + b'", "resources": []}',
     "the ARM template declares no Microsoft.ContainerRegistry/registries resource"),
])
def test_malformed_input_gives_the_documented_error(tmp_path, content, message):
    path = tmp_path / "input.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as raised:
        registries_from_file(path)
    assert str(raised.value).startswith(f"{path}: ")
    text = str(raised.value)[len(f"{path}: "):]
    assert text == message or re.fullmatch(message, text)
    assert raised.value.source == str(path)
    assert "\n" not in str(raised.value)


def test_deep_nesting_that_json_accepts_is_still_an_input_error(tmp_path):
    """How deep json.loads and the walk over the values go differs between Pythons (3.12 moved C recursion off
    the Python limit: on 3.13 json accepts 5,000 levels, the walk gives up earlier; on 3.11 json stops near 1,000).
    Whatever the version: some depth json accepts is too deep for the walk, and that is one InputError, never a
    RecursionError; every depth is either read or that error."""
    prefix = json.dumps({"$schema": TEMPLATE_SCHEMA, "resources": [template_resource("Premium", {"extra": {}})]})
    inner = '"extra": {}'
    assert inner in prefix
    walk_refused_what_json_accepted = False
    for depth in (900, 1500, 2000, 3000, 5000):
        text = prefix.replace(inner, '"extra": ' + '{"x": ' * depth + "{}" + "}" * depth)
        path = tmp_path / f"deep-{depth}.json"
        path.write_text(text)
        try:
            json.loads(text)
            json_accepts = True
        except RecursionError:
            json_accepts = False
        try:
            registries_from_file(path)
        except InputError as exc:
            assert "JSON nested too deeply" in str(exc)
            walk_refused_what_json_accepted |= json_accepts
    assert walk_refused_what_json_accepted


def test_missing_file_and_directory_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"missing\.json: No such file or directory"):
        load_json(tmp_path / "missing.json")
    with pytest.raises(InputError, match="Is a directory"):
        load_json(tmp_path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(arm_get("Premium", LOCKED)).encode())
    assert evaluate(registries_from_file(path)[0]).compliant


def test_examples_cover_every_shape_and_load():
    examples = Path(__file__).resolve().parent.parent / "examples"
    loaded = {path.name: registries_from_file(path) for path in examples.glob("*.json")}
    assert len(loaded) >= 8
    assert sum(len(regs) for regs in loaded.values()) >= 11


@pytest.mark.parametrize("shape", TEMPLATE_SHAPES)
def test_a_template_cannot_fake_a_private_endpoint_with_a_read_only_property(shape):
    """A developer who writes `privateEndpointConnections: [{... Approved}]` into a registry's template properties
    gets no private endpoint from ARM (read-only), so the gate must not pass DLP.ACR.PrivateEndpoint on it."""
    from dlp.domain.rules import evaluate

    props = json.loads(json.dumps(LOCKED))
    props["PrivateEndpointConnections"] = props.pop("privateEndpointConnections")     # any casing
    registry = only(SHAPES[shape]("Premium", props))
    assert registry.private_endpoints == ()
    assert evaluate(registry).finding("DLP.ACR.PrivateEndpoint").status != "pass"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_look_alike_property_name_is_not_the_property(shape):
    """ARM matches property names ignoring A-Z case only: a Kelvin-sign key is an unknown property it ignores,
    so it must not make an open registry read as closed."""
    props = {"publicNetwor\u212aAccess": "Disabled", "policies": {"exportPolicy": {"\u017ftatus": "disabled"}}}
    registry = only(SHAPES[shape]("Premium", props))
    assert registry.public_network_access == model.ENABLED          # Azure's default for the absent property
    assert registry.export_policy == model.EXPORT_ENABLED
