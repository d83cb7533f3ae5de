"""ARM templates: parameters resolved or `unknown`, child and top-level export pipelines, private endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from dlp.domain import model
from dlp.domain.model import FAIL, PASS, UNKNOWN
from dlp.domain.rules import evaluate
from dlp.inputs.documents import registries_from_document
from dlp.inputs.sources import InputError, Unresolved
from dlp.inputs.templates import is_template, parameters_from_file
from tests.test_sources import TEMPLATE_SCHEMA

REGISTRY = "Microsoft.ContainerRegistry/registries"
PIPELINES = "Microsoft.ContainerRegistry/registries/exportPipelines"


def template(*resources: dict[str, Any], parameters: dict[str, Any] | None = None, symbolic: bool = False,
             **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"$schema": TEMPLATE_SCHEMA, "contentVersion": "1.0.0.0", "parameters": parameters or {}}
    if symbolic:
        body["languageVersion"] = "2.0"
        body["resources"] = {resource.pop("symbol"): resource for resource in resources}
    else:
        body["resources"] = list(resources)
    return {**body, **extra}


def registry(name: Any = "contosoacr", sku: Any = "Premium", **props: Any) -> dict[str, Any]:
    return {"type": REGISTRY, "apiVersion": "2023-07-01", "name": name, "location": "westeurope",
            "sku": {"name": sku}, "properties": props}


def statuses(document: dict[str, Any], supplied: dict[str, Any] | None = None, index: int = 0) -> dict[str, str]:
    found = registries_from_document(document, "main.json", supplied)
    return {f.rule_id.rsplit(".", 1)[-1]: f.status for f in evaluate(found[index]).findings}


def public(value: str) -> dict[str, Any]:
    return {"publicNetworkAccess": value}


# --- parameters --------------------------------------------------------------------------------

PUBLIC_PARAM = {"publicNetworkAccess": {"type": "string", "defaultValue": "Enabled"}}


def test_parameter_resolved_from_its_default_value():
    doc = template(registry(**public("[parameters('publicNetworkAccess')]")), parameters=PUBLIC_PARAM)
    assert statuses(doc)["PublicNetworkAccess"] == FAIL


def test_parameter_resolved_from_a_parameters_file_beats_the_default():
    doc = template(registry(**public("[parameters('publicNetworkAccess')]")), parameters=PUBLIC_PARAM)
    supplied = parameters_from_file({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                                                "deploymentParameters.json#", "contentVersion": "1.0.0.0",
                                     "parameters": {"PublicNetworkAccess": {"value": "Disabled"}}}, "p.json")
    assert supplied == {"publicnetworkaccess": "Disabled"}
    assert statuses(doc, supplied)["PublicNetworkAccess"] == PASS


def test_parameter_names_and_whitespace_in_the_expression_do_not_matter():
    doc = template(registry(**public("[ parameters( 'PUBLICNETWORKACCESS' ) ]")), parameters=PUBLIC_PARAM)
    assert statuses(doc)["PublicNetworkAccess"] == FAIL
    assert statuses(doc, {"publicNetworkAccess": "Disabled"})["PublicNetworkAccess"] == PASS


@pytest.mark.parametrize(("value", "parameters"), [
    ("[parameters('publicNetworkAccess')]", {"publicNetworkAccess": {"type": "string"}}),          # no default
    ("[parameters('undeclared')]", {}),
    ("[parameters('pna')]", {"pna": {"type": "string", "defaultValue": "[variables('x')]"}}),       # default is an expression
    ("[variables('publicNetworkAccess')]", {}),
    ("[reference('acrSettings').publicNetworkAccess]", {}),
    ("[if(equals(resourceGroup().location, 'westeurope'), 'Disabled', 'Enabled')]", {}),     # a placeholder decides
])
def test_unresolvable_expressions_make_only_the_rules_reading_them_unknown(value, parameters):
    doc = template(registry(**public(value), adminUserEnabled=True), parameters=parameters)
    found = statuses(doc)
    assert found["PublicNetworkAccess"] == UNKNOWN
    assert found["ExportPolicy"] == FAIL         # no exportPolicy declared: enabled, fails whatever public access is
    assert found["Firewall"] == UNKNOWN
    assert found["AdminUser"] == FAIL            # unaffected rules still answer
    assert found["PremiumSku"] == PASS


def test_fail_dominates_unknown_in_the_template_the_issue_found():
    """No exportPolicy (Azure's default: enabled) next to an `if(...)` publicNetworkAccess: a known failure."""
    doc = template(registry(**public("[if(parameters('locked'), 'Disabled', 'Enabled')]")),
                   parameters={"locked": {"type": "bool"}})
    finding = next(f for f in evaluate(registries_from_document(doc, "main.json")[0]).findings
                   if f.rule_id == "DLP.ACR.ExportPolicy")
    assert finding.status == FAIL
    assert finding.message.startswith("exportPolicy.status is enabled; must be disabled (whatever publicNetworkAccess")
    locked_exports = template(registry(**public("[parameters('pna')]"), policies={"exportPolicy": {"status": "disabled"}}),
                              parameters={"pna": {"type": "string"}})
    assert statuses(locked_exports)["ExportPolicy"] == UNKNOWN    # nothing known fails


def test_a_supplied_expression_is_not_a_value():
    doc = template(registry(**public("[parameters('publicNetworkAccess')]")), parameters=PUBLIC_PARAM)
    # a parameters file holding an expression: ignored, the default applies
    assert statuses(doc, {"publicNetworkAccess": "[variables('x')]"})["PublicNetworkAccess"] == FAIL


def test_escaped_bracket_is_a_literal_not_an_expression():
    doc = template(registry(**public("[[Disabled]")))
    found = registries_from_document(doc, "main.json")[0]
    assert found.public_network_access == "[Disabled]"          # a literal: a wrong value, so the rule fails
    assert model.P_PUBLIC not in found.unresolved
    assert statuses(doc)["PublicNetworkAccess"] == FAIL


def test_nested_values_and_booleans_resolve_from_parameters():
    doc = template(registry(sku="[parameters('sku')]", adminUserEnabled="[parameters('admin')]",
                            policies={"exportPolicy": {"status": "[parameters('export')]"}},
                            **public("Disabled")),
                   parameters={"sku": {"type": "string", "defaultValue": "Standard"},
                               "admin": {"type": "bool", "defaultValue": False},
                               "export": {"type": "string", "defaultValue": "disabled"}})
    found = statuses(doc)
    assert found["PremiumSku"] == FAIL and found["Firewall"] == "not-applicable"
    assert found["AdminUser"] == PASS
    premium = statuses(doc, {"sku": "Premium", "admin": True})
    assert (premium["PremiumSku"], premium["AdminUser"], premium["ExportPolicy"]) == (PASS, FAIL, PASS)


def test_unresolvable_sku_makes_sku_specific_rules_unknown():
    doc = template(registry(sku="[parameters('sku')]", **public("Enabled")), parameters={"sku": {"type": "string"}})
    found = statuses(doc)
    assert found["PremiumSku"] == UNKNOWN
    assert found["Firewall"] == UNKNOWN and found["TasksBypass"] == UNKNOWN
    assert found["PublicNetworkAccess"] == FAIL and found["ExportPolicy"] == FAIL


def test_registry_named_by_an_unresolvable_expression_gets_a_source_based_id():
    doc = template(registry(name="[format('acr{0}', uniqueString(resourceGroup().id))]"))
    found = registries_from_document(doc, "infra/main.json")[0]
    assert found.id == "infra/main.json#resources/0"          # a deployment-time value names it, but is no ID
    assert found.name == "acr{uniqueString}"
    unknown = template(registry(name="[reference('x').name]"))
    assert registries_from_document(unknown, "infra/main.json")[0].name == "<resources[0]>"
    symbolic = template({**registry(name="[variables('n')]"), "symbol": "acr"}, symbolic=True)
    found = registries_from_document(symbolic, "infra/main.json")[0]
    assert (found.id, found.name) == ("infra/main.json#resources/acr", "<acr>")


def test_registry_id_is_name_based_when_the_name_resolves():
    doc = template(registry(name="[parameters('name')]"), parameters={"name": {"type": "string", "defaultValue": "prodacr"}})
    found = registries_from_document(doc, "main.json")[0]
    assert (found.id, found.name) == ("Microsoft.ContainerRegistry/registries/prodacr", "prodacr")


def test_parameters_file_that_is_not_one_is_rejected():
    with pytest.raises(InputError, match=r"^p\.json: not a parameters file"):
        parameters_from_file({"resources": []}, "p.json")
    with pytest.raises(InputError):
        parameters_from_file([1, 2], "p.json")
    # key vault references (no literal value) cannot be known offline: never guessed, never the default
    values = parameters_from_file({"parameters": {"secret": {"reference": {"keyVault": {}}}, "x": {"value": 1}}}, "p")
    assert values["x"] == 1 and isinstance(values["secret"], Unresolved)


# --- export pipelines --------------------------------------------------------------------------

def test_nested_child_export_pipeline_fails():
    reg = registry()
    reg["resources"] = [{"type": "exportPipelines", "apiVersion": "2023-01-01-preview", "name": "to-partner",
                         "properties": {}}]
    doc = template(reg)
    assert registries_from_document(doc, "main.json")[0].export_pipelines == ("to-partner",)
    assert statuses(doc)["ExportPipelines"] == FAIL


def test_nested_child_with_full_type_and_full_name():
    reg = registry()
    reg["resources"] = [{"type": PIPELINES, "apiVersion": "x", "name": "contosoacr/nightly"}]
    assert registries_from_document(template(reg), "main.json")[0].export_pipelines == ("nightly",)


def test_top_level_pipeline_with_parent_in_a_symbolic_template():
    doc = template({**registry(name="edgeacr"), "symbol": "acr"},
                   {"type": PIPELINES, "apiVersion": "x", "name": "to-partner", "parent": "acr", "symbol": "pipe"},
                   symbolic=True)
    assert registries_from_document(doc, "main.json")[0].export_pipelines == ("to-partner",)
    assert statuses(doc)["ExportPipelines"] == FAIL


def test_top_level_pipelines_go_to_their_registry_by_name():
    doc = template(registry(name="firstacr"), registry(name="secondacr"),
                   {"type": PIPELINES, "apiVersion": "x", "name": "secondacr/backup"})
    first, second = registries_from_document(doc, "main.json")
    assert first.export_pipelines is None
    assert second.export_pipelines == ("backup",)
    assert statuses(doc, index=0)["ExportPipelines"] == UNKNOWN
    assert statuses(doc, index=1)["ExportPipelines"] == FAIL


def test_declared_pipeline_fails_even_with_exports_disabled():
    doc = template(registry(policies={"exportPolicy": {"status": "disabled"}}, **public("Disabled")),
                   {"type": PIPELINES, "apiVersion": "x", "name": "contosoacr/p"})
    found = statuses(doc)
    assert found["ExportPipelines"] == FAIL
    assert found["ExportPolicy"] == PASS


def test_no_pipeline_declared_is_unknown_offline_unless_exports_are_disabled():
    assert statuses(template(registry()))["ExportPipelines"] == UNKNOWN
    assert statuses(template(registry(policies={"exportPolicy": {"status": "disabled"}})))["ExportPipelines"] == PASS


# --- private endpoints declared next to the registry -------------------------------------------

def private_endpoint(kind: str = "privateLinkServiceConnections", target: str = "contosoacr") -> dict[str, Any]:
    return {"type": "Microsoft.Network/privateEndpoints", "apiVersion": "2023-09-01", "name": f"pe-{target}",
            "properties": {kind: [{"name": "registry", "properties": {
                "privateLinkServiceId": f"[resourceId('Microsoft.ContainerRegistry/registries', '{target}')]",
                "groupIds": ["registry"]}}]}}


def test_private_endpoint_in_the_template_is_approved_on_creation():
    assert statuses(template(registry(), private_endpoint()))["PrivateEndpoint"] == PASS


def test_manual_private_endpoint_is_pending():
    assert statuses(template(registry(), private_endpoint("manualPrivateLinkServiceConnections")))["PrivateEndpoint"] == FAIL


def test_private_endpoint_goes_to_the_registry_it_targets():
    doc = template(registry(name="firstacr"), registry(name="secondacr"), private_endpoint(target="secondacr"))
    assert statuses(doc, index=0)["PrivateEndpoint"] == UNKNOWN
    assert statuses(doc, index=1)["PrivateEndpoint"] == PASS


def test_no_private_endpoint_in_the_template_is_unknown():
    assert statuses(template(registry()))["PrivateEndpoint"] == UNKNOWN


# --- what is and is not read -------------------------------------------------------------------

def test_existing_resources_are_not_evaluated():
    doc = template({**registry(name="sharedacr"), "existing": True}, registry(name="newacr"))
    assert [r.name for r in registries_from_document(doc, "main.json")] == ["newacr"]


def test_template_without_registry_is_rejected():
    doc = template({"type": "Microsoft.Storage/storageAccounts", "apiVersion": "x", "name": "s"})
    with pytest.raises(InputError, match=r"declares no Microsoft\.ContainerRegistry/registries resource"):
        registries_from_document(doc, "main.json")


def test_registry_inside_a_nested_deployment_is_evaluated_and_named_by_its_module():
    doc = template({"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "acr-module",
                    "properties": {"mode": "Incremental", "template": template(registry())}})
    found = registries_from_document(doc, "main.json")[0]
    assert (found.id, found.name, found.declared_at) == ("acr-module/contosoacr", "contosoacr",
                                                         "/resources/0/properties/template/resources/0")


def test_a_linked_template_is_named_not_fetched():
    doc = template({"type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "acr-module",
                    "properties": {"mode": "Incremental", "templateLink": {"uri": "https://example.invalid/acr.json"}}})
    with pytest.raises(InputError, match=r"templateLink are not fetched.*acr-module \(https://example\.invalid/acr\.json\)"):
        registries_from_document(doc, "main.json")


@pytest.mark.parametrize(("document", "expected"), [
    ({"$schema": TEMPLATE_SCHEMA, "resources": []}, True),
    ({"contentVersion": "1.0.0.0", "resources": []}, True),
    ({"languageVersion": "2.0", "resources": {}}, True),
    ({"resources": []}, False),
    ({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"}, False),
])
def test_is_template(document, expected):
    assert is_template(document) is expected
