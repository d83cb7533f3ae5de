"""The scheduled sweep through the real timer handler (function_app.sweep), against the ARM + Resource Graph
emulator over HTTPS and Azurite: pages, what costs ARM calls, one digest, the outbox drain, the budget."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

import function_app
from dlp import runtime
from dlp.azure.graph import MAX_SUBSCRIPTIONS, GraphRetryPolicy, query_body, registry_query
from dlp.domain.model import Context, Target
from dlp.emulator import make_registry, registry_id
from dlp.responder import finish, pipeline, sweep
from dlp.settings import ConfigError

SUB = "11111111-2222-3333-4444-555555555555"
SUB2 = "22222222-3333-4444-5555-666666666666"
COMPLIANT = {"export": "disabled", "public": "Disabled", "dataEndpointEnabled": True, "networkRuleBypassOptions": "None"}
DRIFTED = {"export": "enabled", "public": "Enabled"}
ALERT_SETTINGS = ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def app(azurite_env, monkeypatch):
    for name in ALERT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}")
    monkeypatch.setenv("DLP_MODE", "enforce")
    runtime.reset()
    yield azurite_env
    runtime.reset()


@pytest.fixture
def arm(local_azure):
    return local_azure.arm


@pytest.fixture
def finishes(monkeypatch):
    """Every finish.finish call (the real one still runs): the sweep must record once, as a digest."""
    calls = []
    real = finish.finish

    def spy(evaluations, services, *, digest=False):
        calls.append((len(evaluations), digest))
        return real(evaluations, services, digest=digest)

    monkeypatch.setattr(finish, "finish", spy)
    return calls


def tick(past_due=False):
    """Run the timer function exactly as the host does."""
    timer = TimerRequest(past_due=past_due, schedule_status={"Last": "2026-11-21T06:00:00+00:00"})
    return function_app.sweep.build().get_user_function()(timer)


def populate(arm, count, drifted_every, sub=SUB, groups=3):
    """`count` registries, every `drifted_every`-th one drifted (exports on, public on, approved PE)."""
    drifted = []
    for i in range(count):
        is_drifted = drifted_every and i % drifted_every == 0
        arm.add(make_registry(sub, f"rg{i % groups}", f"acr{i:05d}", **(DRIFTED if is_drifted else COMPLIANT)))
        if is_drifted:
            drifted.append(registry_id(sub, f"rg{i % groups}", f"acr{i:05d}"))
    return drifted


def registry_gets(arm):
    return [r for r in arm.log.filter(service="arm", method="GET") if "exportpipelines" not in r.path.lower()]


def swept(local_azure) -> dict[str, dict]:
    """Registry ID -> one recorded Log Analytics row of the sweep (what the timer run left behind)."""
    return {r["RegistryId"]: r for r in local_azure.logs.rows() if r["Trigger"] == "sweep"}


def last_result(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "dlp.sweep" and r.getMessage().startswith("sweep ")]


# --- pages and costs ----------------------------------------------------------------------------------

def test_a_sweep_over_several_pages_remediates_only_the_drifted_registries(app, arm, finishes, caplog):
    caplog.set_level("INFO", logger="dlp.sweep")
    drifted = populate(arm, 2500, 100)                       # 25 drifted
    tick()
    assert arm.log.count(service="graph", method="POST") == math.ceil(2500 / 1000)
    patches = arm.log.filter(service="arm", method="PATCH")
    assert sorted(p.path.lower() for p in patches) == sorted(d.lower() for d in drifted)
    assert {json.dumps(p.json(), sort_keys=True) for p in patches} == {json.dumps(
        {"properties": {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}}}},
        sort_keys=True)}
    assert sorted(r.path.lower() for r in registry_gets(arm)) == sorted(d.lower() for d in drifted)   # re-read
    # export pipelines are listed only when ARM refuses the export write (none exist here)
    assert arm.log.count(service="arm", method="GET", path_contains="/exportPipelines") == 0
    assert arm.log.count(service="arm") == 2 * len(drifted)                # GET + PATCH, nothing else
    for reg in drifted:
        props = arm.get(reg)["properties"]
        assert props["publicNetworkAccess"] == "Disabled" and props["policies"]["exportPolicy"]["status"] == "disabled"
    assert finishes == [(2500, True)]                                         # one record, one digest
    [line] = last_result(caplog)
    assert "2500 registries in 3 page(s), 2475 from rows, 25 re-read" in line and "'remediated': 25" in line


def test_every_page_request_carries_the_same_query_scopes_and_the_previous_skip_token(app, arm):
    populate(arm, 2100, 0)
    tick()
    bodies = [r.json() for r in arm.log.filter(service="graph")]
    assert len(bodies) == 3
    assert {b["query"] for b in bodies} == {registry_query()}
    assert all(b["subscriptions"] == [SUB] for b in bodies)
    assert [bool(b["options"].get("$skipToken")) for b in bodies] == [False, True, True]
    assert all(b["options"]["$top"] == 1000 and b["options"]["allowPartialScopes"] is False for b in bodies)


@pytest.mark.parametrize(("subscriptions", "token"), [(None, None), ([SUB, "sub-2"], None), ([SUB], "tok+/=")])
def test_the_query_body_is_what_the_resource_graph_sdk_sends(subscriptions, token):
    """The adapter dropped azure-mgmt-resourcegraph (only its serializer was used); the SDK, kept for the
    emulator's tests, still checks that the hand-written body is its QueryRequest, byte for byte."""
    from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

    options = QueryRequestOptions(top=1000, skip_token=token, result_format="objectArray", allow_partial_scopes=False)
    sdk = QueryRequest(query=registry_query(), subscriptions=subscriptions, options=options).serialize()
    ours = query_body(registry_query(), subscriptions, token)
    assert json.dumps(ours) == json.dumps(sdk)


def test_audit_mode_reports_the_plan_reads_the_drifted_and_writes_nothing(app, arm, monkeypatch, local_azure):
    monkeypatch.setenv("DLP_MODE", "audit")
    drifted = populate(arm, 40, 10)
    tick()
    assert arm.log.count(service="arm", method="PATCH") == 0
    assert len(registry_gets(arm)) == len(drifted)
    rows = [r for r in local_azure.logs.rows() if r["Trigger"] == "sweep"]
    assert {r["RegistryId"] for r in rows if r["Action"] == "would-remediate"} == set(drifted)
    assert len({r["RegistryId"] for r in rows}) == 40


def test_compliant_registries_cost_no_arm_call_at_all(app, arm, local_azure):
    populate(arm, 300, 0)
    tick()
    assert arm.log.count(service="graph") == 1
    assert arm.log.count(service="arm") == 0 and arm.log.count(service="arm-op") == 0
    rows = [r for r in local_azure.logs.rows() if r["Trigger"] == "sweep"]
    assert len({r["EvaluationId"] for r in rows}) == 300 and {r["Action"] for r in rows} == {"none"}


def test_standing_refusals_are_recorded_from_the_row_without_a_re_read(app, arm, monkeypatch, local_azure):
    exempt = registry_id(SUB, "rg-legacy", "acrlegacy01")
    monkeypatch.setenv("DLP_EXEMPTIONS", "/subscriptions/" + SUB + "/resourceGroups/rg-legacy")
    arm.create(SUB, "rg-app", "acrbasic01", sku="Basic", private_endpoints=(), **DRIFTED)
    arm.create(SUB, "rg-legacy", "acrlegacy01", **DRIFTED)
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    tick()
    rows = {r["RegistryName"]: r for r in local_azure.logs.rows() if r["Trigger"] == "sweep"}
    assert (rows["acrbasic01"]["Action"], rows["acrbasic01"]["ActionReason"]) == ("blocked", "not-premium")
    assert (rows["acrlegacy01"]["Action"], rows["acrlegacy01"]["ActionReason"]) == ("exempt", "exemption")
    assert rows["acrdrift01"]["Action"] == "remediated"
    assert [r.path.rsplit("/", 1)[-1] for r in registry_gets(arm)] == ["acrdrift01"]
    assert arm.get(exempt)["properties"]["publicNetworkAccess"] == "Enabled"


def test_a_row_that_cannot_be_normalised_is_re_read_from_arm_instead_of_failing_the_sweep(app, arm, monkeypatch,
                                                                                          local_azure):
    populate(arm, 20, 0)
    odd = registry_id(SUB, "rg1", "acr00001")
    real = sweep.registry_from_resource

    def normalise(row, source, **kwargs):
        if row.get("id", "").lower() == odd.lower():
            raise TypeError("a shape nobody expected")
        return real(row, source, **kwargs)

    monkeypatch.setattr(sweep, "registry_from_resource", normalise)
    tick()
    rows = swept(local_azure)
    assert len(rows) == 20 and rows[odd]["Action"] == "none"
    assert [r.path for r in registry_gets(arm)] == [odd]           # that one registry, read from ARM


# --- scopes --------------------------------------------------------------------------------------------

def test_empty_scopes_query_at_tenant_scope_and_cover_every_subscription(app, arm, monkeypatch, local_azure):
    monkeypatch.setenv("DLP_SCOPES", "")
    populate(arm, 5, 0, sub=SUB)
    populate(arm, 5, 0, sub=SUB2)
    tick()
    [request] = arm.log.filter(service="graph")
    assert "subscriptions" not in request.json()                  # tenant scope: no subscriptions list at all
    assert {rid.split("/")[2] for rid in swept(local_azure)} == {SUB, SUB2} and len(swept(local_azure)) == 10


def test_resource_group_scopes_narrow_the_query_and_keep_only_their_own_rows(app, arm, monkeypatch, local_azure):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/rg1,/subscriptions/{SUB2}/resourceGroups/rg2")
    populate(arm, 9, 0, sub=SUB)
    populate(arm, 9, 0, sub=SUB2)
    tick()
    [request] = arm.log.filter(service="graph")
    assert sorted(request.json()["subscriptions"]) == sorted([SUB, SUB2])
    assert re.search(r"resourceGroup in~ \('rg1', 'rg2'\)", request.json()["query"])
    kept = {(rid.split("/")[2], rid.split("/")[4]) for rid in swept(local_azure)}
    assert kept == {(SUB, "rg1"), (SUB2, "rg2")}                   # not rg2 of SUB, not rg1 of SUB2
    assert len(swept(local_azure)) == 6


def test_more_subscriptions_than_one_request_takes_are_chunked(azure_env):
    import uuid

    from dlp.azure.graph import ResourceGraph

    arm = azure_env.arm
    populate(arm, 3, 0, sub=SUB)
    subscriptions = [str(uuid.UUID(int=i)) for i in range(1, MAX_SUBSCRIPTIONS + 1)] + [SUB]
    pages = list(ResourceGraph(arm.url, azure_env.credential()).registries(subscriptions))
    bodies = [r.json() for r in arm.log.filter(service="graph")]
    assert [len(b["subscriptions"]) for b in bodies] == [MAX_SUBSCRIPTIONS, 1]
    assert sum(len(p.rows) for p in pages) == 3 and [p.number for p in pages] == [1, 2]


def test_scopes_become_subscriptions_groups_and_an_exact_filter():
    mixed = sweep.Listing.of_scopes([f"/subscriptions/{SUB}", f"/subscriptions/{SUB2}/resourceGroups/RG1"])
    assert mixed.subscriptions == (SUB, SUB2) and mixed.resource_groups == ()
    assert mixed.scopes == (f"/subscriptions/{SUB}", f"/subscriptions/{SUB2}/resourcegroups/rg1")
    groups = sweep.Listing.of_scopes([f"/subscriptions/{SUB}/resourceGroups/a", f"/subscriptions/{SUB}/resourceGroups/b"])
    assert groups.subscriptions == (SUB,) and groups.resource_groups == ("a", "b")
    assert sweep.Listing.of_scopes([]) == sweep.Listing()
    unicode = sweep.Listing.of_scopes([f"/subscriptions/{SUB}/resourceGroups/İ".lower()])   # as DLP_SCOPES stores it
    assert unicode.resource_groups == () and unicode.scopes == (f"/subscriptions/{SUB}/resourcegroups/i\u0307",)


def test_a_unicode_resource_group_scope_is_swept(app, arm, monkeypatch, local_azure):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/İzmir")
    arm.create(SUB, "İzmir", "acrizmir01", **COMPLIANT)
    arm.create(SUB, "rg-other", "acrother01", **COMPLIANT)
    tick()
    assert [rid.rsplit("/", 1)[-1] for rid in swept(local_azure)] == ["acrizmir01"]


# --- faults, budget, configuration ---------------------------------------------------------------------

def test_resource_graph_throttling_is_waited_out_within_the_budget(app, arm, local_azure):
    populate(arm, 1500, 0)
    arm.faults.add(method="POST", path="resourcegraph", status=429, service="graph", times=1,
                   headers={"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:01"},
                   body={"error": {"code": "RateLimiting", "message": "throttled"}})
    tick()
    assert len(swept(local_azure)) == 1500
    assert arm.log.count(service="graph", status=429) == 1 and arm.log.count(service="graph", status=200) == 2


def test_an_arm_failure_on_one_drifted_registry_does_not_cost_the_others_their_record(app, arm, local_azure):
    drifted = populate(arm, 30, 10)
    arm.faults.add(method="GET", path=drifted[0].split("/")[-1] + "$", status=403, service="arm",
                   body={"error": {"code": "AuthorizationFailed", "message": "no read"}})
    tick()
    rows = swept(local_azure)
    assert (rows[drifted[0]]["Action"], rows[drifted[0]]["ActionReason"]) == ("error", "AuthorizationFailed")
    assert all(rows[d]["Action"] == "remediated" for d in drifted[1:]) and len(rows) == 30


def test_a_resource_graph_failure_fails_the_run_loudly(app, arm):
    arm.faults.add(method="POST", path="resourcegraph", status=403, service="graph",
                   body={"error": {"code": "AuthorizationFailed", "message": "no Reader role"}})
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError):
        tick()


def test_bad_settings_fail_the_timer_run_with_the_setting_named(app, monkeypatch):
    monkeypatch.setenv("DLP_SCOPES", "everything")
    with pytest.raises(ConfigError, match="DLP_SCOPES"):
        tick()


def test_the_sweep_budget_fits_inside_the_function_timeout():
    host = json.loads((REPO / "host.json").read_text())
    hours, minutes, seconds = (int(p) for p in host["functionTimeout"].split(":"))
    assert sweep.SWEEP_BUDGET_S + sweep.RECORD_RESERVE_S + 10 <= hours * 3600 + minutes * 60 + seconds


def test_throttling_waits_come_from_resource_graphs_quota_header():
    class Http:
        status_code = 429
        headers = {"x-ms-user-quota-resets-after": "00:00:07"}

    class Response:
        http_response = Http()

    assert GraphRetryPolicy().get_retry_after(Response()) == 7.0
    assert "POST" in GraphRetryPolicy()._method_whitelist


def test_registry_query_refuses_anything_but_a_resource_group_name():
    with pytest.raises(ValueError):
        registry_query(["rg' | project secrets"])


# --- the outbox --------------------------------------------------------------------------------------

def test_the_sweep_drains_what_log_analytics_refused_earlier(app, arm, local_azure):
    """An event-time outage leaves findings in the outbox (Azurite); the next sweep delivers them."""
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    local_azure.logs.faults.add(method="POST", status=503, times=None)
    pipeline.run([Target(registry_id(SUB, "rg-app", "acrprod01"), Context(trigger="event"))], runtime.services())
    assert not [r for r in local_azure.logs.rows() if r["Trigger"] == "event"]
    local_azure.logs.faults.clear()
    tick()
    assert [r for r in local_azure.logs.rows() if r["Trigger"] == "event"]
    assert [r for r in local_azure.logs.rows() if r["Trigger"] == "sweep"]
