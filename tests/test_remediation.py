"""The remediation planner: pure, so every guard and ordering rule is tested here, fast."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from dlp.domain import remediation as r
from dlp.domain.model import A_BLOCKED, A_EXEMPT, A_NONE, A_WOULD, PrivateEndpoint, Registry
from dlp.domain.remediation import Exemption
from dlp.domain.rules import evaluate, rules

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-app"
RID = f"{RG}/providers/Microsoft.ContainerRegistry/registries/acrprod01"
TODAY = date(2026, 11, 21)
ENFORCE = r.Policy(enforce=True)


def registry(**overrides) -> Registry:
    base = Registry(id=RID, name="acrprod01", sku="Premium", export_policy="disabled", public_network_access="Disabled",
                    private_endpoints=(PrivateEndpoint("pe1", "Approved"),), export_pipelines=())
    return replace(base, **overrides)


def plan_for(reg: Registry, policy: r.Policy = ENFORCE, **kwargs):
    return r.plan(evaluate(reg), policy, today=TODAY, **kwargs)


def test_compliant_registry_needs_nothing():
    plan = plan_for(registry())
    assert plan.action == A_NONE and plan.changes == () and plan.patch_body() == {}


def test_exports_reenabled_patches_only_export_policy():
    plan = plan_for(registry(export_policy="Enabled"))
    assert plan.writes
    assert plan.patch_body() == {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}
    assert [(c.property, c.old, c.new) for c in plan.changes] == [("policies.exportPolicy.status", "Enabled", "disabled")]


def test_public_access_reopened_patches_only_public_network_access():
    plan = plan_for(registry(public_network_access="enabled"))
    assert plan.patch_body() == {"properties": {"publicNetworkAccess": "Disabled"}}


def test_both_drifted_one_patch_public_access_first():
    plan = plan_for(registry(export_policy="enabled", public_network_access="Enabled"))
    assert [c.property for c in plan.changes] == ["publicNetworkAccess", "policies.exportPolicy.status"]
    assert plan.patch_body() == {"properties": {"publicNetworkAccess": "Disabled",
                                                "policies": {"exportPolicy": {"status": "disabled"}}}}


def test_unrelated_failures_are_never_written():
    reg = registry(admin_user_enabled=True, anonymous_pull_enabled=True, network_bypass_options="AzureServices")
    assessment = evaluate(reg)
    assert not assessment.compliant
    assert r.plan(assessment, ENFORCE, today=TODAY).action == A_NONE


def test_rule_selection_limits_what_is_planned():
    reg = registry(export_policy="enabled", public_network_access="Enabled")
    only_public = r.plan(evaluate(reg, rules(["DLP.ACR.PublicNetworkAccess"])), ENFORCE, today=TODAY)
    assert only_public.patch_body() == {"properties": {"publicNetworkAccess": "Disabled"}}


def test_audit_mode_reports_would_remediate():
    plan = plan_for(registry(export_policy="enabled"), r.Policy(enforce=False))
    assert plan.action == A_WOULD and plan.reason == r.R_AUDIT and not plan.writes
    assert plan.changes


@pytest.mark.parametrize(("scopes", "blocked"), [
    ((), False),
    ((f"/subscriptions/{SUB}".lower(),), False),
    ((RG.lower(),), False),
    ((f"{RG}x".lower(),), True),                     # rg-appx is not rg-app
    (("/subscriptions/00000000-0000-0000-0000-000000000002",), True),
])
def test_scope_guard(scopes, blocked):
    plan = plan_for(registry(export_policy="enabled"), r.Policy(enforce=True, scopes=scopes))
    assert (plan.action == A_BLOCKED and plan.reason == r.R_OUT_OF_SCOPE) is blocked
    assert plan.writes is not blocked


@pytest.mark.parametrize(("entry", "exempt"), [
    (Exemption(RID.lower(), None), True),
    (Exemption(RG.lower(), date(2026, 11, 21)), True),          # the last day still holds
    (Exemption(RG.lower(), date(2026, 11, 20)), False),         # expired yesterday
    (Exemption(RID.lower() + "2", None), False),                # a different registry with a longer name
])
def test_exemption_list(entry, exempt):
    plan = plan_for(registry(export_policy="enabled"), r.Policy(enforce=True, exemptions=(entry,)))
    assert (plan.action == A_EXEMPT) is exempt
    if exempt:
        assert plan.reason == r.R_EXEMPTION and not plan.tag_exemption and entry.scope in plan.detail


def test_tag_ignored_unless_configured():
    reg = registry(export_policy="enabled", tags={"dlp-exempt": "true"})
    assert plan_for(reg).writes


@pytest.mark.parametrize(("value", "exempt"), [("true", True), ("TRUE", True), ("2026-12-01", True),
                                               ("2026-11-20", False), ("yes", False), ("", False)])
def test_tag_exemption(value, exempt):
    reg = registry(export_policy="enabled", tags={"DLP-Exempt": value})
    plan = plan_for(reg, r.Policy(enforce=True, exempt_tag="dlp-exempt"))
    assert (plan.action == A_EXEMPT) is exempt
    assert plan.tag_exemption is exempt


def test_not_premium_is_blocked():
    plan = plan_for(registry(sku="Standard", export_policy="enabled", public_network_access="Enabled"))
    assert plan.action == A_BLOCKED and plan.reason == r.R_NOT_PREMIUM and "Premium" in plan.detail


def test_export_pipelines_block_and_name_the_pipelines():
    plan = plan_for(registry(export_policy="enabled", export_pipelines=("nightly-export", "dr")))
    assert plan.action == A_BLOCKED and plan.reason == r.R_PIPELINES
    assert "nightly-export" in plan.detail and "dr" in plan.detail and "never deletes" in plan.detail


def test_unlisted_pipelines_block_export_write():
    plan = plan_for(registry(export_policy="enabled", export_pipelines=None))
    assert plan.action == A_BLOCKED and plan.reason == r.R_PIPELINES_UNKNOWN


@pytest.mark.parametrize(("pipelines", "reason"), [(("nightly",), r.R_PIPELINES), (None, r.R_PIPELINES_UNKNOWN)])
def test_pipelines_withhold_only_the_export_write(pipelines, reason):
    """Issue 11 item 3: public access is still closed; the export change is withheld with the guard's reason."""
    plan = plan_for(registry(export_policy="enabled", public_network_access="Enabled", export_pipelines=pipelines))
    assert plan.writes and plan.reason == reason
    assert [c.property for c in plan.changes] == ["publicNetworkAccess"]
    assert [c.property for c in plan.withheld] == ["policies.exportPolicy.status"]
    assert plan.patch_body() == {"properties": {"publicNetworkAccess": "Disabled"}}


def test_pipelines_and_another_guard_write_nothing():
    plan = plan_for(registry(export_policy="enabled", public_network_access="Enabled", export_pipelines=("p",),
                             private_endpoints=()))
    assert plan.action == A_BLOCKED and plan.reason == r.R_NO_PRIVATE_ENDPOINT and len(plan.changes) == 2


def test_pipelines_do_not_block_a_public_access_only_fix():
    plan = plan_for(registry(public_network_access="Enabled", export_pipelines=None))
    assert plan.writes


@pytest.mark.parametrize("endpoints", [(), (PrivateEndpoint("pe1", "Pending"),), (PrivateEndpoint("pe1", "Rejected"),)])
def test_no_approved_private_endpoint_blocks_lockout(endpoints):
    plan = plan_for(registry(public_network_access="Enabled", private_endpoints=endpoints))
    assert plan.action == A_BLOCKED and plan.reason == r.R_NO_PRIVATE_ENDPOINT
    assert "private endpoint" in plan.detail


def test_allow_lockout_overrides_private_endpoint_guard():
    plan = plan_for(registry(public_network_access="Enabled", private_endpoints=()),
                    r.Policy(enforce=True, allow_lockout=True))
    assert plan.writes


def test_export_only_fix_needs_no_private_endpoint():
    plan = plan_for(registry(export_policy="enabled", private_endpoints=()))
    assert plan.writes


@pytest.mark.parametrize(("recent", "writes"), [(0, True), (2, True), (3, False), (7, False)])
def test_breaker(recent, writes):
    plan = plan_for(registry(export_policy="enabled"), recent_remediations=recent)
    assert plan.writes is writes
    if not writes:
        assert plan.reason == r.R_BREAKER and str(recent) in plan.detail


def test_updating_registry_is_not_written():
    plan = plan_for(registry(export_policy="enabled", provisioning_state="Updating"))
    assert plan.action == A_BLOCKED and plan.reason == r.R_UPDATING


def test_unresolved_state_is_never_written():
    reg = registry(export_policy="enabled", unresolved=frozenset({"export_policy"}))
    plan = plan_for(reg)
    assert plan.action == A_BLOCKED and plan.reason == r.R_UNKNOWN_STATE


def test_guard_order_exemption_before_premium_and_breaker():
    reg = registry(sku="Basic", export_policy="enabled")
    plan = r.plan(evaluate(reg), r.Policy(enforce=True, exemptions=(Exemption(RID.lower(), None),)),
                  today=TODAY, recent_remediations=10)
    assert plan.action == A_EXEMPT


def test_verification_reports_what_did_not_stick():
    plan = plan_for(registry(export_policy="enabled", public_network_access="Enabled"))
    assert r.still_needed(plan, registry()) == ()
    missing = r.still_needed(plan, registry(export_policy="enabled"))
    assert [(c.property, c.old) for c in missing] == [("policies.exportPolicy.status", "enabled")]


def test_in_scopes_is_case_insensitive():
    assert r.in_scopes(RID.upper(), (RG.lower(),))
    assert not r.in_scopes(RID, (RG.lower() + "2",))
