"""Templates read the way ARM deploys them: copy loops, conditions, nested deployments (inner and outer scope,
any depth), languageVersion 2.0 symbolic resources, `existing`; an expression anywhere in a property path is
never absent; the real Azure Verified Module for container registries with its test parameter sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dlp.domain import model
from dlp.domain.model import ARM_PATHS, FAIL, NOT_APPLICABLE, PASS, UNKNOWN
from dlp.domain.rules import CATALOGUE, evaluate
from dlp.inputs.arm.lines import line_of_pointer
from dlp.inputs.documents import read_document, registries_from_document
from dlp.inputs.sources import NoRegistry
from dlp.inputs.templates import parameters_from_file
from tests.test_templates import REGISTRY, public, registry, statuses, template

AVM = Path(__file__).resolve().parent / "data" / "avm-container-registry"
DEPLOYMENTS = "Microsoft.Resources/deployments"


def module(name: str, inner: dict[str, Any], scope: str | None = "inner", parameters: dict[str, Any] | None = None,
           **extra: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {"mode": "Incremental", "template": inner, "parameters": parameters or {}}
    if scope:
        properties["expressionEvaluationOptions"] = {"scope": scope}
    return {"type": DEPLOYMENTS, "apiVersion": "2022-09-01", "name": name, "properties": properties, **extra}


# --- the silent passes and false fails --------------------------------------------------

def test_properties_as_one_expression_are_evaluated_not_absent():
    doc = template(registry(), variables={"props": {"adminUserEnabled": True, "anonymousPullEnabled": True}})
    doc["resources"][0]["properties"] = "[variables('props')]"
    found = statuses(doc)
    assert found["AdminUser"] == FAIL and found["AnonymousPull"] == FAIL     # was: pass (Azure's default applied)


def test_an_export_policy_built_by_if_is_evaluated_like_avm_builds_it():
    export = "[if(equals(parameters('acrSku'), 'Premium'), createObject('status', parameters('exportPolicyStatus')), null())]"
    parameters = {"acrSku": {"type": "string", "defaultValue": "Premium"},
                  "exportPolicyStatus": {"type": "string", "defaultValue": "disabled"}}
    doc = template(registry(sku="[parameters('acrSku')]", policies={"exportPolicy": export}, **public("Disabled")),
                   parameters=parameters)
    assert statuses(doc)["ExportPolicy"] == PASS                            # was: fail (exports read as enabled)
    assert statuses(doc, {"exportPolicyStatus": "enabled"})["ExportPolicy"] == FAIL
    assert statuses(doc, {"acrSku": "Standard"})["PremiumSku"] == FAIL


def test_a_network_rule_set_built_by_if_is_evaluated():
    rule_set = "[if(parameters('restrict'), createObject('defaultAction', 'Deny'), null())]"
    doc = template(registry(networkRuleSet=rule_set, **public("Enabled")),
                   parameters={"restrict": {"type": "bool", "defaultValue": True}})
    assert statuses(doc)["Firewall"] == PASS
    assert statuses(doc, {"restrict": False})["Firewall"] == FAIL
    unknown = template(registry(networkRuleSet=rule_set, **public("Enabled")), parameters={"restrict": {"type": "bool"}})
    assert statuses(unknown)["Firewall"] == UNKNOWN                         # Deny or absent (Allow): either


def test_variables_resolve_and_a_symbolic_template_reads_if():
    doc = template({**registry(**public("[if(parameters('open'), 'Enabled', 'Disabled')]")), "symbol": "acr"},
                   parameters={"open": {"type": "bool", "defaultValue": False}}, symbolic=True)
    assert statuses(doc)["PublicNetworkAccess"] == PASS
    assert statuses(doc, {"open": True})["PublicNetworkAccess"] == FAIL


def test_allowed_values_feed_fail_dominates_unknown():
    only_disabled = {"pna": {"type": "string", "allowedValues": ["Disabled"]}}
    assert statuses(template(registry(**public("[parameters('pna')]")), parameters=only_disabled))[
        "PublicNetworkAccess"] == PASS
    both = {"pna": {"type": "string", "allowedValues": ["Enabled", "Disabled"]}}
    assert statuses(template(registry(**public("[parameters('pna')]")), parameters=both))["PublicNetworkAccess"] == UNKNOWN
    admin = {"admin": {"type": "bool", "allowedValues": [True]}}
    assert statuses(template(registry(adminUserEnabled="[parameters('admin')]"), parameters=admin))["AdminUser"] == FAIL


# --- 4. an expression anywhere in a property path is never absent --------------------------------

PASSING = {model.P_PUBLIC: "Disabled", model.P_EXPORT: "disabled", model.P_DEFAULT_ACTION: "Deny",
           model.P_BYPASS: "None", model.P_TASKS_BYPASS: False, model.P_ADMIN: False, model.P_ANONYMOUS: False,
           model.P_DATA_ENDPOINT: True, model.P_SKU: "Premium"}
FAILING = {model.P_PUBLIC: "Enabled", model.P_EXPORT: "enabled", model.P_DEFAULT_ACTION: "Allow",
           model.P_BYPASS: "AzureServices", model.P_TASKS_BYPASS: True, model.P_ADMIN: True, model.P_ANONYMOUS: True,
           model.P_DATA_ENDPOINT: False, model.P_SKU: "Basic"}


def _path(prop: str) -> tuple[str, ...]:
    return ("sku", "name") if prop == model.P_SKU else ("properties", *ARM_PATHS[prop].split("."))


def _registry_with(values: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {"type": REGISTRY, "apiVersion": "2023-07-01", "name": "acr", "location": "westeurope"}
    for prop, value in values.items():
        node = resource
        *parents, leaf = _path(prop)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return resource


def _set(resource: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(resource))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


CASES = [(rule, prop, depth) for rule in CATALOGUE.values() for prop in rule.reads if prop in FAILING
         for depth in range(1, len(_path(prop)) + 1)]


@pytest.mark.parametrize(("rule", "prop", "depth"), CASES,
                         ids=[f"{r.id}-{'.'.join(_path(p)[:d])}" for r, p, d in CASES])
def test_no_rule_passes_because_a_parent_object_was_an_expression(rule, prop, depth):
    """The rule does not pass through `prop` (it fails, or cannot tell); the step `depth` of its path becomes an
    expression: unknowable (reference), the rule must not pass; computable (a variable holding the same object),
    it must answer exactly what the literal template answers."""
    values = dict(PASSING, **{prop: FAILING[prop]})
    if rule.evaluate(registries_from_document(template(_registry_with(values)), "t.json")[0]).status == PASS:
        values = dict(PASSING, **{p: FAILING[p] for p in rule.reads if p in FAILING})
    literal = _registry_with(values)
    expected = rule.evaluate(registries_from_document(template(literal), "t.json")[0]).status
    assert expected in (FAIL, UNKNOWN)
    prefix = _path(prop)[:depth]
    subtree = literal
    for key in prefix:
        subtree = subtree[key]
    unknowable = template(_set(literal, prefix, "[reference('elsewhere').settings]"))
    found = registries_from_document(unknowable, "t.json")[0]
    assert prop in found.unresolved
    assert rule.evaluate(found).status in (UNKNOWN, FAIL)
    computed = template(_set(literal, prefix, "[variables('same')]"), variables={"same": subtree})
    assert rule.evaluate(registries_from_document(computed, "t.json")[0]).status == expected


# --- copy loops, conditions, existing -------------------------------------------------------------

def test_a_copy_loop_deploys_one_registry_per_index_named_from_its_evaluated_name():
    loop = {**registry(name="[format('acr{0}', copyIndex(1))]",
                       adminUserEnabled="[equals(copyIndex(), 1)]"), "copy": {"name": "acrs", "count": 3}}
    found = registries_from_document(template(loop), "main.json")
    assert [r.name for r in found] == ["acr1", "acr2", "acr3"]
    assert [r.id for r in found] == [f"Microsoft.ContainerRegistry/registries/acr{i}" for i in (1, 2, 3)]
    assert [r.admin_user_enabled for r in found] == [False, True, False]
    assert {r.declared_at for r in found} == {"/resources/0"}


def test_a_copy_loop_of_zero_deploys_nothing_and_an_unknown_count_is_said():
    with pytest.raises(NoRegistry):
        registries_from_document(template({**registry(), "copy": {"name": "c", "count": 0}}), "main.json")
    loop = {**registry(name="[format('acr{0}', copyIndex())]"), "copy": {"name": "c", "count": "[parameters('n')]"}}
    reading = read_document(template(loop, parameters={"n": {"type": "int"}}), "main.json")
    assert [r.id for r in reading.registries] == ["main.json#resources/0"]
    assert any("copy loop 'c' has a count that cannot be known offline" in note for note in reading.notes)


def test_a_false_condition_is_not_deployed_and_an_unknown_one_is_evaluated_and_said():
    doc = template({**registry(name="offacr"), "condition": "[equals(parameters('env'), 'prod')]"},
                   registry(name="onacr"), parameters={"env": {"type": "string", "defaultValue": "dev"}})
    assert [r.name for r in registries_from_document(doc, "main.json")] == ["onacr"]
    assert [r.name for r in registries_from_document(doc, "main.json", {"env": "prod"})] == ["offacr", "onacr"]
    unknown = template({**registry(name="maybeacr"), "condition": "[parameters('deploy')]"},
                       parameters={"deploy": {"type": "string"}})
    reading = read_document(unknown, "main.json")
    assert [r.name for r in reading.registries] == ["maybeacr"]
    assert reading.notes == ["main.json: registry Microsoft.ContainerRegistry/registries/maybeacr is deployed only when "
                             "[parameters('deploy')] holds, which cannot be known offline: it is evaluated as deployed"]


def test_existing_resources_and_a_false_conditioned_module_are_not_evaluated():
    doc = template({**registry(name="sharedacr"), "existing": True},
                   {**module("off", template(registry(name="offacr"))), "condition": False}, registry(name="newacr"))
    assert [r.name for r in registries_from_document(doc, "main.json")] == ["newacr"]


# --- nested deployments ----------------------------------------------------------------------------

def test_inner_scope_gets_parameters_by_value_and_outer_scope_reads_the_parents():
    inner = template(registry(name="[parameters('name')]", **public("[parameters('pna')]")),
                     parameters={"name": {"type": "string"}, "pna": {"type": "string", "defaultValue": "Enabled"}})
    outer = template(registry(name="outeracr", **public("[parameters('pna')]")))
    doc = template(module("acrModule", inner, parameters={"name": {"value": "[format('{0}acr', parameters('env'))]"},
                                                          "pna": {"value": "[parameters('pna')]"}}),
                   module("outerModule", outer, scope=None),
                   parameters={"env": {"type": "string", "defaultValue": "prod"},
                               "pna": {"type": "string", "defaultValue": "Disabled"}})
    found = registries_from_document(doc, "main.json")
    assert [(r.id, r.name, r.public_network_access) for r in found] == [
        ("acrModule/prodacr", "prodacr", "Disabled"), ("outerModule/outeracr", "outeracr", "Disabled")]


def test_modules_nest_to_any_depth_and_sarif_finds_the_resource_line():
    leaf = template(registry(name="deepacr"))
    doc = template(module("outer", template(module("middle", template(module("inner", leaf))))))
    text = json.dumps(doc, indent=2)
    found = registries_from_document(json.loads(text), "main.json")[0]
    assert found.id == "outer/middle/inner/deepacr"
    line = line_of_pointer(text, found.declared_at)
    assert line is not None and '"type": "Microsoft.ContainerRegistry/registries"' in text.splitlines()[line]


def test_a_parameter_passed_as_a_whole_expression_entry_and_key_vault_references():
    inner = template(registry(name="acr", adminUserEnabled="[parameters('admin')]"),
                     parameters={"admin": {"type": "bool"}})
    passed = {"admin": "[if(parameters('on'), createObject('value', true()), createObject('value', false()))]"}
    doc = template(module("m", inner, parameters=passed), parameters={"on": {"type": "bool", "defaultValue": True}})
    assert statuses(doc)["AdminUser"] == FAIL
    vault = template(module("m", inner, parameters={"admin": {"reference": {"keyVault": {"id": "x"}, "secretName": "s"}}}))
    assert statuses(vault)["AdminUser"] == UNKNOWN


# --- the real Azure Verified Module (tests/data/avm-container-registry, MIT) --------------------------

def _avm(parameter_set: str | None) -> dict[str, str]:
    document = json.loads((AVM / "main.json").read_text(encoding="utf-8"))
    values = {} if parameter_set is None else parameters_from_file(
        json.loads((AVM / "parameters" / f"{parameter_set}.parameters.json").read_text(encoding="utf-8")), parameter_set)
    [found] = registries_from_document(document, "main.json", values)
    return {f.rule_id.rsplit(".", 1)[-1]: f.status for f in evaluate(found).findings}


@pytest.mark.parametrize(("parameter_set", "expected"), [
    # no values at all: name unknown; publicNetworkAccess computed to null (Enabled); exports default disabled
    (None, {"ExportPolicy": FAIL, "PublicNetworkAccess": FAIL, "Firewall": FAIL, "PrivateEndpoint": UNKNOWN,
            "PremiumSku": PASS, "ExportPipelines": PASS, "AdminUser": PASS, "AnonymousPull": PASS}),
    # Standard: exportPolicy is null() below Premium, so Azure's default (enabled) applies
    ("defaults", {"ExportPolicy": FAIL, "PublicNetworkAccess": FAIL, "PremiumSku": FAIL, "Firewall": NOT_APPLICABLE}),
    ("restricted-empty-ip", {"ExportPolicy": PASS, "PublicNetworkAccess": PASS, "Firewall": PASS,
                             "PrivateEndpoint": UNKNOWN, "TrustedServices": FAIL}),
    # private endpoints and no IP rules: publicNetworkAccessMode evaluates to Disabled; the endpoint comes from a
    # nested deployment inside a copy loop, approved on creation
    ("waf-aligned", {"ExportPolicy": FAIL, "PublicNetworkAccess": PASS, "Firewall": PASS, "PrivateEndpoint": PASS}),
    # IP rules: public access stays Enabled, the network rule set is built with defaultAction Deny
    ("max", {"ExportPolicy": FAIL, "PublicNetworkAccess": FAIL, "Firewall": PASS, "PrivateEndpoint": PASS,
             "AdminUser": PASS}),
])
def test_the_avm_module_with_its_test_parameter_sets(parameter_set, expected):
    found = _avm(parameter_set)
    assert {rule: found[rule] for rule in expected} == expected
