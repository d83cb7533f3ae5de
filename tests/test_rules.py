"""Every rule of the issue's table, through every input shape, with exact statuses.

Each case is (SKU, REST `properties`, expected status). It runs through every shape in
tests.test_sources.SHAPES, so a rule can only pass here if the normaliser feeds it the same
snapshot from an ARM GET, `az acr show`, Resource Graph or an ARM template.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from dlp.domain import model
from dlp.domain.model import FAIL, NOT_APPLICABLE, PASS, UNKNOWN, Registry
from dlp.domain.rules import CATALOGUE, Rule, evaluate, rules
from tests.test_sources import SHAPES, TEMPLATE_SHAPES, only

APPROVED = {"name": "pe-ok", "properties": {"privateLinkServiceConnectionState": {"status": "Approved"}}}
PENDING = {"name": "pe-wait", "properties": {"privateLinkServiceConnectionState": {"status": "Pending"}}}
REJECTED = {"name": "pe-no", "properties": {"privateLinkServiceConnectionState": {"status": "Rejected"}}}


def export(status: str) -> dict[str, Any]:
    return {"policies": {"exportPolicy": {"status": status}}}


# rule -> [(case name, sku, properties, expected status)]
CASES: dict[str, list[tuple[str, str, dict[str, Any], str]]] = {
    "DLP.ACR.ExportPolicy": [
        ("both disabled", "Premium", {**export("disabled"), "publicNetworkAccess": "Disabled"}, PASS),
        ("both disabled, other casing", "Premium", {**export("Disabled"), "publicNetworkAccess": "disabled"}, PASS),
        ("exports re-enabled", "Premium", {**export("enabled"), "publicNetworkAccess": "Disabled"}, FAIL),
        ("public enabled", "Premium", {**export("disabled"), "publicNetworkAccess": "Enabled"}, FAIL),
        ("absent: both default to enabled", "Premium", {}, FAIL),
        ("absent export policy", "Premium", {"publicNetworkAccess": "Disabled"}, FAIL),
        ("Basic with both disabled", "Basic", {**export("disabled"), "publicNetworkAccess": "Disabled"}, FAIL),
        ("Standard with both disabled", "Standard", {**export("disabled"), "publicNetworkAccess": "Disabled"}, FAIL),
    ],
    "DLP.ACR.PublicNetworkAccess": [
        ("disabled", "Premium", {"publicNetworkAccess": "Disabled"}, PASS),
        ("lower case", "Premium", {"publicNetworkAccess": "disabled"}, PASS),
        ("enabled", "Premium", {"publicNetworkAccess": "Enabled"}, FAIL),
        ("absent: Enabled", "Premium", {}, FAIL),
        ("every SKU: Basic disabled", "Basic", {"publicNetworkAccess": "Disabled"}, PASS),
        ("every SKU: Standard enabled", "Standard", {"publicNetworkAccess": "Enabled"}, FAIL),
    ],
    "DLP.ACR.Firewall": [
        ("public disabled", "Premium", {"publicNetworkAccess": "Disabled"}, PASS),
        ("public enabled, deny", "Premium",
         {"publicNetworkAccess": "Enabled", "networkRuleSet": {"defaultAction": "Deny"}}, PASS),
        ("deny, lower case", "Premium", {"networkRuleSet": {"defaultAction": "deny"}}, PASS),
        ("public enabled, allow", "Premium",
         {"publicNetworkAccess": "Enabled", "networkRuleSet": {"defaultAction": "Allow"}}, FAIL),
        ("absent: Enabled and Allow", "Premium", {}, FAIL),
        ("Standard", "Standard", {}, NOT_APPLICABLE),
        ("Basic", "Basic", {"publicNetworkAccess": "Enabled"}, NOT_APPLICABLE),
    ],
    "DLP.ACR.PrivateEndpoint": [
        ("approved", "Premium", {"privateEndpointConnections": [APPROVED]}, PASS),
        ("one of several approved", "Premium", {"privateEndpointConnections": [REJECTED, APPROVED]}, PASS),
        ("pending only", "Premium", {"privateEndpointConnections": [PENDING]}, FAIL),
        ("rejected and pending", "Premium", {"privateEndpointConnections": [REJECTED, PENDING]}, FAIL),
        ("none", "Premium", {"privateEndpointConnections": []}, FAIL),
        ("absent", "Premium", {}, FAIL),
        ("Standard", "Standard", {"privateEndpointConnections": []}, NOT_APPLICABLE),
    ],
    "DLP.ACR.PremiumSku": [
        ("Premium", "Premium", {}, PASS),
        ("lower case premium", "premium", {}, PASS),
        ("Standard", "Standard", {}, FAIL),
        ("Basic", "Basic", {}, FAIL),
    ],
    "DLP.ACR.ExportPipelines": [
        ("exports disabled: no lookup needed", "Premium", export("disabled"), PASS),
        ("exports enabled offline", "Premium", export("enabled"), UNKNOWN),
        ("absent: exports enabled", "Premium", {}, UNKNOWN),
        ("Standard", "Standard", export("enabled"), NOT_APPLICABLE),
        ("Basic", "Basic", {}, NOT_APPLICABLE),
    ],
    "DLP.ACR.AdminUser": [
        ("off", "Premium", {"adminUserEnabled": False}, PASS),
        ("absent: off", "Premium", {}, PASS),
        ("on", "Premium", {"adminUserEnabled": True}, FAIL),
        ("on as a string", "Premium", {"adminUserEnabled": "True"}, FAIL),
        ("every SKU: Basic on", "Basic", {"adminUserEnabled": True}, FAIL),
        ("every SKU: Standard off", "Standard", {"adminUserEnabled": False}, PASS),
    ],
    "DLP.ACR.AnonymousPull": [
        ("off", "Premium", {"anonymousPullEnabled": False}, PASS),
        ("absent: off", "Standard", {}, PASS),
        ("on, Premium", "Premium", {"anonymousPullEnabled": True}, FAIL),
        ("on, Standard", "Standard", {"anonymousPullEnabled": True}, FAIL),
        ("Basic", "Basic", {"anonymousPullEnabled": True}, NOT_APPLICABLE),
    ],
    "DLP.ACR.DataEndpoint": [
        ("on", "Premium", {"dataEndpointEnabled": True}, PASS),
        ("off", "Premium", {"dataEndpointEnabled": False}, FAIL),
        ("absent: off", "Premium", {}, FAIL),
        ("Standard", "Standard", {"dataEndpointEnabled": False}, NOT_APPLICABLE),
    ],
    "DLP.ACR.TrustedServices": [
        ("None", "Premium", {"networkRuleBypassOptions": "None"}, PASS),
        ("none, lower case", "Premium", {"networkRuleBypassOptions": "none"}, PASS),
        ("AzureServices", "Premium", {"networkRuleBypassOptions": "AzureServices"}, FAIL),
        ("absent: AzureServices", "Premium", {}, FAIL),
        ("Standard", "Standard", {"networkRuleBypassOptions": "AzureServices"}, NOT_APPLICABLE),
    ],
    "DLP.ACR.TasksBypass": [
        ("off", "Premium", {"networkRuleBypassAllowedForTasks": False}, PASS),
        ("absent: off", "Premium", {}, PASS),
        ("on", "Premium", {"networkRuleBypassAllowedForTasks": True}, FAIL),
        ("Basic", "Basic", {"networkRuleBypassAllowedForTasks": True}, NOT_APPLICABLE),
    ],
}

MATRIX = [pytest.param(rule_id, sku, props, expected, shape, id=f"{rule_id.rsplit('.', 1)[-1]}-{name}-{shape}")
          for rule_id, cases in CASES.items() for name, sku, props, expected in cases for shape in SHAPES]


def offline_expectation(rule_id: str, props: dict[str, Any], expected: str, shape: str) -> str:
    """Templates differ in one documented way: a template's private endpoints are the Microsoft.Network/
    privateEndpoints resources it declares; `privateEndpointConnections` in the registry's properties is read-only
    (ARM ignores it), so with no endpoint resource the rule is unknown, whatever those properties say."""
    if shape in TEMPLATE_SHAPES and rule_id == "DLP.ACR.PrivateEndpoint" and expected in (FAIL, PASS):
        return UNKNOWN
    return expected


@pytest.mark.parametrize(("rule_id", "sku", "props", "expected", "shape"), MATRIX)
def test_rule_through_every_shape(rule_id, sku, props, expected, shape):
    registry = only(SHAPES[shape](sku, json.loads(json.dumps(props))))
    finding = evaluate(registry).finding(rule_id)
    assert finding is not None
    assert finding.status == offline_expectation(rule_id, props, expected, shape), finding.message
    assert finding.severity == CATALOGUE[rule_id].severity
    assert finding.remediable == CATALOGUE[rule_id].remediable
    assert finding.message


def test_every_rule_has_cases_with_every_status_it_can_give():
    assert set(CASES) == set(CATALOGUE)
    for rule_id, cases in CASES.items():
        statuses = {expected for _, _, _, expected in cases}
        assert {PASS, FAIL} <= statuses or rule_id == "DLP.ACR.ExportPipelines", rule_id
        if CATALOGUE[rule_id].skus != Rule.skus:
            assert NOT_APPLICABLE in statuses, rule_id


# --- the issue's table, as metadata ------------------------------------------------------------

TABLE = {  # id: (severity, skus, remediable)
    "DLP.ACR.ExportPolicy": ("high", ("Basic", "Standard", "Premium"), True),
    "DLP.ACR.PublicNetworkAccess": ("high", ("Basic", "Standard", "Premium"), True),
    "DLP.ACR.Firewall": ("medium", ("Premium",), False),
    "DLP.ACR.PrivateEndpoint": ("medium", ("Premium",), False),
    "DLP.ACR.PremiumSku": ("high", ("Basic", "Standard", "Premium"), False),
    "DLP.ACR.ExportPipelines": ("high", ("Premium",), False),
    "DLP.ACR.AdminUser": ("medium", ("Basic", "Standard", "Premium"), False),
    "DLP.ACR.AnonymousPull": ("medium", ("Standard", "Premium"), False),
    "DLP.ACR.DataEndpoint": ("low", ("Premium",), False),
    "DLP.ACR.TrustedServices": ("low", ("Premium",), False),
    "DLP.ACR.TasksBypass": ("medium", ("Premium",), False),
}


def test_catalogue_matches_the_issue_table_in_order():
    assert list(CATALOGUE) == list(TABLE)
    for rule_id, (severity, skus, remediable) in TABLE.items():
        rule = CATALOGUE[rule_id]
        assert (rule.severity, tuple(rule.skus), rule.remediable) == (severity, skus, remediable), rule_id
        assert rule.synopsis and rule.recommendation
        assert rule.links and all(link.startswith("https://") for link in rule.links)


# --- finding messages say what was found and what is required ---------------------------------

def test_messages_name_the_value_found_and_the_value_required():
    registry = only(SHAPES["arm-get"]("Premium", {**export("enabled"), "publicNetworkAccess": "Disabled"}))
    assert evaluate(registry).finding("DLP.ACR.ExportPolicy").message == "exportPolicy.status is enabled; must be disabled"
    basic = only(SHAPES["arm-get"]("Basic", {}))
    message = evaluate(basic).finding("DLP.ACR.ExportPolicy").message
    assert "sku.name is Basic" in message and "publicNetworkAccess is Enabled; must be Disabled" in message


# --- export pipelines beyond the offline shapes ------------------------------------------------

def premium(**changes: Any) -> Registry:
    return replace(Registry(id="/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r",
                            name="r", sku="Premium"), **changes)


def test_export_pipelines_after_a_lookup():
    rule = CATALOGUE["DLP.ACR.ExportPipelines"]
    assert rule.evaluate(premium(export_pipelines=())).status == PASS
    found = rule.evaluate(premium(export_pipelines=("to-partner", "nightly")))
    assert found.status == FAIL
    assert found.message == "export pipeline(s) to-partner, nightly exist; none may exist"
    # declared pipelines fail even next to disabled exports (a template declaring both)
    assert rule.evaluate(premium(export_pipelines=("p",), export_policy="disabled")).status == FAIL


# --- unresolved values: unknown, never a silent pass -------------------------------------------

@pytest.mark.parametrize("rule_id", list(CATALOGUE))
def test_every_property_a_rule_reads_makes_it_unknown_when_unresolved_and_nothing_known_fails(rule_id):
    """On a registry that passes every rule, an unresolved property the verdict depends on gives `unknown`."""
    rule = CATALOGUE[rule_id]
    for prop in rule.reads:
        baseline = LOCKED_SNAPSHOT
        if rule_id == "DLP.ACR.Firewall":      # either of public access / deny-by-default passes on its own
            baseline = replace(LOCKED_SNAPSHOT, **{model.P_PUBLIC: "Enabled", model.P_DEFAULT_ACTION: "Allow"})
            baseline = replace(baseline, **{prop: getattr(LOCKED_SNAPSHOT, prop)})
        if rule_id == "DLP.ACR.ExportPipelines" and prop == model.P_EXPORT:
            baseline = replace(LOCKED_SNAPSHOT, export_pipelines=None)
        if prop == model.P_PRIVATE_ENDPOINTS:  # a known approved connection passes whatever else exists: none known
            baseline = replace(LOCKED_SNAPSHOT, private_endpoints=())
        else:
            assert rule.evaluate(baseline).status == PASS, (rule_id, prop)
        finding = rule.evaluate(replace(baseline, unresolved=frozenset({prop})))
        assert finding.status == UNKNOWN, (rule_id, prop)
        assert "cannot be determined" in finding.message


LOCKED_SNAPSHOT = Registry(
    id="/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r", name="r",
    sku="Premium", export_policy="disabled", public_network_access="Disabled", network_default_action="Deny",
    network_bypass_options="None", private_endpoints=(model.PrivateEndpoint("pe", "Approved"),),
    data_endpoint_enabled=True, export_pipelines=())

# rule -> [(case, snapshot changes, unresolved properties, expected status)]: fail dominates unknown
MIXED: dict[str, list[tuple[str, dict[str, Any], set[str], str]]] = {
    "DLP.ACR.ExportPolicy": [
        ("exports unresolved, public access known on", {"public_network_access": "Enabled"}, {model.P_EXPORT}, FAIL),
        ("public access unresolved, exports known on", {"export_policy": "enabled"}, {model.P_PUBLIC}, FAIL),
        ("both unresolved", {}, {model.P_EXPORT, model.P_PUBLIC}, UNKNOWN),
        ("exports unresolved, public access off", {}, {model.P_EXPORT}, UNKNOWN),
        ("SKU unresolved, public access on", {"public_network_access": "Enabled"}, {model.P_SKU}, FAIL),
        ("SKU unresolved, both off", {}, {model.P_SKU}, UNKNOWN),
        ("SKU and exports unresolved, public on", {"public_network_access": "Enabled"}, {model.P_SKU, model.P_EXPORT},
         FAIL),
    ],
    "DLP.ACR.PublicNetworkAccess": [
        ("public access unresolved", {}, {model.P_PUBLIC}, UNKNOWN),
        ("SKU unresolved (every SKU), public on", {"public_network_access": "Enabled"}, {model.P_SKU}, FAIL),
    ],
    "DLP.ACR.Firewall": [
        ("public unresolved, default Allow", {"network_default_action": "Allow"}, {model.P_PUBLIC}, UNKNOWN),
        ("public unresolved, default Deny", {}, {model.P_PUBLIC}, PASS),
        ("default unresolved, public on", {"public_network_access": "Enabled"}, {model.P_DEFAULT_ACTION}, UNKNOWN),
        ("both unresolved", {}, {model.P_PUBLIC, model.P_DEFAULT_ACTION}, UNKNOWN),
        ("SKU unresolved, open: not applicable below Premium", {"public_network_access": "Enabled",
                                                                "network_default_action": "Allow"}, {model.P_SKU},
         UNKNOWN),
    ],
    "DLP.ACR.PrivateEndpoint": [
        ("connections unresolved, none known", {"private_endpoints": ()}, {model.P_PRIVATE_ENDPOINTS}, UNKNOWN),
        ("connections unresolved, one pending known", {"private_endpoints": (model.PrivateEndpoint("p", "Pending"),)},
         {model.P_PRIVATE_ENDPOINTS}, UNKNOWN),
        ("connections unresolved, one approved known", {}, {model.P_PRIVATE_ENDPOINTS}, PASS),
    ],
    "DLP.ACR.PremiumSku": [("SKU unresolved", {}, {model.P_SKU}, UNKNOWN)],
    "DLP.ACR.ExportPipelines": [
        ("pipelines declared, exports unresolved", {"export_pipelines": ("p",)}, {model.P_EXPORT}, FAIL),
        ("pipelines unknown, exports unresolved", {"export_pipelines": None}, {model.P_EXPORT}, UNKNOWN),
        ("none declared, exports unresolved", {"export_pipelines": ()}, {model.P_EXPORT}, PASS),
        ("pipelines unresolved, exports off", {}, {model.P_PIPELINES}, UNKNOWN),
        ("pipelines unresolved, SKU unresolved", {"export_pipelines": ("p",)}, {model.P_SKU}, UNKNOWN),
        ("one pipeline declared, more may exist", {"export_pipelines": ("p",)}, {model.P_PIPELINES}, FAIL),
    ],
    "DLP.ACR.AdminUser": [
        ("admin unresolved", {}, {model.P_ADMIN}, UNKNOWN),
        ("SKU unresolved (every SKU), admin on", {"admin_user_enabled": True}, {model.P_SKU}, FAIL),
    ],
    "DLP.ACR.AnonymousPull": [
        ("anonymous unresolved", {}, {model.P_ANONYMOUS}, UNKNOWN),
        ("SKU unresolved, anonymous on: Basic is out of scope", {"anonymous_pull_enabled": True}, {model.P_SKU},
         UNKNOWN),
        ("SKU unresolved, anonymous off", {}, {model.P_SKU}, UNKNOWN),
    ],
    "DLP.ACR.DataEndpoint": [("data endpoint unresolved", {}, {model.P_DATA_ENDPOINT}, UNKNOWN)],
    "DLP.ACR.TrustedServices": [
        ("bypass unresolved", {}, {model.P_BYPASS}, UNKNOWN),
        ("bypass on, an unrelated property unresolved", {"network_bypass_options": "AzureServices"}, {model.P_ADMIN},
         FAIL),
    ],
    "DLP.ACR.TasksBypass": [
        ("tasks bypass unresolved", {}, {model.P_TASKS_BYPASS}, UNKNOWN),
        ("tasks bypass on, public access unresolved", {"tasks_bypass": True}, {model.P_PUBLIC}, FAIL),
    ],
}


def test_every_rule_has_mixed_cases():
    assert set(MIXED) == set(CATALOGUE)


@pytest.mark.parametrize(("rule_id", "case", "changes", "unresolved", "expected"),
                         [(rule_id, *case) for rule_id, cases in MIXED.items() for case in cases],
                         ids=[f"{rule_id}: {case[0]}" for rule_id, cases in MIXED.items() for case in cases])
def test_fail_dominates_unknown(rule_id, case, changes, unresolved, expected):
    registry = replace(LOCKED_SNAPSHOT, unresolved=frozenset(unresolved), **changes)
    rule = CATALOGUE[rule_id]
    finding = rule.evaluate(registry)
    assert finding.status == expected, finding.message
    relevant = set(rule.reads) | ({model.P_SKU} if rule.applies_to != "every SKU" else set())
    if expected == FAIL and unresolved & relevant:
        assert "whatever" in finding.message and "cannot be determined offline" in finding.message


def test_a_failure_names_only_what_is_known_to_fail():
    registry = replace(LOCKED_SNAPSHOT, public_network_access="Enabled", unresolved=frozenset({model.P_EXPORT}))
    assert CATALOGUE["DLP.ACR.ExportPolicy"].evaluate(registry).message == (
        "publicNetworkAccess is Enabled; must be Disabled (whatever policies.exportPolicy.status turns out to be: "
        "it cannot be determined offline)")


def test_unknown_sku_keeps_every_sku_rules_evaluated():
    registry = premium(sku="Unknown", unresolved=frozenset({model.P_SKU}), public_network_access="Enabled",
                       admin_user_enabled=True)
    statuses = {f.rule_id: f.status for f in evaluate(registry).findings}
    assert statuses == {
        "DLP.ACR.ExportPolicy": FAIL,            # public access is on: fails whatever the SKU
        "DLP.ACR.PublicNetworkAccess": FAIL,
        "DLP.ACR.Firewall": UNKNOWN,
        "DLP.ACR.PrivateEndpoint": UNKNOWN,
        "DLP.ACR.PremiumSku": UNKNOWN,
        "DLP.ACR.ExportPipelines": UNKNOWN,
        "DLP.ACR.AdminUser": FAIL,
        "DLP.ACR.AnonymousPull": UNKNOWN,
        "DLP.ACR.DataEndpoint": UNKNOWN,
        "DLP.ACR.TrustedServices": UNKNOWN,
        "DLP.ACR.TasksBypass": UNKNOWN,
    }
    locked = replace(registry, public_network_access="Disabled", export_policy="disabled")
    assert evaluate(locked).finding("DLP.ACR.ExportPolicy").status == UNKNOWN   # Premium passes, Basic fails


def test_an_unrecognised_sku_is_not_applicable_to_sku_specific_rules_only():
    statuses = {f.rule_id: f.status for f in evaluate(premium(sku="Classic")).findings}
    assert statuses["DLP.ACR.Firewall"] == NOT_APPLICABLE
    assert statuses["DLP.ACR.PremiumSku"] == FAIL
    assert statuses["DLP.ACR.PublicNetworkAccess"] == FAIL


# --- evaluate() and rules() --------------------------------------------------------------------

def test_evaluate_runs_every_rule_in_catalogue_order_and_is_pure():
    registry = premium()
    first, second = evaluate(registry), evaluate(registry)
    assert [f.rule_id for f in first.findings] == list(CATALOGUE)
    assert first == second
    assert first.registry is registry


def test_rules_selects_case_insensitively_and_rejects_unknown_ids():
    picked = rules(["dlp.acr.exportpolicy", "DLP.ACR.Firewall"])
    assert [r.id for r in picked] == ["DLP.ACR.ExportPolicy", "DLP.ACR.Firewall"]
    assert [f.rule_id for f in evaluate(premium(), picked).findings] == ["DLP.ACR.ExportPolicy", "DLP.ACR.Firewall"]
    with pytest.raises(KeyError):
        rules(["DLP.ACR.Nope"])
    assert rules() == tuple(CATALOGUE.values())


def test_compliant_exactly_when_nothing_fails():
    locked = premium(export_policy="disabled", public_network_access="Disabled", network_default_action="Deny",
                     network_bypass_options="None", data_endpoint_enabled=True,
                     private_endpoints=(model.PrivateEndpoint("pe", "Approved"),))
    assessment = evaluate(locked)
    assert assessment.compliant and not assessment.failures
    assert {f.status for f in assessment.findings} == {PASS}
    drifted = evaluate(replace(locked, export_policy="enabled"))
    assert not drifted.compliant
    assert [f.rule_id for f in drifted.failures] == ["DLP.ACR.ExportPolicy"]
    # unknown alone does not make a registry non-compliant
    assert drifted.finding("DLP.ACR.ExportPipelines").status == UNKNOWN
    assert evaluate(replace(locked, export_policy="enabled"), rules(["DLP.ACR.ExportPipelines"])).compliant


# --- the benchmark's input is varied and its report complete ----------------------------------

def test_benchmark_generates_varied_registries_and_reports_every_stage():
    from bench.bench_rules import generate, run
    from dlp.inputs.documents import registries_from_document

    registries = registries_from_document(generate(400), "bench.json")
    assert len(registries) == 400
    seen = {(f.rule_id, f.status) for r in registries for f in evaluate(r).findings}
    for rule_id in CATALOGUE:
        assert {status for rid, status in seen if rid == rule_id} & {PASS, FAIL}, rule_id
    assert {status for _, status in seen} == {PASS, FAIL, NOT_APPLICABLE, UNKNOWN}
    assert any(evaluate(r).compliant for r in registries)
    result = run(n=300, repeats=1)
    assert set(result["median_s"]) == set(result["registries_per_s"]) == {"load", "normalise", "evaluate", "total"}
    assert result["n"] == 300 and isinstance(result["target_met"], bool)
    json.dumps(result)
