"""Event intake: both schemas, relevance, child resources, callers, malformed input. Pure, no I/O."""

from __future__ import annotations

import datetime as dt

import azure.functions as func
import pytest

from dlp.inputs import event_files, events

SUB = "11111111-2222-3333-4444-555555555555"
REG = f"/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.ContainerRegistry/registries/acrprod01"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"


def data(operation="Microsoft.ContainerRegistry/registries/write", resource=REG, claims=None, ip="203.0.113.7"):
    body = {
        "authorization": {"scope": resource, "action": operation, "evidence": {"role": "Contributor"}},
        "claims": claims if claims is not None else {UPN: "mallory@contoso.com", "name": "Mallory", "appid": "abc",
                                                     "ipaddr": "198.51.100.1"},
        "correlationId": "c0ffee00-0000-0000-0000-000000000001",
        "httpRequest": {"clientRequestId": "x", "clientIpAddress": ip, "method": "PATCH", "url": "https://..."},
        "resourceProvider": "Microsoft.ContainerRegistry", "resourceUri": resource, "operationName": operation,
        "status": "Succeeded", "subscriptionId": SUB, "tenantId": "t",
    }
    return body


def eg_event(event_type="Microsoft.Resources.ResourceWriteSuccess", subject=REG, body=None, event_id="ev-1"):
    return func.EventGridEvent(id=event_id, data=body if body is not None else data(resource=subject),
                               topic=f"/subscriptions/{SUB}", subject=subject, event_type=event_type,
                               event_time=dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc), data_version="2")


def cloud_event(event_type="Microsoft.Resources.ResourceWriteSuccess", subject=REG, body=None):
    return func.CloudEvent(id="ce-1", source=f"/subscriptions/{SUB}", type=event_type, specversion="1.0",
                           time=dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc), subject=subject,
                           datacontenttype="application/json", dataschema=None,
                           data=body if body is not None else data(resource=subject))


@pytest.mark.parametrize("make", [eg_event, cloud_event], ids=["EventGridEvent", "CloudEvent"])
def test_write_success_in_both_schemas(make):
    intake = events.from_function_event(make())
    assert not intake.ignored and not intake.malformed
    (target,) = intake.targets
    assert target.registry_id == REG and not target.deleted
    assert target.context.caller == "mallory@contoso.com"
    assert target.context.caller_ip == "203.0.113.7"
    assert target.context.correlation_id == "c0ffee00-0000-0000-0000-000000000001"
    assert target.context.operation_name == "Microsoft.ContainerRegistry/registries/write"
    assert target.context.trigger == "event"
    assert target.context.event_time.startswith("2026-11-21T10:00")


def test_delete_of_the_registry_marks_it_deleted():
    intake = events.from_function_event(eg_event("Microsoft.Resources.ResourceDeleteSuccess",
                                                 body=data("Microsoft.ContainerRegistry/registries/delete")))
    assert intake.targets[0].deleted


@pytest.mark.parametrize("child", ["exportPipelines/nightly", "privateEndpointConnections/pe-1.abc",
                                   "replications/westus", "webhooks/hook1", "scopeMaps/_repositories_pull",
                                   "agentPools/pool1/listQueueStatus/x"])
@pytest.mark.parametrize("kind", ["Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Resources.ResourceDeleteSuccess"])
def test_child_resources_map_to_the_parent_registry(child, kind):
    subject = f"{REG}/{child}"
    operation = f"Microsoft.ContainerRegistry/registries/{child.split('/')[0]}/write"
    intake = events.from_function_event(eg_event(kind, subject, data(operation, subject)))
    (target,) = intake.targets
    assert target.registry_id == REG
    assert not target.deleted            # deleting a child re-evaluates the parent


def test_case_variants_of_ids_and_types():
    subject = REG.replace("resourceGroups", "resourcegroups")
    subject = subject.replace("Microsoft.ContainerRegistry", "microsoft.containerregistry")
    intake = events.from_function_event(eg_event("microsoft.resources.resourcewritesuccess", subject,
                                                 data("MICROSOFT.CONTAINERREGISTRY/REGISTRIES/WRITE", subject)))
    assert intake.targets and intake.targets[0].registry_id.lower() == REG.lower()


@pytest.mark.parametrize(("event_type", "operation", "subject"), [
    ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.ContainerRegistry/registries/scheduleRun/action", REG),
    ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.ContainerRegistry/registries/scheduleRun/action", REG),
    ("Microsoft.Resources.ResourceWriteFailure", "Microsoft.ContainerRegistry/registries/write", REG),
    ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Storage/storageAccounts/write",
     f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"),
    ("Microsoft.Storage.BlobCreated", "", "/blobServices/default/containers/x"),
])
def test_irrelevant_events_are_ignored(event_type, operation, subject):
    intake = events.from_function_event(eg_event(event_type, subject, data(operation, subject)))
    assert intake.ignored and not intake.targets and not intake.malformed


@pytest.mark.parametrize("subject", [
    "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acrprod01",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/ab",        # too short
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr-prod",   # hyphen
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/" + "a" * 51,
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr01/../../x",
])
def test_subjects_that_look_like_registries_but_are_not(subject):
    intake = events.from_function_event(eg_event(subject=subject))
    assert not intake.targets
    assert intake.malformed or intake.ignored


@pytest.mark.parametrize("body", [None, "text", 42, [], {"operationName": 5}])
def test_malformed_data_is_reported_not_raised(body):
    event = func.EventGridEvent(id="bad-1", data=body, topic="t", subject=REG,
                                event_type="Microsoft.Resources.ResourceWriteSuccess", event_time=None, data_version="1")
    intake = events.from_function_event(event)
    assert intake.event_id == "bad-1"
    if body is None:
        assert intake.malformed
    else:
        assert intake.malformed and not intake.targets


def test_missing_event_type_is_malformed():
    intake = event_files.from_json({"id": "x", "subject": REG, "data": data()})
    assert intake.malformed == "event has no event type"


def test_object_that_is_not_an_event_at_all():
    assert events.from_function_event(object()).malformed
    assert event_files.from_json([1, 2]).malformed


def test_subject_falls_back_to_resource_uri():
    intake = events.intake("e", "Microsoft.Resources.ResourceWriteSuccess", None, data())
    assert intake.targets[0].registry_id == REG


XMLSOAP_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


@pytest.mark.parametrize(("claims", "expected", "display"), [
    ({UPN: "alice@contoso.com", "name": "Alice"}, "alice@contoso.com", "Alice"),
    # the free-text display name is never the identity, whatever it claims to be
    ({"name": "Security Team (approved)", "appid": "00000000-aaaa-bbbb-cccc-000000000000"},
     "app:00000000-aaaa-bbbb-cccc-000000000000", "Security Team (approved)"),
    ({"name": "Alice Example"}, "", "Alice Example"),
    ({"unique_name": "bob@contoso.com", "name": "alice@contoso.com"}, "bob@contoso.com", "alice@contoso.com"),
    ({XMLSOAP_NAME: "live.com#carol@example.com", "appid": "x"}, "live.com#carol@example.com", ""),
    ({"appid": "00000000-aaaa-bbbb-cccc-000000000000"}, "app:00000000-aaaa-bbbb-cccc-000000000000", ""),
    ({"azp": "11111111-aaaa-bbbb-cccc-000000000000"}, "app:11111111-aaaa-bbbb-cccc-000000000000", ""),
    ({OID: "oid-1"}, "object:oid-1", ""),
    ({UPN: "  \u200b\u202e ", "appid": "app-1"}, "app:app-1", ""),       # an "empty" UPN made of format characters
    ({}, "", ""),
])
def test_caller_precedence(claims, expected, display):
    caller = events.caller_of(data(claims=claims))
    assert (caller.name, caller.display_name) == (expected, display)


def test_object_app_and_tenant_ids_are_kept_whatever_the_name():
    claims = {UPN: "alice@contoso.com", OID: "0b1c", "appid": "c44b",
              "http://schemas.microsoft.com/identity/claims/tenantid": "72f9"}
    caller = events.caller_of(data(claims=claims))
    assert (caller.object_id, caller.app_id, caller.tenant_id) == ("0b1c", "c44b", "72f9")
    short = events.caller_of(data(claims={"oid": "o-2", "azp": "a-2", "tid": "t-2"}))
    assert (short.name, short.object_id, short.app_id, short.tenant_id) == ("app:a-2", "o-2", "a-2", "t-2")


def test_client_ip_falls_back_to_ipaddr_claim():
    body = data(ip="")
    assert events.caller_of(body).ip == "198.51.100.1"


def test_raw_json_both_schemas():
    eg = {"id": "1", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": REG, "data": data(),
          "eventTime": "2026-11-21T10:00:00Z", "topic": "t", "dataVersion": "2"}
    ce = {"id": "2", "type": "Microsoft.Resources.ResourceWriteSuccess", "subject": REG, "data": data(),
          "time": "2026-11-21T10:00:00Z", "source": "s", "specversion": "1.0"}
    assert event_files.from_json(eg).targets[0].registry_id == REG
    assert event_files.from_json(ce).targets[0].registry_id == REG
