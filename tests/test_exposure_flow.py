"""Exposure windows end to end: the Functions handlers, the real SDK clients over HTTPS to the ARM + Resource
Graph emulator (with its `resourcechanges` table), Log Analytics and Teams emulators, Azurite queues and tables.

A write event that finds the registry compliant puts a delayed check on the durable retry queue; replaying that
message records and alerts every closed window of the registry's change history, once, whichever path (the
check or the sweep) sees it first."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.azure import credential
from dlp.responder import timeline
from dlp.settings import RETRY_QUEUE

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-exp"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
RESPONDER = "5b1f0c2e-7a41-4d0e-9c3f-0000000e1a17"     # AZURE_CLIENT_ID of the responder's identity
EXPORT_ON = {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}}
EXPORT_OFF = {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}
OPEN_BOTH = {"properties": {"publicNetworkAccess": "Enabled", "policies": {"exportPolicy": {"status": "enabled"}}}}
ADMIN_ON = {"properties": {"adminUserEnabled": True}}
ADMIN_OFF = {"properties": {"adminUserEnabled": False}}

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()
handle_sweep = function_app.sweep.build().get_user_function()


def rid(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{name}"


@pytest.fixture
def world(azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/{RG}")
    monkeypatch.setenv("AZURE_CLIENT_ID", RESPONDER)
    for name in ("DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)
    credential.reset()          # the process's credential was built for another identity by an earlier test
    runtime.reset()
    runtime.services().state.set_exposure_cursor("")       # storage outlives a test: each starts as a first sweep
    yield local_azure
    runtime.reset()
    credential.reset()


def instance():
    """A fresh app instance whose delayed checks become visible at once."""
    runtime.reset()
    services = runtime.services()
    services.retry.check_delay_s = 0
    services.retry.base_delay_s = 0
    return services


def event(registry_id: str, caller: str, event_id: str):
    data = {"claims": {UPN: caller}, "correlationId": "corr-" + event_id, "operationName":
            "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id, "status": "Succeeded",
            "subscriptionId": SUB}
    return func.EventGridEvent(id=event_id, data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def checks(azurite: str, registry_id: str) -> list[tuple[object, dict]]:
    """This registry's delayed-check messages, taken off the queue (others are left to become visible again)."""
    from azure.core.exceptions import ResourceExistsError

    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    try:
        queue.create_queue()        # nothing sent yet in this test run: an empty queue, not an error
    except ResourceExistsError:
        pass
    found = []
    for message in queue.receive_messages(max_messages=32, visibility_timeout=1):
        body = json.loads(base64.b64decode(message.content).decode())
        if body.get("kind") == timeline.CHECK_KIND and body.get("registryId", "").lower() == registry_id.lower():
            found.append((message, body))
            queue.delete_message(message)       # replayed from its body below, as often as a test needs
    return found


def replay(messages) -> None:
    for message, body in messages:
        handle_retry(func.QueueMessage(id=message.id, body=json.dumps(body).encode(), pop_receipt=message.pop_receipt))


def exposure_rows(azure, registry_id: str) -> list[dict]:
    return [r for r in azure.logs.rows() if r["RegistryId"].lower() == registry_id.lower()
            and r["Action"] == "exposure"]


def cards(azure) -> list[str]:
    return [json.dumps(m) for m in azure.teams.messages]


def tick():
    handle_sweep(TimerRequest(past_due=False, schedule_status={"Last": "2026-11-30T12:00:00Z"}))


def test_flip_and_restore_within_a_second_is_recorded_and_alerted(world, azurite_env):
    reg = rid("acrflip01")
    world.arm.create(SUB, RG, "acrflip01", export="disabled", public="Disabled")
    world.arm.write(reg, EXPORT_ON, caller="mallory@contoso.com")
    time.sleep(0.3)
    world.arm.write(reg, EXPORT_OFF, caller="mallory@contoso.com")
    instance()
    handle_event(event(reg, "mallory@contoso.com", "ev-on"))
    handle_event(event(reg, "mallory@contoso.com", "ev-off"))
    assert not world.arm.log.filter(method="PATCH")            # compliant: nothing to write
    found = checks(azurite_env, reg)
    assert len(found) == 2                                       # one delayed check per event
    replay(found)
    (row,) = exposure_rows(world, reg)                           # the second check found it recorded
    assert row["RuleId"] == "DLP.ACR.ExportPolicy" and row["Status"] == "fail"
    assert 0.3 <= row["ExposureSeconds"] < 1.0
    assert row["ExposureOpenedBy"] == row["ExposureClosedBy"] == "mallory@contoso.com"
    assert row["ExposureOpenedAt"] < row["ExposureClosedAt"]
    assert row["Message"].startswith("Registry was open for 0.")
    assert "exports enabled by mallory@contoso.com" in row["Message"]
    posted = cards(world)
    assert sum("Registry was open for" in p for p in posted) == 1


def test_a_window_closed_with_the_responders_identity_but_not_by_the_responder_is_recorded(world, azurite_env):
    """Open as yourself, copy, close as the responder's user-assigned identity (attached to your own VM): change
    history says the responder closed it, but no write of the responder carries that correlation ID. The window is
    recorded and alerted, and the record says whose identity closed it."""
    reg = rid("acrborrw01")
    world.arm.create(SUB, RG, "acrborrw01", export="disabled", public="Disabled")
    world.arm.write(reg, EXPORT_ON, caller="mallory@contoso.com")
    time.sleep(0.2)
    world.arm.write(reg, EXPORT_OFF, caller=RESPONDER)
    instance()
    handle_event(event(reg, "mallory@contoso.com", "ev-borrow"))
    replay(checks(azurite_env, reg))
    (row,) = exposure_rows(world, reg)
    assert row["ExposureOpenedBy"] == "mallory@contoso.com"
    assert RESPONDER in row["ExposureClosedBy"] and "not a write the responder made" in row["ExposureClosedBy"]
    assert sum("Registry was open for" in p for p in cards(world)) == 1


def test_a_write_as_the_responders_identity_it_did_not_make_gets_the_check(world, azurite_env):
    """The responder's own writes are skipped before any evaluation (their correlation ID is the one its PATCH
    sent). An event that names its identity and is evaluated anyway is a write it did not make (someone attached
    its user-assigned identity elsewhere): it gets the flip-and-restore check like anyone's."""
    reg = rid("acrself01")
    world.arm.create(SUB, RG, "acrself01", export="disabled", public="Disabled")
    instance()
    handle_event(_own_event(reg))
    assert len(checks(azurite_env, reg)) == 1


def test_a_caller_named_like_the_responder_still_gets_the_check(world, azurite_env):
    """Only the app/object ID claims identify the responder: a UPN or display name that reads like its client ID
    (anyone can choose those) does not buy a write out of the flip-and-restore check."""
    reg = rid("acrself02")
    world.arm.create(SUB, RG, "acrself02", export="disabled", public="Disabled")
    instance()
    handle_event(event(reg, RESPONDER, "ev-lookalike"))
    assert len(checks(azurite_env, reg)) == 1


def _own_event(registry_id: str):
    data = {"claims": {"appid": RESPONDER}, "operationName": "Microsoft.ContainerRegistry/registries/write",
            "resourceUri": registry_id, "status": "Succeeded", "subscriptionId": SUB}
    return func.EventGridEvent(id="ev-own", data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def test_remediation_states_its_window_and_the_history_does_not_record_it_again(world, azurite_env):
    reg = rid("acrremed01")
    world.arm.create(SUB, RG, "acrremed01", export="disabled", public="Disabled")
    world.arm.write(reg, OPEN_BOTH, caller="eve@contoso.com")
    instance()
    handle_event(event(reg, "eve@contoso.com", "ev-pub"))
    (remediated,) = [r for r in world.logs.rows() if r["RegistryId"] == reg and r["Action"] == "remediated"
                     and r["RuleId"] == "DLP.ACR.PublicNetworkAccess"]
    assert remediated["ExposureClosedBy"] == "responder"
    assert remediated["ExposureOpenedBy"] == "eve@contoso.com"
    assert 0 <= remediated["ExposureSeconds"] < 30
    changes = world.arm.graph.changes.rows()
    assert changes[-1]["properties"]["changeAttributes"]["changedBy"] == RESPONDER   # the responder's own write
    alert = [p for p in cards(world) if "Drift remediated" in p]
    assert alert and "Registry was open for" in alert[-1]
    tick()                                                       # the sweep sees the window in the history
    assert exposure_rows(world, reg) == []                       # closed by the responder: its record says it


def test_event_path_and_sweep_record_a_window_once(world, azurite_env):
    reg = rid("acrboth01")
    world.arm.create(SUB, RG, "acrboth01", export="disabled", public="Disabled")
    world.arm.write(reg, ADMIN_ON, caller="alice@contoso.com")
    world.arm.write(reg, ADMIN_OFF, caller="bob@contoso.com")
    world.arm.write(reg, EXPORT_ON, caller="bob@contoso.com")
    world.arm.write(reg, EXPORT_OFF, caller="alice@contoso.com")
    instance()
    handle_event(event(reg, "alice@contoso.com", "ev-last"))
    replay(checks(azurite_env, reg))
    rows = exposure_rows(world, reg)
    assert sorted((r["RuleId"], r["ExposureOpenedBy"], r["ExposureClosedBy"]) for r in rows) == [
        ("DLP.ACR.AdminUser", "alice@contoso.com", "bob@contoso.com"),
        ("DLP.ACR.ExportPolicy", "bob@contoso.com", "alice@contoso.com")]
    tick()
    tick()
    assert len(exposure_rows(world, reg)) == 2                   # neither the sweep nor a second sweep adds rows


def test_sweep_records_a_window_no_event_reported(world, azurite_env):
    reg = rid("acrswept01")
    world.arm.create(SUB, RG, "acrswept01", export="disabled", public="Disabled")
    world.arm.write(reg, ADMIN_ON, caller="carol@contoso.com")
    world.arm.write(reg, ADMIN_OFF, caller="carol@contoso.com")
    instance()
    tick()
    (row,) = exposure_rows(world, reg)
    assert row["RuleId"] == "DLP.ACR.AdminUser" and row["Trigger"] == "sweep"
    assert any("Registry was open for" in p for p in cards(world))


def test_a_window_still_open_is_not_an_exposure_record(world, azurite_env):
    reg = rid("acropen01")
    world.arm.create(SUB, RG, "acropen01", export="disabled", public="Disabled")
    world.arm.write(reg, {"properties": {"anonymousPullEnabled": True}}, caller="dave@contoso.com")
    instance()
    handle_event(event(reg, "dave@contoso.com", "ev-open"))
    replay(checks(azurite_env, reg))
    assert exposure_rows(world, reg) == []                       # the registry's own evaluation reports it


def test_hostile_caller_text_is_cleaned_in_rows_and_alerts(world, azurite_env):
    reg = rid("acrevil01")
    hostile = "Admin\u202e\u200bgnp.exe\n<script>alert(1)</script>" + "\u0000" + "x" * 300
    world.arm.create(SUB, RG, "acrevil01", export="disabled", public="Disabled")
    world.arm.write(reg, EXPORT_ON, caller=hostile)
    world.arm.write(reg, EXPORT_OFF, caller=hostile)
    instance()
    handle_event(event(reg, "mallory@contoso.com", "ev-evil"))
    replay(checks(azurite_env, reg))
    (row,) = exposure_rows(world, reg)
    for text in (row["ExposureOpenedBy"], row["Message"]):
        assert "\u202e" not in text and "\u200b" not in text and "\n" not in text and "\u0000" not in text
    assert len(row["ExposureOpenedBy"]) <= 128
    posted = [p for p in cards(world) if "Registry was open" in p]
    assert posted and "\\u202e" not in posted[-1].lower() and "<script>" not in posted[-1]


class Crash(BaseException):
    """The process dying: not an Exception, so nothing in the app catches it."""


def test_crash_between_recording_and_alerting_alerts_once_and_records_one_evaluation(world, azurite_env):
    reg = rid("acrcrash01")
    world.arm.create(SUB, RG, "acrcrash01", export="disabled", public="Disabled")
    world.arm.write(reg, EXPORT_ON, caller="mallory@contoso.com")
    world.arm.write(reg, EXPORT_OFF, caller="mallory@contoso.com")
    services = instance()
    handle_event(event(reg, "mallory@contoso.com", "ev-crash"))
    found = checks(azurite_env, reg)
    real = services.notifier

    class Dying:
        def notify(self, evaluations, *, digest=False):
            raise Crash()

    services.notifier = Dying()
    with pytest.raises(Crash):
        replay(found)
    assert len(exposure_rows(world, reg)) == 1                   # recorded, not alerted
    assert not any("Registry was open" in p for p in cards(world))
    services.notifier = real                                     # the host delivers the message again
    replay(found)
    rows = exposure_rows(world, reg)
    assert len({(r["EvaluationId"], r["RuleId"]) for r in rows}) == 1     # the queries fold the repeat
    assert sum("Registry was open" in p for p in cards(world)) == 1
    replay(found)                                                # a third delivery: recorded and alerted already
    assert sum("Registry was open" in p for p in cards(world)) == 1


def change_queries(azure) -> list[dict]:
    return [r.json() for r in azure.arm.log.filter(service="graph-changes")]


def test_sweep_first_then_the_delayed_check_records_the_window_once(world, azurite_env):
    reg = rid("acrorder01")
    world.arm.create(SUB, RG, "acrorder01", export="disabled", public="Disabled")
    world.arm.write(reg, EXPORT_ON, caller="mallory@contoso.com")
    world.arm.write(reg, EXPORT_OFF, caller="mallory@contoso.com")
    instance()
    handle_event(event(reg, "mallory@contoso.com", "ev-order"))
    tick()
    assert len(exposure_rows(world, reg)) == 1
    queries = change_queries(world)
    assert queries and all(q["options"]["$top"] == 1000 for q in queries)
    replay(checks(azurite_env, reg))
    assert len(exposure_rows(world, reg)) == 1
    assert sum("Registry was open" in p for p in cards(world)) == 1


def test_sweep_gives_its_remediation_the_window_from_change_history(world, azurite_env):
    reg = rid("acrhist01")
    world.arm.create(SUB, RG, "acrhist01", export="disabled", public="Disabled")
    opened = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)
    world.arm.write(reg, EXPORT_ON, caller="frank@contoso.com", at=opened)
    instance()
    tick()
    (row,) = [r for r in world.logs.rows() if r["RegistryId"] == reg and r["Action"] == "remediated"
              and r["RuleId"] == "DLP.ACR.ExportPolicy"]
    assert row["ExposureOpenedBy"] == "frank@contoso.com" and row["ExposureClosedBy"] == "responder"
    assert row["ExposureOpenedAt"].startswith(opened.strftime("%Y-%m-%dT%H:%M:%S"))
    assert 1790 <= row["ExposureSeconds"] <= 1800 + 60


def test_a_history_that_cannot_be_read_costs_the_windows_not_the_sweep(world, azurite_env):
    reg = rid("acrdown01")
    world.arm.create(SUB, RG, "acrdown01", export="enabled", public="Disabled")
    world.arm.faults.add(method="POST", path="resourcegraph", status=400, times=1, service="graph-changes")
    instance()
    tick()
    assert [r["Action"] for r in world.logs.rows() if r["RegistryId"] == reg][:1] == ["remediated"]


def test_a_queue_that_cannot_take_the_check_costs_neither_the_event_nor_its_record(world, azurite_env, caplog):
    import re

    from dlp.azure.retryqueue import RetryQueue

    reg = rid("acrnoqueue1")
    world.arm.create(SUB, RG, "acrnoqueue1", export="disabled", public="Disabled")
    services = instance()
    dead = re.sub(r"QueueEndpoint=http://127\.0\.0\.1:\d+", "QueueEndpoint=http://127.0.0.1:9", azurite_env)
    services.retry = RetryQueue(QueueClient.from_connection_string(dead, RETRY_QUEUE, retry_total=0))
    services.retry.check_delay_s = 0
    started = time.monotonic()
    handle_event(event(reg, "mallory@contoso.com", "ev-noqueue"))      # no exception: Event Grid is answered
    assert time.monotonic() - started < 5
    assert [r["Action"] for r in world.logs.rows() if r["RegistryId"] == reg][:1] == ["none"]
    assert any("could not be queued" in r.getMessage() for r in caplog.records if r.name == "dlp.timeline")
