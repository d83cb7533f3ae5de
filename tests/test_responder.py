"""The event responder end to end: the Functions handler, the real SDK clients over HTTPS to the
ARM emulator (managed identity included), Azure Table / Queue storage in Azurite.

Outcomes are read from the structured `dlp.evaluation` log line every evaluation writes, and
from what the emulator received.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.emulator.base import arm_error
from dlp.emulator.tokens import SYSTEM_CLIENT_ID, TENANT_ID, object_id_of
from dlp.settings import RETRY_QUEUE, STATE_TABLE
from dlp.triggers import handlers
from tests.evaluation_log import Evaluations

SUB = "11111111-2222-3333-4444-555555555555"
SUB2 = "99999999-2222-3333-4444-555555555555"
RG = "rg-app"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()


def rid(name: str, sub: str = SUB, rg: str = RG) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"


@pytest.fixture
def responder(azurite_env, monkeypatch):
    """A fresh app instance (new composition root) on the emulators, enforce mode, 5 s budget."""
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "5")
    for name in ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)     # alerting has its own tests
    runtime.reset()
    with Evaluations() as collector:
        yield collector
    runtime.reset()


def fresh_instance():
    """What a second Function App instance sees: new Services, same storage."""
    runtime.reset()
    services = runtime.services()
    if services.retry is not None:
        services.retry.base_delay_s = 0
    return services


def event(registry_id: str, *, kind="Microsoft.Resources.ResourceWriteSuccess", subject=None, operation=None,
          caller="mallory@contoso.com", schema="eventgrid", event_id="ev-1", claims=None, correlation="corr-1"):
    subject = subject or registry_id
    operation = operation or "Microsoft.ContainerRegistry/registries/write"
    claims = {UPN: caller, "ipaddr": "203.0.113.9"} if claims is None else claims
    data = {"claims": claims, "correlationId": correlation,
            "httpRequest": {"clientIpAddress": "203.0.113.9", "method": "PATCH"},
            "operationName": operation, "resourceUri": subject, "status": "Succeeded", "subscriptionId": SUB}
    when = dt.datetime.now(dt.timezone.utc)     # as ARM stamps it: provenance compares it with our intents
    if schema == "cloudevents":
        return func.CloudEvent(id=event_id, source=f"/subscriptions/{SUB}", type=kind, specversion="1.0", time=when,
                               subject=subject, datacontenttype="application/json", dataschema=None, data=data)
    return func.EventGridEvent(id=event_id, data=data, topic=f"/subscriptions/{SUB}", subject=subject,
                               event_type=kind, event_time=when, data_version="2")


def arm_requests(azure, method=None):
    return [r for r in azure.arm.log.filter(method=method) if r.service in ("arm", "arm-op")]


def patches(azure):
    return [json.loads(r.body) for r in azure.arm.log.filter(method="PATCH")]


def state(azure, registry_id):
    props = azure.arm.get(registry_id)["properties"]
    return props["policies"]["exportPolicy"]["status"], props["publicNetworkAccess"]


# --- relevance and intake --------------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_compliant_registry_costs_exactly_one_get(responder, azurite_env, local_azure, schema):
    reg = rid("acrclean01")
    local_azure.arm.create(SUB, RG, "acrclean01", export="disabled", public="Disabled")
    fresh_instance()
    handle_event(event(reg, schema=schema))
    assert [(r.method, r.service) for r in arm_requests(local_azure)] == [("GET", "arm")]
    assert responder.actions() == [("none", "-")]


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_drift_is_reverted_with_the_minimal_patch(responder, azurite_env, local_azure, schema):
    name = f"acrdrift{schema[:4]}"             # a registry of its own: storage (breaker rows) outlives a test
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    fresh_instance()
    (evaluation,) = handlers.on_event(event(reg, schema=schema))
    assert patches(local_azure) == [{"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}]
    # ARM disabled exports, which it refuses while pipelines exist: the record says none existed (not "unknown")
    assert evaluation.assessment.finding("DLP.ACR.ExportPipelines").status == "pass"
    assert state(local_azure, reg) == ("disabled", "Disabled")
    assert responder.actions() == [("remediated", "-")]
    # the floor: GET registry, PATCH (answered 200); export pipelines are listed only if ARM refuses the write
    assert [r.method for r in arm_requests(local_azure)] == ["GET", "PATCH"]


def test_both_properties_in_one_patch_public_access_first(responder, azurite_env, local_azure):
    reg = rid("acrboth01")
    local_azure.arm.create(SUB, RG, "acrboth01", export="enabled", public="Enabled")
    fresh_instance()
    handle_event(event(reg))
    (body,) = patches(local_azure)
    assert list(body["properties"]) == ["publicNetworkAccess", "policies"]
    assert body == {"properties": {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}}}}
    assert state(local_azure, reg) == ("disabled", "Disabled")


OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID = "http://schemas.microsoft.com/identity/claims/tenantid"


def own_claims(client_id=SYSTEM_CLIENT_ID, **extra):
    """The claims ARM puts in the event of a write by a managed identity (no UPN; appid, object ID, tenant)."""
    return {"appid": client_id, OID: object_id_of(client_id), TID: TENANT_ID, "idtyp": "app",
            "ipaddr": "203.0.113.77", **extra}


def test_own_write_event_costs_nothing_and_stays_quiet(responder, azurite_env, local_azure, caplog):
    """Issue 16 item 2: the event of the responder's own PATCH: 0 ARM requests, no row, no alert, a debug line.
    A system-assigned identity is known from the claims of the token the process obtained for its first read."""
    reg = rid("acrdrift02")
    local_azure.arm.create(SUB, RG, "acrdrift02", export="enabled", public="Disabled")
    fresh_instance()
    handle_event(event(reg))
    assert responder.actions() == [("remediated", "-")]
    ours = local_azure.arm.write_correlation(reg)         # ARM puts our PATCH's correlation ID in its event
    local_azure.arm.log.reset()
    teams_before = len(local_azure.teams.messages)
    caplog.set_level(logging.DEBUG, logger="dlp.own_writes")
    assert handlers.on_event(event(reg, event_id="ev-own", claims=own_claims(), correlation=ours)) == []
    assert arm_requests(local_azure) == []
    assert responder.actions() == [("remediated", "-")]                 # no evaluation recorded
    assert len(local_azure.teams.messages) == teams_before
    assert any(r.levelno == logging.DEBUG and "own write" in r.getMessage() and "ev-own" in r.getMessage()
               for r in caplog.records)


def test_a_user_assigned_identity_is_known_before_any_token(responder, azurite_env, local_azure, monkeypatch):
    """AZURE_CLIENT_ID names the identity: another instance, which has made no request yet, skips the event of
    the write the first instance made (the breaker row that proves it is in the shared Table storage)."""
    client_id = "5a5a5a5a-1b1b-4c4c-8d8d-9e9e9e9e9e9e"
    monkeypatch.setenv("AZURE_CLIENT_ID", client_id)
    reg = rid("acrdrift03")
    local_azure.arm.create(SUB, RG, "acrdrift03", export="enabled", public="Disabled")
    fresh_instance()
    handle_event(event(reg))
    ours = local_azure.arm.write_correlation(reg)
    fresh_instance()
    local_azure.arm.log.reset()
    handle_event(event(reg, event_id="ev-own", claims=own_claims(client_id.upper()), correlation=ours))
    assert arm_requests(local_azure) == [] and responder.actions() == [("remediated", "-")]


@pytest.mark.parametrize("disguise", ["display-name", "upn", "caller-text", "other-tenant", "not-a-guid"])
def test_free_text_cannot_make_a_write_look_like_our_own(responder, azurite_env, local_azure, disguise):
    """An attacker controls their display name, not the signed claims: only appid/azp and the object ID count,
    and only in our tenant."""
    ours = own_claims()
    claims = {"display-name": {"name": SYSTEM_CLIENT_ID, "appid": "0badc0de-0000-4000-8000-000000000001"},
              "upn": {UPN: f"app:{SYSTEM_CLIENT_ID}", "name": f"object:{ours[OID]}"},
              "caller-text": {"name": "dlp-responder", "unique_name": SYSTEM_CLIENT_ID, "oid": "not-ours"},
              "other-tenant": {**ours, TID: "0badc0de-0000-4000-8000-00000000beef"},
              "not-a-guid": {"appid": f"{SYSTEM_CLIENT_ID}0", OID: f"object:{ours[OID]}"}}[disguise]
    name = f"acrdisg{disguise.replace('-', '')[:10]}"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    fresh_instance()
    handle_event(event(reg, event_id="ev-0"))          # our write (a breaker row) and a token: we know who we are
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")    # then the attacker's write
    local_azure.arm.log.reset()
    handle_event(event(reg, event_id="ev-attacker", claims=claims))
    assert responder.actions() == [("remediated", "-"), ("remediated", "-")]
    # evaluated (re-read under the lease: written within the breaker's hour) and reverted
    assert [r.method for r in arm_requests(local_azure)] == ["GET", "GET", "PATCH"]


def test_our_identity_without_our_record_is_evaluated(responder, azurite_env, local_azure, caplog):
    """A user-assigned identity can be attached to other resources by a Contributor: a write by our identity
    that the responder never made (no breaker row) is evaluated, reverted and alerted like any other."""
    reg = rid("acrborrow1")
    local_azure.arm.create(SUB, RG, "acrborrow1", export="disabled", public="Disabled")
    fresh_instance()
    handle_event(event(reg, event_id="ev-0"))
    local_azure.arm.create(SUB, RG, "acrborrow1", export="enabled", public="Disabled")
    caplog.set_level(logging.WARNING, logger="dlp.own_writes")
    handle_event(event(reg, event_id="ev-borrowed", claims=own_claims()))
    assert responder.actions() == [("none", "-"), ("remediated", "-")]
    assert any("not one of its own writes" in r.getMessage() for r in caplog.records)


def test_our_identity_borrowed_right_after_our_fix_is_still_evaluated(responder, azurite_env, local_azure):
    """The attack the correlation ID closes: a Contributor attaches the responder's user-assigned identity to their
    own VM, waits for a fix (a fresh breaker row of ours), and re-opens the registry as that identity within
    minutes. Their write carries its own correlation ID, not the one our PATCH sent: it is evaluated and reverted."""
    reg = rid("acrborrow2")
    local_azure.arm.create(SUB, RG, "acrborrow2", export="enabled", public="Disabled")
    fresh_instance()
    handle_event(event(reg, event_id="ev-0"))
    ours = local_azure.arm.write_correlation(reg)
    local_azure.arm.create(SUB, RG, "acrborrow2", export="enabled", public="Disabled")     # re-opened, as us
    handle_event(event(reg, event_id="ev-borrowed", claims=own_claims(), correlation="attacker-" + ours[:8]))
    assert responder.actions() == [("remediated", "-"), ("remediated", "-")]
    assert len(patches(local_azure)) == 2


@pytest.mark.parametrize("child", ["exportPipelines/nightly", "privateEndpointConnections/pe1.conn", "replications/westus"])
def test_child_resource_events_evaluate_the_parent(responder, azurite_env, local_azure, child):
    reg = rid("acrchild01")
    local_azure.arm.create(SUB, RG, "acrchild01", export="disabled", public="Disabled")
    fresh_instance()
    kind = "Microsoft.ContainerRegistry/registries/" + child.split("/")[0] + "/write"
    handle_event(event(reg, subject=f"{reg}/{child}", operation=kind))
    (get,) = arm_requests(local_azure)
    assert get.path.lower() == reg.lower()


def test_deleted_registry_is_recorded_as_gone(responder, azurite_env, local_azure):
    reg = rid("acrgone01")
    fresh_instance()
    handle_event(event(reg, kind="Microsoft.Resources.ResourceDeleteSuccess",
                       operation="Microsoft.ContainerRegistry/registries/delete"))
    assert responder.actions() == [("gone", "deleted")]


@pytest.mark.parametrize(("kind", "operation", "subject"), [
    ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.ContainerRegistry/registries/scheduleRun/action", None),
    ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Storage/storageAccounts/write",
     f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/st01"),
    ("Microsoft.Resources.ResourceWriteFailure", "Microsoft.ContainerRegistry/registries/write", None),
])
def test_irrelevant_events_cost_no_arm_call(responder, azurite_env, local_azure, kind, operation, subject):
    fresh_instance()
    handle_event(event(rid("acrxxxxx01"), kind=kind, operation=operation, subject=subject))
    assert arm_requests(local_azure) == [] and responder.records == []


@pytest.mark.parametrize("data", [None, "not an object", [1, 2], {"operationName": 7}])
def test_malformed_events_are_acknowledged(responder, azurite_env, local_azure, data, caplog):
    fresh_instance()
    bad = func.EventGridEvent(id="bad-ev", data=data, topic="t", subject=rid("acrxxxxx01"),
                              event_type="Microsoft.Resources.ResourceWriteSuccess", event_time=None, data_version="1")
    with caplog.at_level(logging.WARNING, logger="dlp.handlers"):
        handle_event(bad)                                # no exception: Event Grid must not retry it
    assert arm_requests(local_azure) == []
    assert any("bad-ev" in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records)


# --- audit vs enforce ------------------------------------------------------------------------------


def test_audit_mode_reports_and_never_writes(responder, azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "audit")
    reg = rid("acraudit01")
    local_azure.arm.create(SUB, RG, "acraudit01", export="enabled", public="Enabled")
    fresh_instance()
    handle_event(event(reg))
    assert patches(local_azure) == []
    assert responder.actions() == [("would-remediate", "audit-mode")]
    assert state(local_azure, reg) == ("enabled", "Enabled")


# --- guards --------------------------------------------------------------------------------------


def test_guard_out_of_scope(responder, azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB2}")
    local_azure.arm.create(SUB, RG, "acrscope01", export="enabled")
    fresh_instance()
    handle_event(event(rid("acrscope01")))
    assert responder.actions() == []                          # silent: a debug line only (tests/test_adversarial.py)
    assert arm_requests(local_azure) == []                    # not even read


def test_guard_exemption_list(responder, azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_EXEMPTIONS", f"/subscriptions/{SUB}/resourceGroups/{RG}@2999-01-01")
    local_azure.arm.create(SUB, RG, "acrexempt01", export="enabled")
    fresh_instance()
    handle_event(event(rid("acrexempt01")))
    assert patches(local_azure) == [] and responder.actions() == [("exempt", "exemption")]


def test_guard_tag_exemption_only_when_configured(responder, azurite_env, local_azure, monkeypatch):
    local_azure.arm.create(SUB, RG, "acrtagged01", export="enabled", tags={"dlp-exempt": "true"})
    fresh_instance()
    handle_event(event(rid("acrtagged01")))
    assert responder.actions() == [("remediated", "-")]           # the tag means nothing by default

    local_azure.arm.create(SUB, RG, "acrtagged02", export="enabled", tags={"DLP-Exempt": "true"})
    monkeypatch.setenv("DLP_EXEMPT_TAG", "dlp-exempt")
    fresh_instance()
    handle_event(event(rid("acrtagged02")))
    assert responder.actions()[-1] == ("exempt", "tag-exemption")
    assert state(local_azure, rid("acrtagged02"))[0] == "enabled"


def test_guard_not_premium(responder, azurite_env, local_azure):
    local_azure.arm.create(SUB, RG, "acrbasic01", sku="Basic", export=None, public="Enabled", private_endpoints=())
    fresh_instance()
    handle_event(event(rid("acrbasic01")))
    assert patches(local_azure) == [] and responder.actions() == [("blocked", "not-premium")]


EXPORT_ONLY = {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}
BOTH = {"properties": {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}}}}
PUBLIC_ONLY = {"properties": {"publicNetworkAccess": "Disabled"}}


def test_guard_export_pipelines_are_listed_after_the_refusal_and_never_deleted(responder, azurite_env, local_azure):
    reg = rid("acrpipes01")
    local_azure.arm.create(SUB, RG, "acrpipes01", export="enabled", public="Disabled", pipelines=["nightly-export"])
    fresh_instance()
    (evaluation,) = handlers.on_event(event(reg))
    assert patches(local_azure) == [EXPORT_ONLY] and responder.actions() == [("blocked", "export-pipelines")]
    # optimistic write refused, then the pipelines listed once; nothing else to write
    assert [(r.method, "exportpipelines" in r.path.lower()) for r in arm_requests(local_azure)] == [
        ("GET", False), ("PATCH", False), ("GET", True)]
    assert "nightly-export" in evaluation.outcome.detail and evaluation.outcome.applied == ()
    assert local_azure.arm.pipelines(reg)                     # still there
    assert not local_azure.arm.log.filter(method="DELETE")


@pytest.mark.parametrize("refusal", [{"status": 400, "code": "BadRequest"},
                                     {"status": 409, "code": "ExportPipelinesExist"},
                                     {"status": 400, "code": "OperationNotAllowed", "lro": True}],
                         ids=["400", "409", "lro-failed"])
def test_export_pipelines_block_only_the_export_write(responder, azurite_env, local_azure, refusal):
    """Issue 11 item 3: public access is still closed in the same invocation; only the export part is blocked,
    whatever status or code ARM refuses with (it is not documented: the emulator's is configurable)."""
    from dlp.emulator.arm import ExportRefusal

    name = f"acrpipes{refusal['status']}{'l' if refusal.get('lro') else 's'}"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Enabled", pipelines=["to-partner"])
    local_azure.arm.export_refusal = ExportRefusal(**refusal)
    fresh_instance()
    (evaluation,) = handlers.on_event(event(reg))
    assert patches(local_azure) == [BOTH, PUBLIC_ONLY]
    assert state(local_azure, reg) == ("enabled", "Disabled")
    assert responder.actions() == [("blocked", "export-pipelines")]
    remediation = evaluation.to_json()["remediation"]
    assert remediation["applied"] == [{"property": "publicNetworkAccess", "old": "Enabled", "new": "Disabled"}]
    assert [c["property"] for c in remediation["changes"]] == ["publicNetworkAccess", "policies.exportPolicy.status"]
    assert "reverted publicNetworkAccess" in remediation["detail"] and "to-partner" in remediation["detail"]
    listings = [r for r in arm_requests(local_azure, "GET") if "exportpipelines" in r.path.lower()]
    assert len(listings) == 1
    assert local_azure.arm.pipelines(reg) and not local_azure.arm.log.filter(method="DELETE")


def test_a_listing_that_fails_for_now_after_the_refusal_is_deferred(responder, azurite_env, local_azure, azurite):
    """Nothing was written (ARM refused the PATCH): the durable retry plans again from a fresh read."""
    reg = rid("acrpipes503")
    local_azure.arm.create(SUB, RG, "acrpipes503", export="enabled", public="Enabled", pipelines=["nightly"])
    local_azure.arm.faults.add(method="GET", path=r"exportPipelines", status=503, times=None)
    fresh_instance()
    (evaluation,) = handlers.on_event(event(reg))
    assert evaluation.outcome.action == "deferred" and evaluation.outcome.changes == ()
    assert patches(local_azure) == [BOTH] and state(local_azure, reg) == ("enabled", "Enabled")
    local_azure.arm.faults.clear()
    mine = [(m, body) for m, body in _retry_messages(azurite) if body["registryId"] == reg]
    assert len(mine) == 1 and mine[0][1]["pending"] == []
    _replay(mine)
    QueueClient.from_connection_string(azurite, RETRY_QUEUE).delete_message(mine[0][0])
    assert responder.actions()[-1] == ("blocked", "export-pipelines")
    assert state(local_azure, reg) == ("enabled", "Disabled")


def test_a_refusal_without_pipelines_is_handled_as_before(responder, azurite_env, local_azure):
    reg = rid("acrrefuse1")
    local_azure.arm.create(SUB, RG, "acrrefuse1", export="enabled", public="Disabled")
    local_azure.arm.faults.add(method="PATCH", status=400, times=1,
                               body=arm_error("InvalidRequestContent", "something else is wrong"))
    fresh_instance()
    handle_event(event(reg))
    assert responder.actions() == [("failed", "InvalidRequestContent")]
    assert [r.method for r in arm_requests(local_azure)] == ["GET", "PATCH", "GET"]     # listed once: none
    assert state(local_azure, reg) == ("enabled", "Disabled")


def test_guard_no_approved_private_endpoint(responder, azurite_env, local_azure):
    local_azure.arm.create(SUB, RG, "acrnope01", export="disabled", public="Enabled",
                           private_endpoints=[("pe1", "Pending")])
    fresh_instance()
    handle_event(event(rid("acrnope01")))
    assert patches(local_azure) == [] and responder.actions() == [("blocked", "no-private-endpoint")]


def test_allow_lockout_setting_lets_the_write_through(responder, azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_ALLOW_LOCKOUT", "true")
    local_azure.arm.create(SUB, RG, "acrnope02", export="disabled", public="Enabled", private_endpoints=[])
    fresh_instance()
    handle_event(event(rid("acrnope02")))
    assert patches(local_azure) == [{"properties": {"publicNetworkAccess": "Disabled"}}]


def test_breaker_trips_after_n_reverts_and_holds_across_instances(responder, azurite_env, local_azure, monkeypatch,
                                                                  azurite):
    monkeypatch.setenv("DLP_MAX_REMEDIATIONS", "2")
    reg = rid("acrfight01")
    local_azure.arm.create(SUB, RG, "acrfight01", export="enabled")
    requests = []
    for round_ in range(3):
        fresh_instance()                      # each revert handled by another instance; only storage is shared
        local_azure.arm.add({**local_azure.arm.get(reg), "properties": {
            **local_azure.arm.get(reg)["properties"], "policies": {"exportPolicy": {"status": "enabled"}}}})
        local_azure.arm.log.reset()
        handle_event(event(reg, caller=f"pipeline-{round_}", event_id=f"ev-{round_}"))
        requests.append([r.method for r in arm_requests(local_azure)])
    assert responder.actions() == [("remediated", "-"), ("remediated", "-"), ("blocked", "revert-war")]
    assert local_azure.arm.log.count(method="PATCH") == 0 and requests[0] == ["GET", "PATCH"]
    # written earlier in the hour: re-read under the lease before writing again (another instance's write
    # may have landed after our first read)
    assert requests[1] == ["GET", "GET", "PATCH"]
    assert state(local_azure, reg)[0] == "enabled"
    # the re-check when the breaker's window ends is on the durable-retry queue (tests/test_escalation.py runs it)
    ((message, body),) = [(m, b) for m, b in _retry_messages(azurite) if b["registryId"] == reg]
    assert (body["registryId"], body["attempt"], body["enforce"], body["context"]["trigger"]) == (reg, 0, True, "retry")
    QueueClient.from_connection_string(azurite, RETRY_QUEUE).delete_message(message)


# --- LRO, retries, errors ------------------------------------------------------------------------


def test_async_lro_is_polled_until_done(responder, azurite_env, local_azure):
    reg = rid("acrasync01")
    local_azure.arm.create(SUB, RG, "acrasync01", export="enabled")
    local_azure.arm.set_lro(reg, mode="async", polls=2, retry_after=None)
    fresh_instance()
    handle_event(event(reg))
    assert responder.actions() == [("remediated", "-")]
    assert state(local_azure, reg)[0] == "disabled"
    polls = local_azure.arm.log.filter(service="arm-op")
    assert len(polls) == 3            # InProgress twice, then Succeeded: only the polls the service asked for
    final_get = arm_requests(local_azure)[-1]
    assert final_get.method == "GET" and final_get.service == "arm"   # the LRO's final read is the verification


def test_429_with_retry_after_is_retried(responder, azurite_env, local_azure):
    reg = rid("acrthrot01")
    local_azure.arm.create(SUB, RG, "acrthrot01", export="enabled")
    local_azure.arm.faults.add(method="PATCH", status=429, headers={"Retry-After": "1"},
                               body=arm_error("TooManyRequests", "slow down"))
    local_azure.arm.faults.add(method="GET", path=r"registries/acrthrot01$", status=429, headers={"Retry-After": "1"},
                               body=arm_error("TooManyRequests", "slow down"))
    fresh_instance()
    started = time.monotonic()
    handle_event(event(reg))
    assert responder.actions() == [("remediated", "-")]
    assert len(local_azure.arm.log.filter(method="PATCH")) == 2
    assert time.monotonic() - started >= 1.9        # both Retry-After waits were honoured


def test_persistent_5xx_is_answered_in_budget_then_fixed_by_the_durable_retry(responder, azurite_env, local_azure,
                                                                              azurite):
    reg = rid("acrflaky01")
    local_azure.arm.create(SUB, RG, "acrflaky01", export="enabled")
    fault = local_azure.arm.faults.add(method="GET", status=503, times=None,
                                       body=arm_error("ServiceUnavailable", "try later"))
    fresh_instance()
    started = time.monotonic()
    handle_event(event(reg))                        # must return (acknowledge) within the budget
    assert time.monotonic() - started < 5 + 1
    assert fault.hits >= 2
    (action, reason), = responder.actions()
    assert action == "deferred" and reason in ("BudgetExhausted", "ServiceUnavailable")

    local_azure.arm.faults.clear()
    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    (message,) = [m for m in queue.receive_messages(max_messages=32) if not _exposure_check(m)]
    body = base64.b64decode(message.content).decode()
    assert json.loads(body)["registryId"] == reg and json.loads(body)["attempt"] == 1
    handle_retry(func.QueueMessage(id=message.id, body=body.encode(), pop_receipt=message.pop_receipt))
    assert responder.actions()[-1] == ("remediated", "-")
    assert state(local_azure, reg)[0] == "disabled"


@pytest.mark.parametrize("code", ["AuthorizationFailed", "RequestDisallowedByPolicy"])
def test_403_on_patch_is_recorded_with_its_code_not_retried(responder, azurite_env, local_azure, code):
    local_azure.arm.create(SUB, RG, "acrdeny01", export="enabled")
    local_azure.arm.faults.add(method="PATCH", status=403, times=None, body=arm_error(code, "denied"))
    fresh_instance()
    handle_event(event(rid("acrdeny01")))
    assert responder.actions() == [("error", code)]          # issue 3: 403 is an error outcome with its code
    assert len(local_azure.arm.log.filter(method="PATCH")) == 1


def test_403_on_read_is_an_evaluation_error(responder, azurite_env, local_azure):
    local_azure.arm.create(SUB, RG, "acrdeny02", export="enabled")
    local_azure.arm.faults.add(method="GET", status=403, times=None, body=arm_error("AuthorizationFailed", "no read"))
    fresh_instance()
    handle_event(event(rid("acrdeny02")))
    assert responder.actions() == [("error", "AuthorizationFailed")]


def test_409_scope_locked_is_blocked(responder, azurite_env, local_azure):
    local_azure.arm.create(SUB, RG, "acrlocked01", export="enabled")
    local_azure.arm.faults.add(method="PATCH", status=409, times=None,
                               body=arm_error("ScopeLocked", "The scope cannot perform write operation because it is locked."))
    fresh_instance()
    handle_event(event(rid("acrlocked01")))
    assert responder.actions() == [("blocked", "scope-locked")]


def test_409_other_conflict_is_reread_once_and_replanned(responder, azurite_env, local_azure):
    reg = rid("acrconf01")
    local_azure.arm.create(SUB, RG, "acrconf01", export="enabled")
    local_azure.arm.faults.add(method="PATCH", status=409, times=1, body=arm_error("Conflict", "another operation"))
    fresh_instance()
    handle_event(event(reg))
    assert responder.actions() == [("remediated", "-")]
    assert [r.method for r in arm_requests(local_azure)].count("GET") >= 3     # the re-read happened
    assert len(local_azure.arm.log.filter(method="PATCH")) == 2
    # one remediation, one breaker row: a 409 someone provokes must not trip the breaker twice as fast
    services = runtime.services()
    assert len(services.state.recent_remediations(reg, dt.datetime.now(dt.timezone.utc))) == 1


def test_updating_registry_is_reread_before_any_write(responder, azurite_env, local_azure):
    reg = rid("acrupd01")
    local_azure.arm.create(SUB, RG, "acrupd01", export="enabled", provisioningState="Updating")
    fresh_instance()

    def finish_update():
        time.sleep(1.2)
        current = local_azure.arm.get(reg)
        local_azure.arm.add({**current, "properties": {**current["properties"], "provisioningState": "Succeeded"}})

    import threading
    worker = threading.Thread(target=finish_update)
    worker.start()
    handle_event(event(reg))
    worker.join()
    assert responder.actions() == [("remediated", "-")]
    gets = [r for r in arm_requests(local_azure, "GET") if r.path.lower() == reg.lower()]
    assert len(gets) >= 2


# --- regressions from the safety review ------------------------------------------------------------


def _exposure_check(message) -> bool:
    """Delayed exposure checks (dlp/responder/timeline.py) of earlier tests' compliant events share the queue: not ours here."""
    return json.loads(base64.b64decode(message.content).decode()).get("kind") == "exposure-check"


def _retry_messages(azurite):
    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    return [(m, json.loads(base64.b64decode(m.content).decode())) for m in queue.receive_messages(max_messages=32)
            if not _exposure_check(m)]


def _replay(messages):
    for message, body in messages:
        handle_retry(func.QueueMessage(id=message.id, body=json.dumps(body).encode(), pop_receipt=message.pop_receipt))


def test_hanging_arm_is_handed_over_within_the_budget(responder, azurite_env, local_azure, azurite, monkeypatch):
    """Each retry of a hanging call gets only what is left (a per-send timeout allowed two full ones)."""
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "6")
    reg = rid("acrhang01")
    local_azure.arm.create(SUB, RG, "acrhang01", export="enabled")
    local_azure.arm.faults.add(method="GET", mode="hang", times=None)
    fresh_instance()
    started = time.monotonic()
    handle_event(event(reg))                                   # returns: no exception for Event Grid
    assert time.monotonic() - started < 6 + 1
    assert responder.actions()[0][0] == "deferred"
    ((_, body),) = _retry_messages(azurite)
    assert body["registryId"] == reg


def test_a_patch_answered_too_late_is_counted_and_verified_later(responder, azurite_env, local_azure, azurite,
                                                                 monkeypatch):
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "4")
    reg = rid("acrslow01")
    local_azure.arm.create(SUB, RG, "acrslow01", export="enabled", public="Disabled")
    local_azure.arm.faults.add(method="PATCH", status=200, delay=4.0, mode="respond", times=1,
                               body=local_azure.arm.get(reg))
    services = fresh_instance()
    handle_event(event(reg))
    assert responder.actions()[0][0] == "deferred"
    from datetime import datetime, timezone
    assert len(services.state.recent_remediations(reg, datetime.now(timezone.utc))) == 1   # counted before the PATCH
    messages = _retry_messages(azurite)
    assert messages[0][1]["pending"] == [{"property": "policies.exportPolicy.status", "old": "enabled",
                                          "new": "disabled"}]
    # the write may or may not have landed; here it did not: the retry plans again and writes
    _replay(messages)
    assert responder.actions()[-1] == ("remediated", "-")
    assert state(local_azure, reg)[0] == "disabled"


def test_a_write_that_landed_is_reported_remediated_by_the_retry(responder, azurite_env, local_azure, azurite,
                                                                 monkeypatch):
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "4")
    reg = rid("acrslow02")
    local_azure.arm.create(SUB, RG, "acrslow02", export="enabled")
    local_azure.arm.set_lro(reg, mode="async", polls=30, retry_after=None)      # ~30 s: longer than the budget
    fresh_instance()
    started = time.monotonic()
    handle_event(event(reg))
    assert time.monotonic() - started < 4 + 1
    assert responder.actions() == [("deferred", "lro-pending")]
    local_azure.arm.complete_operations()
    _replay(_retry_messages(azurite))
    assert responder.actions()[-1] == ("remediated", "verified-later")
    assert len(patches(local_azure)) == 1


def test_a_failed_long_running_operation_is_failed_not_retried(responder, azurite_env, local_azure, azurite):
    reg = rid("acrlrofail1")
    local_azure.arm.create(SUB, RG, "acrlrofail1", export="enabled")
    local_azure.arm.set_lro(reg, mode="async", polls=1, retry_after=None, outcome="Failed")
    fresh_instance()
    handle_event(event(reg))
    ((action, _reason),) = responder.actions()
    assert action == "failed"
    assert _retry_messages(azurite) == []


def test_a_plan_only_recheck_stays_plan_only_on_the_durable_retry(responder, azurite_env, local_azure, azurite):
    from dlp.domain.model import Context, Target
    from dlp.responder import pipeline

    reg = rid("acrplan01")
    local_azure.arm.create(SUB, RG, "acrplan01", export="enabled")
    local_azure.arm.faults.add(method="GET", status=503, times=None, body=arm_error("ServiceUnavailable", "later"))
    services = fresh_instance()                                 # DLP_MODE=enforce
    (evaluation,) = pipeline.run([Target(reg, Context(trigger="http"))], services, enforce=False)
    assert evaluation.outcome.action == "deferred"
    local_azure.arm.faults.clear()
    messages = _retry_messages(azurite)
    assert messages[0][1]["enforce"] is False
    _replay(messages)
    assert responder.actions()[-1] == ("would-remediate", "audit-mode")
    assert patches(local_azure) == []


def test_refused_pipeline_listing_blocks_only_the_export_write(responder, azurite_env, local_azure):
    """Issue 11 item 3: ARM refuses the export write, then refuses to list the pipelines: public access is
    still closed, the export part is reported `export-pipelines-unknown`."""
    reg = rid("acrnolist1")
    local_azure.arm.create(SUB, RG, "acrnolist1", export="enabled", public="Enabled", pipelines=["hidden"])
    local_azure.arm.faults.add(method="GET", path=r"exportPipelines", status=403, times=None,
                               body=arm_error("AuthorizationFailed", "no exportPipelines/read"))
    fresh_instance()
    handle_event(event(reg))
    assert responder.actions() == [("blocked", "export-pipelines-unknown")]
    assert patches(local_azure) == [BOTH, PUBLIC_ONLY]
    assert state(local_azure, reg) == ("enabled", "Disabled")


def test_lease_is_released_even_when_the_budget_is_spent(responder, azurite_env, local_azure, azurite, monkeypatch):
    from azure.data.tables import TableServiceClient

    from dlp.azure.state import LEASE_ROW, partition_of

    monkeypatch.setenv("DLP_TIME_BUDGET_S", "4")
    reg = rid("acrslow03")
    local_azure.arm.create(SUB, RG, "acrslow03", export="enabled")
    local_azure.arm.faults.add(method="PATCH", mode="hang", times=1)
    fresh_instance()
    handle_event(event(reg))
    table = TableServiceClient.from_connection_string(azurite).get_table_client("dlpstate")
    leases = [e for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": partition_of(reg)})
              if e["RowKey"] == LEASE_ROW]
    assert leases == []


def test_a_hanging_identity_endpoint_is_bounded_by_the_budget(responder, azurite_env, local_azure, azurite,
                                                              monkeypatch):
    """Cold start (no cached token) while the managed-identity endpoint hangs: still handed over in budget."""
    from dlp.azure import credential

    monkeypatch.setenv("DLP_TIME_BUDGET_S", "6")
    reg = rid("acrnotoken1")
    local_azure.arm.create(SUB, RG, "acrnotoken1", export="enabled")
    credential.reset()
    local_azure.identity.faults.add(mode="hang", times=None)
    try:
        fresh_instance()
        started = time.monotonic()
        handle_event(event(reg))
        assert time.monotonic() - started < 6 + 1.5
        assert responder.actions()[0][0] == "deferred"
        assert arm_requests(local_azure) == []                 # nothing reached ARM without a token
        local_azure.identity.faults.clear()
        _replay(_retry_messages(azurite))
        assert responder.actions()[-1] == ("remediated", "-")
    finally:
        local_azure.identity.faults.clear()
        credential.reset()


# --- bursts ----------------------------------------------------------------------------------------


def _hold_first_read(azure, name):
    """The next GET of registry `name` is held in flight until the returned event is set."""
    import threading

    gate = threading.Event()
    azure.arm.faults.add(method="GET", path=rf"/registries/{name}$", mode="pass", gate=gate)
    return gate


def _until(condition, what):
    """Wait for a state the test itself brings about (never a timing assertion)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_a_burst_of_20_events_costs_two_reads_and_one_patch(responder, azurite_env, local_azure):
    """Issue 16 item 3: an event for a registry whose read is in flight waits for the next read that starts after
    it arrived (never the one in flight, which may predate its write): 20 events, 2 GETs, 1 PATCH."""
    from concurrent.futures import ThreadPoolExecutor

    name = "acrburst01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    services = fresh_instance()
    gate = _hold_first_read(local_azure, name)
    with ThreadPoolExecutor(max_workers=20) as pool:
        first = pool.submit(handlers.on_event, event(reg, event_id="ev-0", caller="first@contoso.com"))
        _until(lambda: local_azure.arm.log.count(method="GET") == 1, "the first read reached ARM")
        rest = [pool.submit(handlers.on_event, event(reg, event_id=f"ev-{i}", caller=f"deployer{i}@contoso.com"))
                for i in range(1, 20)]
        _until(lambda: services.bursts.waiting(reg) == 20, "all 20 events joined")
        gate.set()
        (leader,) = first.result(timeout=30)
        answers = [f.result(timeout=30) for f in rest]
    assert [r.method for r in arm_requests(local_azure)] == ["GET", "PATCH", "GET"]
    assert leader.outcome.action == "remediated" and leader.callers == ("first@contoso.com",)
    (second,) = answers[0]
    assert all(a == [second] for a in answers)                          # one evaluation answered the 19
    assert second.outcome.action == "none" and second.evaluation_id != leader.evaluation_id
    assert {c.event_id for c in (second.context, *second.answered)} == {f"ev-{i}" for i in range(1, 20)}
    assert len(second.callers) == 19
    assert responder.actions() == [("remediated", "-"), ("none", "-")]    # two evaluations recorded
    rows = [r for r in local_azure.logs.rows() if r["EvaluationId"] == second.evaluation_id]
    assert rows and all({a["eventId"] for a in r["AnsweredEvents"]} | {r["EventId"]} == {f"ev-{i}" for i in range(1, 20)}
                        for r in rows)


def test_events_that_arrive_before_the_read_share_the_write_and_the_alert_names_every_caller(
        responder, azurite_env, local_azure, monkeypatch):
    """Events waiting while the registry's previous read is in flight are answered together by the next read:
    one PATCH, one record listing every event, one alert naming every caller."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("DLP_TEAMS_WEBHOOK_URL", local_azure.teams.webhook_url())
    name = "acrburst02"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")
    services = fresh_instance()
    gate = _hold_first_read(local_azure, name)
    cards_before = len(local_azure.teams.messages)
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(handlers.on_event, event(reg, event_id="ev-tag", caller="tagger@contoso.com"))
        _until(lambda: local_azure.arm.log.count(method="GET") == 1, "the first read reached ARM")
        local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")      # written while it reads
        rest = [pool.submit(handlers.on_event, event(reg, event_id=f"ev-w{i}", caller=f"writer{i}@contoso.com"))
                for i in range(5)]
        _until(lambda: services.bursts.waiting(reg) == 6, "all 6 events joined")
        gate.set()
        first.result(timeout=30)
        answers = [f.result(timeout=30) for f in rest]
    (fixed,) = answers[0]
    assert fixed.outcome.action == "remediated" and all(a == [fixed] for a in answers)
    assert sorted(fixed.callers) == [f"writer{i}@contoso.com" for i in range(5)]     # not the tagger's
    assert local_azure.arm.log.count(method="PATCH") == 1
    cards = local_azure.teams.messages[cards_before:]
    assert len(cards) == 1
    text = json.dumps(cards[0])
    assert all(f"writer{i}@contoso.com" in text for i in range(5)) and "tagger@contoso.com" not in text


def test_a_lease_taken_during_the_read_and_lost_before_the_write_writes_nothing(responder, azurite_env, local_azure,
                                                                                 azurite, monkeypatch):
    """The lease is taken while ARM answers the read, for SPECULATIVE_TTL_S (so a reader that crashes blocks other
    writers briefly), and extended before the PATCH. If it expired and another instance took it meanwhile, this
    one writes nothing and hands the drift to the durable retry."""
    from concurrent.futures import ThreadPoolExecutor

    from dlp.azure.state import TableState, table_service
    from dlp.settings import load

    name = "acrlost01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "15")    # the held read outlasts the short lease, not the budget
    fresh_instance()
    gate = _hold_first_read(local_azure, name)
    other = TableState(table_service(load({"AzureWebJobsStorage": azurite}), None))     # a second instance
    with ThreadPoolExecutor(max_workers=1) as pool:
        mine = pool.submit(handlers.on_event, event(reg))
        _until(lambda: local_azure.arm.log.count(method="GET") == 1, "the read reached ARM")
        theirs = other.acquire(reg, ttl_s=30, wait_s=10)     # waits until the reader's short lease expires
        assert theirs is not None and theirs.waited
        gate.set()
        (evaluation,) = mine.result(timeout=30)
    other.release(theirs)
    assert evaluation.outcome.action == "deferred" and evaluation.outcome.reason == "lease-busy"
    assert patches(local_azure) == [] and state(local_azure, reg) == ("enabled", "Disabled")
    # the intent written beside the failed extension is resolved at once: nothing was written, nothing is pending
    (intent,) = other.remediations_since(reg, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5))
    assert intent.status == "not-applied"
    queued = [(m, body) for m, body in _retry_messages(azurite) if body["registryId"] == reg]
    assert len(queued) == 1 and queued[0][1]["pending"] == []
    QueueClient.from_connection_string(azurite, RETRY_QUEUE).delete_message(queued[0][0])


def test_the_lease_taken_during_the_read_is_extended_before_the_patch(responder, azurite_env, local_azure, azurite):
    """While the PATCH is in flight, the lease row holds for the rest of the budget, not the read's short term."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from azure.data.tables import TableServiceClient

    from dlp.azure.state import LEASE_ROW, partition_of
    from dlp.responder.lease import SPECULATIVE_TTL_S

    name = "acrlong01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    fresh_instance()
    gate = threading.Event()
    local_azure.arm.faults.add(method="PATCH", path=rf"/registries/{name}$", mode="pass", gate=gate)
    table = TableServiceClient.from_connection_string(azurite).get_table_client(STATE_TABLE)
    with ThreadPoolExecutor(max_workers=1) as pool:
        mine = pool.submit(handlers.on_event, event(reg))
        _until(lambda: local_azure.arm.log.count(method="PATCH") == 1, "the PATCH reached ARM")
        lease = table.get_entity(partition_of(reg), LEASE_ROW)
        assert float(lease["Expires"]) - time.time() > SPECULATIVE_TTL_S + 1
        gate.set()
        (evaluation,) = mine.result(timeout=30)
    assert evaluation.outcome.action == "remediated"
    assert not list(table.query_entities("PartitionKey eq @pk and RowKey eq @rk",
                                         parameters={"pk": partition_of(reg), "rk": LEASE_ROW}))   # given back
