"""`terraform show -json` plans and state (dlp.inputs.terraform): provider defaults, unknown values, destroyed
resources, modules at any depth, azapi bodies, private endpoints and export pipelines matched to registries."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dlp.domain import model
from dlp.domain.model import FAIL, NOT_APPLICABLE, PASS, UNKNOWN, PrivateEndpoint, Registry
from dlp.domain.rules import evaluate
from dlp.inputs.documents import registries_from_document, registries_from_file
from dlp.inputs.sources import InputError, NoRegistry
from dlp.inputs.terraform import is_address, is_terraform

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "terraform"
SUB = "/subscriptions/6c1f2f46-5a7e-4a2b-9d3e-1f0c8b7a9e21"
AZAPI_REGISTRY = "Microsoft.ContainerRegistry/registries@2025-04-01"
AZAPI_PIPELINE = "Microsoft.ContainerRegistry/registries/exportPipelines@2025-04-01"

LOCKED = {"sku": "Premium", "export_policy_enabled": False, "public_network_access_enabled": False,
          "network_rule_bypass_option": "None", "data_endpoint_enabled": True, "admin_enabled": False,
          "anonymous_pull_enabled": False, "network_rule_bypass_for_tasks_enabled": False,
          "network_rule_set": [{"default_action": "Deny", "ip_rule": []}]}
LOCKED_BODY = {"sku": {"name": "Premium"}, "properties": {
    "publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}},
    "networkRuleSet": {"defaultAction": "Deny"}, "networkRuleBypassOptions": "None", "dataEndpointEnabled": True}}


def registry_id(name: str, group: str = "rg-acr") -> str:
    return f"{SUB}/resourceGroups/{group}/providers/Microsoft.ContainerRegistry/registries/{name}"


def azurerm(name: str = "contosoacr", group: str = "rg-acr", **values: Any) -> dict[str, Any]:
    return {"name": name, "resource_group_name": group, "location": "westeurope", **values}


def azapi(name: str, kind: str = AZAPI_REGISTRY, body: Any = None, parent: Any = f"{SUB}/resourceGroups/rg-acr",
          **values: Any) -> dict[str, Any]:
    found = {"type": kind, "name": name, "location": "westeurope", "body": body if body is not None else {}, **values}
    if parent is not None:
        found["parent_id"] = parent
    return found


def change(address: str, kind: str, after: Any, unknown: Any = None, actions: tuple[str, ...] = ("create",),
           before: Any = None, mode: str = "managed") -> dict[str, Any]:
    return {"address": address, "mode": mode, "type": kind, "name": address.rsplit(".", 1)[-1].split("[", maxsplit=1)[0],
            "change": {"actions": list(actions), "before": before, "after": after,
                       "after_unknown": unknown if unknown is not None else ({"id": True} if after else False)}}


def plan(*changes: dict[str, Any], configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"format_version": "1.2", "terraform_version": "1.14.0", "planned_values": {"root_module": {}},
            "resource_changes": list(changes), **({"configuration": configuration} if configuration else {})}


def state(root: dict[str, Any]) -> dict[str, Any]:
    return {"format_version": "1.0", "terraform_version": "1.14.0", "values": {"root_module": root}}


def resource(address: str, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"address": address, "mode": "managed", "type": kind, "name": address.rsplit(".", 1)[-1],
            "provider_name": "registry.terraform.io/hashicorp/azurerm", "schema_version": 0, "values": values,
            "sensitive_values": {}}


def statuses(found: Registry) -> dict[str, str]:
    return {f.rule_id.rsplit(".", 1)[-1]: f.status for f in evaluate(found).findings}


def only(document: dict[str, Any]) -> Registry:
    found = registries_from_document(document, "plan.json")
    assert len(found) == 1
    return found[0]


# --- azurerm_container_registry -----------------------------------------------------------------

def test_azurerm_attributes_map_to_the_snapshot():
    found = only(plan(change("azurerm_container_registry.this", "azurerm_container_registry", azurerm(**LOCKED))))
    assert (found.id, found.name, found.sku, found.source) == (
        "azurerm_container_registry.this", "contosoacr", "Premium", "plan.json")
    assert (found.export_policy, found.public_network_access, found.network_default_action,
            found.network_bypass_options) == ("disabled", "Disabled", "Deny", "None")
    assert (found.admin_user_enabled, found.anonymous_pull_enabled, found.data_endpoint_enabled,
            found.tasks_bypass) == (False, False, True, False)
    assert found.unresolved == frozenset({model.P_PRIVATE_ENDPOINTS})      # none declared: unknown, as in templates
    assert found.export_pipelines is None


def test_azurerm_provider_defaults_apply_when_attributes_are_absent_or_null():
    """azurerm 5.x schema: public_network_access_enabled and export_policy_enabled default true,
    network_rule_bypass_option AzureServices, default_action Allow, admin and tasks bypass false;
    anonymous_pull_enabled and data_endpoint_enabled have no default (null: Azure's false)."""
    for values in ({"sku": "Premium"}, {"sku": "Premium", "public_network_access_enabled": None,
                                        "export_policy_enabled": None, "network_rule_set": [],
                                        "anonymous_pull_enabled": None, "data_endpoint_enabled": None,
                                        "network_rule_bypass_option": None}):
        found = only(state({"resources": [resource("azurerm_container_registry.x", "azurerm_container_registry",
                                                    azurerm(**values))]}))
        assert (found.export_policy, found.public_network_access, found.network_default_action,
                found.network_bypass_options) == ("enabled", "Enabled", "Allow", "AzureServices")
        assert not (found.admin_user_enabled or found.anonymous_pull_enabled or found.data_endpoint_enabled
                    or found.tasks_bypass)
        assert model.P_PUBLIC not in found.unresolved and model.P_EXPORT not in found.unresolved


def test_a_value_of_the_wrong_type_is_never_a_silent_pass():
    found = only(plan(change("azurerm_container_registry.x", "azurerm_container_registry",
                             azurerm(**{**LOCKED, "public_network_access_enabled": "nope"}))))
    assert model.P_PUBLIC in found.unresolved
    assert statuses(found)["PublicNetworkAccess"] == UNKNOWN


# --- plans: unknown values, destroyed and replaced resources -------------------------------------

def test_values_known_after_apply_make_the_rules_reading_them_unknown():
    after = azurerm(**{k: v for k, v in LOCKED.items() if k not in ("public_network_access_enabled", "network_rule_set")})
    found = only(plan(change("azurerm_container_registry.x", "azurerm_container_registry", after,
                             {"id": True, "public_network_access_enabled": True, "network_rule_set": True})))
    assert {model.P_PUBLIC, model.P_DEFAULT_ACTION} <= found.unresolved
    got = statuses(found)
    assert got["PublicNetworkAccess"] == UNKNOWN and got["Firewall"] == UNKNOWN
    assert got["ExportPolicy"] == UNKNOWN                 # exports disabled: nothing known fails
    assert got["AdminUser"] == PASS and got["TrustedServices"] == PASS


def test_fail_dominates_a_value_known_after_apply():
    """A new registry without a network_rule_set block: the block is Optional+Computed, so the plan does not
    know default_action; public access stays on (the default) and fails whatever the firewall will be."""
    found = only(plan(change("azurerm_container_registry.x", "azurerm_container_registry",
                             azurerm(sku="Premium"), {"id": True, "network_rule_set": True})))
    got = statuses(found)
    assert got["Firewall"] == UNKNOWN
    assert got["ExportPolicy"] == FAIL and got["PublicNetworkAccess"] == FAIL


def test_a_nested_unknown_inside_a_block_is_unresolved_too():
    after = azurerm(**{**LOCKED, "network_rule_set": [{"ip_rule": []}]})
    found = only(plan(change("azurerm_container_registry.x", "azurerm_container_registry", after,
                             {"network_rule_set": [{"default_action": True}]})))
    assert model.P_DEFAULT_ACTION in found.unresolved
    assert statuses(found)["Firewall"] == PASS              # public access is off: the firewall does not matter


def test_destroyed_registries_are_not_evaluated_and_replaced_ones_are():
    before = azurerm("oldacr", **LOCKED)
    document = plan(
        change("azurerm_container_registry.old", "azurerm_container_registry", None, False, ("delete",), before),
        change("azurerm_container_registry.swap", "azurerm_container_registry", azurerm("swapacr", sku="Standard"),
               {"id": True}, ("delete", "create"), before),
        change("data.azurerm_container_registry.shared", "azurerm_container_registry", azurerm("sharedacr"),
               {}, ("read",), mode="data"))
    found = registries_from_document(document, "plan.json")
    assert [r.id for r in found] == ["azurerm_container_registry.swap"]
    assert found[0].sku == "Standard"


def test_a_plan_that_only_destroys_registries_holds_none():
    document = plan(change("azurerm_container_registry.old", "azurerm_container_registry", None, False, ("delete",),
                           azurerm("oldacr", sku="Basic")))
    with pytest.raises(NoRegistry, match=r"holds no azurerm_container_registry .*\(1 resource\(s\) destroyed"):
        registries_from_document(document, "plan.json")


def test_unknown_format_major_version_is_refused():
    document = {**plan(), "format_version": "2.0"}
    with pytest.raises(InputError, match=r"format_version 2\.0 is not supported"):
        registries_from_document(document, "plan.json")


def test_count_and_for_each_addresses_are_the_registry_ids():
    document = plan(*(change(f'module.acr[0].azurerm_container_registry.this["{key}"]', "azurerm_container_registry",
                             azurerm(f"{key}acr", **LOCKED)) for key in ("a", "b")))
    assert [r.id for r in registries_from_document(document, "plan.json")] == [
        'module.acr[0].azurerm_container_registry.this["a"]', 'module.acr[0].azurerm_container_registry.this["b"]']


# --- state: modules at any depth ----------------------------------------------------------------

def test_state_reads_child_modules_at_any_depth():
    deep = {"address": "module.a.module.b.module.c", "resources": [
        resource("module.a.module.b.module.c.azurerm_container_registry.deep", "azurerm_container_registry",
                 azurerm("deepacr", sku="Basic"))]}
    root = {"resources": [resource("azurerm_container_registry.top", "azurerm_container_registry", azurerm("topacr", **LOCKED))],
            "child_modules": [{"address": "module.a", "child_modules": [
                {"address": "module.a.module.b", "child_modules": [deep]}]}]}
    found = registries_from_document(state(root), "terraform.tfstate.json")
    assert [(r.id, r.name) for r in found] == [("azurerm_container_registry.top", "topacr"),
                                               ("module.a.module.b.module.c.azurerm_container_registry.deep", "deepacr")]


def test_an_empty_state_is_terraform_without_registries():
    document = {"format_version": "1.0", "terraform_version": "1.14.0"}
    assert is_terraform(document)
    with pytest.raises(NoRegistry, match="Terraform state holds no"):
        registries_from_document(document, "state.json")


# --- azapi_resource -----------------------------------------------------------------------------

@pytest.mark.parametrize("encode", [False, True], ids=["body-object (azapi 2.x)", "body-json-string (azapi 1.x)"])
def test_azapi_registry_body_as_object_or_json_string(encode):
    body = json.dumps(LOCKED_BODY) if encode else copy.deepcopy(LOCKED_BODY)
    found = only(state({"resources": [resource("azapi_resource.acr", "azapi_resource", azapi("apiacr", body=body))]}))
    assert (found.id, found.name, found.sku) == ("azapi_resource.acr", "apiacr", "Premium")
    got = statuses(found)
    assert got["ExportPolicy"] == got["PublicNetworkAccess"] == got["Firewall"] == got["TrustedServices"] == PASS
    assert got["ExportPipelines"] == PASS                 # exports disabled
    assert got["PrivateEndpoint"] == UNKNOWN


def test_azapi_types_other_than_registries_are_ignored_and_api_version_casing_does_not_matter():
    document = state({"resources": [
        resource("azapi_resource.sa", "azapi_resource", azapi("sa", kind="Microsoft.Storage/storageAccounts@2023-05-01")),
        resource("azapi_resource.acr", "azapi_resource", azapi("apiacr", kind="microsoft.containerregistry/REGISTRIES@2019-05-01",
                                                               body={"sku": {"name": "Basic"}}))]})
    assert [r.id for r in registries_from_document(document, "s.json")] == ["azapi_resource.acr"]


def test_azapi_body_known_only_after_apply_makes_every_rule_unknown_or_not_failing():
    found = only(plan(change("azapi_resource.acr", "azapi_resource", azapi("apiacr", body=None) | {"body": None},
                             {"id": True, "body": True})))
    assert found.unresolved >= {model.P_SKU, model.P_EXPORT, model.P_PUBLIC, model.P_DEFAULT_ACTION, model.P_BYPASS}
    assert set(statuses(found).values()) == {UNKNOWN}


def test_a_property_inside_an_azapi_body_known_after_apply():
    body = copy.deepcopy(LOCKED_BODY)
    del body["properties"]["publicNetworkAccess"]
    found = only(plan(change("azapi_resource.acr", "azapi_resource", azapi("apiacr", body=body),
                             {"id": True, "body": {"properties": {"publicNetworkAccess": True}}})))
    assert model.P_PUBLIC in found.unresolved
    assert statuses(found)["PublicNetworkAccess"] == UNKNOWN


def test_a_body_that_is_not_json_names_the_address():
    document = state({"resources": [resource("module.x.azapi_resource.acr", "azapi_resource", azapi("a", body="{oops"))]})
    with pytest.raises(InputError, match=r"s.json: module.x.azapi_resource.acr: body is not JSON"):
        registries_from_document(document, "s.json")


# --- private endpoints and export pipelines -------------------------------------------------------

def test_state_private_endpoint_matches_its_registry_by_arm_id_casing_aside():
    def endpoint(name: str, target: str, manual: bool = False) -> dict[str, Any]:
        return {"name": name, "private_service_connection": [{"is_manual_connection": manual, "subresource_names": [
            "registry"], "private_connection_resource_id": target}]}

    endpoint_a = endpoint("pe-a", registry_id("aacr").replace("resourceGroups", "resourcegroups").upper())
    manual = endpoint("pe-b", registry_id("bacr"), manual=True)
    elsewhere = endpoint("pe-c", registry_id("other"))
    root = {"resources": [resource("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
                          resource("azurerm_container_registry.b", "azurerm_container_registry", azurerm("bacr", **LOCKED)),
                          *(resource(f"azurerm_private_endpoint.{n}", "azurerm_private_endpoint", pe)
                            for n, pe in (("a", endpoint_a), ("b", manual), ("c", elsewhere)))]}
    a, b = registries_from_document(state(root), "s.json")
    assert a.private_endpoints == (PrivateEndpoint("pe-a", "Approved"),) and statuses(a)["PrivateEndpoint"] == PASS
    assert b.private_endpoints == (PrivateEndpoint("pe-b", "Pending"),) and statuses(b)["PrivateEndpoint"] == FAIL


def test_plan_private_endpoint_and_pipeline_found_through_configuration_references():
    found = {r.name: r for r in registries_from_file(EXAMPLES / "plan-with-module.json")}
    assert found["contosocoreacr"].private_endpoints == (PrivateEndpoint("pe-contosocoreacr", "Approved"),)
    assert found["contosomirroracr"].export_pipelines == ("to-partner",)
    assert found["contosobuildacr"].export_pipelines is None and found["contosobuildacr"].private_endpoints == ()


def test_a_pipeline_whose_registry_cannot_be_told_keeps_every_registry_unknown():
    """Two registries with exports disabled and a pipeline whose parent_id is known only after apply and has no
    configuration reference: it may belong to either, so neither passes ExportPipelines."""
    document = plan(
        change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
        change("azurerm_container_registry.b", "azurerm_container_registry", azurerm("bacr", **LOCKED)),
        change("azapi_resource.export", "azapi_resource", azapi("p1", kind=AZAPI_PIPELINE, parent=None),
               {"id": True, "parent_id": True}))
    for registry in registries_from_document(document, "plan.json"):
        assert statuses(registry)["ExportPipelines"] == UNKNOWN


def test_a_pipeline_with_a_known_parent_belongs_to_that_registry_only():
    document = plan(
        change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
        change("azurerm_container_registry.b", "azurerm_container_registry", azurerm("bacr", **LOCKED)),
        change("azapi_resource.export", "azapi_resource", azapi("p1", kind=AZAPI_PIPELINE, parent=registry_id("bacr"))))
    a, b = registries_from_document(document, "plan.json")
    assert statuses(a)["ExportPipelines"] == PASS
    assert statuses(b)["ExportPipelines"] == FAIL and b.export_pipelines == ("p1",)


def test_a_single_registry_owns_an_untold_pipeline():
    document = plan(change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
                    change("azapi_resource.export", "azapi_resource", azapi("p1", kind=AZAPI_PIPELINE, parent=None),
                           {"parent_id": True}))
    assert statuses(only(document))["ExportPipelines"] == FAIL


# --- the examples ----------------------------------------------------------------------------------

def test_examples_plan_and_state():
    got = {r.id: statuses(r) for path in sorted(EXAMPLES.glob("*.json")) for r in registries_from_file(path)}
    assert list(got) == ["azurerm_container_registry.build", "module.acr.azurerm_container_registry.this",
                         "module.acr.module.mirror.azapi_resource.registry", "azurerm_container_registry.shared",
                         "module.tools.azapi_resource.registry"]
    assert "azurerm_container_registry.legacy" not in got                   # destroyed by the plan
    assert set(got["module.acr.azurerm_container_registry.this"].values()) == {PASS}
    build = got["azurerm_container_registry.build"]
    assert (build["ExportPolicy"], build["Firewall"]) == (FAIL, UNKNOWN)     # fail dominates; default_action unknown
    assert got["module.acr.module.mirror.azapi_resource.registry"]["ExportPipelines"] == FAIL
    assert got["azurerm_container_registry.shared"]["PrivateEndpoint"] == PASS
    assert got["module.tools.azapi_resource.registry"]["Firewall"] == NOT_APPLICABLE     # Basic


def test_is_address():
    assert is_address("module.acr.azurerm_container_registry.this")
    assert is_address("azapi_resource.acr") and is_address('azurerm_container_registry.x["a"]')
    assert not is_address(registry_id("a")) and not is_address("Microsoft.ContainerRegistry/registries/a")


# --- azapi_update_resource: a patch behind a registry declared locked ------------------------------

def update(address: str, body: Any, **values: Any) -> dict[str, Any]:
    return change(address, "azapi_update_resource", {"type": AZAPI_REGISTRY, "body": body, **values},
                  {"output": True})


def test_an_azapi_update_that_reenables_exports_is_seen():
    """The registry is declared locked in azurerm; a second resource patches exports and public access back on,
    with other casing: the rules see the registry as both writes leave it."""
    document = plan(
        change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
        update("azapi_update_resource.sneaky", {"Properties": {"Policies": {"exportPolicy": {"status": "enabled"}},
                                                               "publicNetworkAccess": "Enabled"}},
               resource_id=registry_id("aacr")))
    got = statuses(only(document))
    assert got["ExportPolicy"] == FAIL and got["PublicNetworkAccess"] == FAIL
    assert got["Firewall"] == PASS and got["TrustedServices"] == PASS          # untouched by the patch


def test_an_azapi_update_found_by_reference_or_by_parent_and_name():
    by_name = plan(change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
                   change("azurerm_container_registry.b", "azurerm_container_registry", azurerm("bacr", **LOCKED)),
                   update("azapi_update_resource.u", {"properties": {"anonymousPullEnabled": True}},
                          parent_id=f"{SUB}/resourceGroups/rg-acr", name="bacr"))
    a, b = registries_from_document(by_name, "plan.json")
    assert (a.anonymous_pull_enabled, b.anonymous_pull_enabled) == (False, True)
    configuration = {"root_module": {"resources": [{"address": "azapi_update_resource.u", "expressions": {
        "resource_id": {"references": ["azurerm_container_registry.a.id", "azurerm_container_registry.a"]}}}]}}
    by_reference = plan(
        change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
        change("azurerm_container_registry.b", "azurerm_container_registry", azurerm("bacr", **LOCKED)),
        change("azapi_update_resource.u", "azapi_update_resource", {"type": AZAPI_REGISTRY, "body": {
            "properties": {"adminUserEnabled": True}}}, {"resource_id": True}), configuration=configuration)
    a, b = registries_from_document(by_reference, "plan.json")
    assert (a.admin_user_enabled, b.admin_user_enabled) == (True, False)


def test_an_azapi_update_whose_registry_cannot_be_told_leaves_what_it_sets_unknown_everywhere():
    document = plan(
        change("azurerm_container_registry.a", "azurerm_container_registry", azurerm("aacr", **LOCKED)),
        change("azurerm_container_registry.b", "azurerm_container_registry", azurerm("bacr", **LOCKED)),
        change("azapi_update_resource.u", "azapi_update_resource", {"type": AZAPI_REGISTRY, "body": {
            "properties": {"publicNetworkAccess": "Enabled"}}}, {"resource_id": True}))
    for registry in registries_from_document(document, "plan.json"):
        assert model.P_PUBLIC in registry.unresolved
        assert statuses(registry)["PublicNetworkAccess"] == UNKNOWN


def test_the_whole_after_object_unknown_leaves_every_attribute_unknown():
    found = only(plan(change("azurerm_container_registry.x", "azurerm_container_registry", azurerm(**LOCKED), True)))
    assert {model.P_SKU, model.P_EXPORT, model.P_PUBLIC} <= found.unresolved


def test_a_plan_without_resource_changes_reads_planned_values():
    document = {"format_version": "1.2", "planned_values": {"root_module": {"child_modules": [{"resources": [
        resource("module.m.azurerm_container_registry.x", "azurerm_container_registry", azurerm(**LOCKED))]}]}}}
    assert only(document).id == "module.m.azurerm_container_registry.x"


def test_a_declared_private_endpoint_connection_is_not_a_private_endpoint():
    """privateEndpointConnections is read-only in the ARM schema (bicep-types-az 2025-04-01): ARM ignores it in a
    PUT or PATCH body, so an azapi body that declares an approved one must not pass DLP.ACR.PrivateEndpoint."""
    body = copy.deepcopy(LOCKED_BODY)
    body["properties"]["PrivateEndpointConnections"] = [
        {"name": "fake", "properties": {"privateLinkServiceConnectionState": {"status": "Approved"}}}]
    found = only(state({"resources": [resource("azapi_resource.acr", "azapi_resource", azapi("apiacr", body=body))]}))
    assert found.private_endpoints == () and statuses(found)["PrivateEndpoint"] == UNKNOWN


def test_a_private_endpoint_to_a_lookalike_resource_group_is_not_this_registrys():
    """ARM folds A-Z only (dlp/ids.py): `rg-\u212a` (KELVIN SIGN) is not `rg-k`, so an endpoint aimed at a registry
    of that name in the look-alike group does not count for this one."""
    endpoint = {"name": "pe-x", "private_service_connection": [{"is_manual_connection": False, "subresource_names": [
        "registry"], "private_connection_resource_id": registry_id("aacr", group="rg-\u212a")}]}
    root = {"resources": [resource("azurerm_container_registry.a", "azurerm_container_registry",
                                   azurerm("aacr", group="rg-k", **LOCKED)),
                          resource("azurerm_private_endpoint.x", "azurerm_private_endpoint", endpoint)]}
    found = only(state(root))
    assert found.private_endpoints == () and statuses(found)["PrivateEndpoint"] == UNKNOWN
    same = {**endpoint, "private_service_connection": [{**endpoint["private_service_connection"][0],
                                                        "private_connection_resource_id": registry_id("AACR", "RG-K")}]}
    root["resources"][1] = resource("azurerm_private_endpoint.x", "azurerm_private_endpoint", same)
    assert statuses(only(state(root)))["PrivateEndpoint"] == PASS
