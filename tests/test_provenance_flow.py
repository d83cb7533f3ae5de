"""Provenance through the real handlers: the Functions entry points, the SDK clients over HTTPS to the ARM, Resource
Graph, Log Analytics and Teams emulators, Azurite's tables and queues.

The attacker holds Contributor on the monitored subscription and reads its Activity Log, which shows the correlation
ID and caller of every write, the responder's own PATCHes included; they may also attach the responder's
user-assigned identity to a VM of theirs. Nothing they copy makes their write pass for the responder's.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import azure.functions as func
import pytest

from dlp import runtime
from dlp.settings import load
from tests.test_exposure_flow import (
    EXPORT_OFF,
    EXPORT_ON,
    RESPONDER,
    RG,
    SUB,
    UPN,
    cards,
    checks,
    exposure_rows,
    handle_event,
    instance,
    replay,
    rid,
    world,  # noqa: F401 (the fixture: enforce mode, the responder's user-assigned identity, Azurite)
)

OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID = "http://schemas.microsoft.com/identity/claims/tenantid"


def event(registry_id: str, event_id: str, *, caller: str = "", correlation: str = "", claims: dict | None = None,
          at: dt.datetime | None = None) -> func.EventGridEvent:
    """A ResourceWriteSuccess as ARM sends it: the caller's claims, the write's correlation ID, ARM's time."""
    data = {"claims": claims if claims is not None else {UPN: caller}, "correlationId": correlation or f"corr-{event_id}",
            "operationName": "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id,
            "status": "Succeeded", "subscriptionId": SUB}
    return func.EventGridEvent(id=event_id, data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=at or dt.datetime.now(dt.timezone.utc), data_version="2")


def ours() -> dict:
    """The claims of an event raised by a write of the responder's user-assigned identity."""
    from dlp.emulator.tokens import TENANT_ID, object_id_of

    return {"appid": RESPONDER, OID: object_id_of(RESPONDER), TID: TENANT_ID, "idtyp": "app"}


def exports(azure, registry_id: str) -> str:
    return azure.arm.get(registry_id)["properties"]["policies"]["exportPolicy"]["status"]


def remediate(azure, name: str, caller: str = "eve@contoso.com") -> tuple[str, str]:
    """A drift the responder reverts; returns the registry ID and the correlation ID its PATCH sent (which the
    Activity Log shows to anyone with Reader)."""
    registry_id = rid(name)
    azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    handle_event(event(registry_id, f"ev-drift-{name}", caller=caller))
    assert exports(azure, registry_id) == "disabled"
    return registry_id, azure.arm.write_correlation(registry_id)


def arm_reads(azure, registry_id: str) -> int:
    return azure.arm.log.count(service="arm", method="GET", path_contains=registry_id)


# --- a replayed correlation ID never hides a window ----------------------------------------------------------


def test_a_window_opened_and_closed_with_our_copied_correlation_id_is_recorded_and_alerted(world, azurite_env):
    """The reproduction: drift once so the responder reverts; copy its correlation ID from the Activity Log; within
    10 minutes enable exports, pull, and disable again, sending that correlation ID on both PATCHes. Change history
    shows a close carrying our correlation ID, but made by mallory, after our intent's time, and not the first
    change with that ID: one exposure row and one alert naming mallory."""
    instance()
    registry_id, correlation = remediate(world, "acrreplay01")
    world.arm.write(registry_id, EXPORT_ON, caller="mallory@contoso.com", correlation_id=correlation)
    time.sleep(0.3)                                                   # images copied out
    world.arm.write(registry_id, EXPORT_OFF, caller="mallory@contoso.com", correlation_id=correlation)
    handle_event(event(registry_id, "ev-on", caller="mallory@contoso.com", correlation=correlation))
    handle_event(event(registry_id, "ev-off", caller="mallory@contoso.com", correlation=correlation))
    replay(checks(azurite_env, registry_id))
    (row,) = exposure_rows(world, registry_id)
    assert row["ExposureOpenedBy"] == row["ExposureClosedBy"] == "mallory@contoso.com"
    assert 0.3 <= row["ExposureSeconds"] < 5
    assert sum("Registry was open for" in c and "mallory@contoso.com" in c for c in cards(world)) == 1


def test_our_identity_replaying_our_correlation_id_later_is_not_the_responder(world, azurite_env):
    """The same with the responder's user-assigned identity attached to the attacker's VM: its claims and
    `changedBy` are ours, the correlation ID is ours, but the close is outside the intent's time and not the first
    change carrying it. Recorded as a person's, and says whose identity it used."""
    instance()
    registry_id, correlation = remediate(world, "acrreplay02")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=3)
    world.arm.write(registry_id, EXPORT_ON, caller=RESPONDER, correlation_id=correlation, at=later)
    world.arm.write(registry_id, EXPORT_OFF, caller=RESPONDER, correlation_id=correlation,
                    at=later + dt.timedelta(seconds=1))
    handle_event(event(registry_id, "ev-borrowed", claims=ours(), correlation=correlation, at=later))
    replay(checks(azurite_env, registry_id))
    (row,) = exposure_rows(world, registry_id)
    assert row["ExposureClosedBy"].startswith(RESPONDER) and "not a write the responder made" in row["ExposureClosedBy"]


# --- the own-write skip is one-shot and bounded ---------------------------------------------------------------


def test_the_event_of_our_write_is_skipped_once_a_second_one_with_our_correlation_id_is_evaluated(world):
    instance()
    registry_id, correlation = remediate(world, "acrshot01")
    world.arm.log.reset()
    assert handle_event(event(registry_id, "ev-own", claims=ours(), correlation=correlation)) is None
    assert arm_reads(world, registry_id) == 0                          # our own write: not even read
    world.arm.write(registry_id, EXPORT_ON, caller=RESPONDER, correlation_id=correlation)   # the borrowed identity
    handle_event(event(registry_id, "ev-replay", claims=ours(), correlation=correlation))
    assert arm_reads(world, registry_id) >= 1 and exports(world, registry_id) == "disabled"   # read and reverted
    world.arm.log.reset()
    handle_event(event(registry_id, "ev-own", claims=ours(), correlation=correlation))   # our event, redelivered
    assert arm_reads(world, registry_id) == 0


def test_an_event_with_our_correlation_id_outside_the_intents_time_is_evaluated(world):
    instance()
    registry_id, correlation = remediate(world, "acrshot02")
    world.arm.log.reset()
    late = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)    # ARM's time of a write 10 minutes on
    handle_event(event(registry_id, "ev-late", claims=ours(), correlation=correlation, at=late))
    assert arm_reads(world, registry_id) == 1


def test_two_instances_racing_on_our_correlation_id_skip_at_most_one_event(world):
    """Our event and a replay of its correlation ID reach two instances at the same moment: the intent's one-shot
    mark is taken under its ETag, so one of them is evaluated (one read), never both skipped."""
    instance()
    registry_id, correlation = remediate(world, "acrshot03")
    first, second = (runtime.build(load(__import__("os").environ)) for _ in range(2))
    barrier = threading.Barrier(2)
    world.arm.log.reset()

    def handle(services, event_id: str) -> None:
        from dlp.responder import pipeline

        barrier.wait()
        pipeline.run(list(_targets(event(registry_id, event_id, claims=ours(), correlation=correlation))), services)

    threads = [threading.Thread(target=handle, args=(s, e)) for s, e in ((first, "ev-a"), (second, "ev-b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert arm_reads(world, registry_id) == 1


def _targets(item: func.EventGridEvent):
    from dlp.inputs import events

    return events.from_function_event(item).targets


# --- a window opened while the breaker holds names its opener -----------------------------------------------


def test_the_breakers_window_end_recheck_names_who_opened_the_window(world, azurite_env, monkeypatch):
    monkeypatch.setenv("DLP_MAX_REMEDIATIONS", "1")
    services = instance()
    registry_id, _ = remediate(world, "acrbreak01")
    world.arm.write(registry_id, EXPORT_ON, caller="mallory@contoso.com")
    handle_event(event(registry_id, "ev-again", caller="mallory@contoso.com"))
    assert exports(world, registry_id) == "enabled"                    # the breaker holds: not written
    recheck = _recheck_message(azurite_env, registry_id)
    services = instance()
    services.clock = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1, minutes=2)
    from tests.test_exposure_flow import handle_retry

    handle_retry(func.QueueMessage(id="m1", body=json.dumps(recheck).encode()))
    assert exports(world, registry_id) == "disabled"
    (row,) = {r["EvaluationId"]: r for r in world.logs.rows() if r["RegistryId"] == registry_id
              and r["Action"] == "remediated" and r["Trigger"] == "retry"}.values()
    assert row["ExposureOpenedBy"] == "mallory@contoso.com" and row["ExposureOpenedAt"]
    assert row["Caller"] == "mallory@contoso.com"         # the record and the alert name who opened it
    assert any("Drift remediated" in c and "change by mallory@contoso.com" in c for c in cards(world))


def _recheck_message(azurite: str, registry_id: str) -> dict:
    import base64

    from azure.storage.queue import QueueClient

    from dlp.settings import RETRY_QUEUE

    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    for message in queue.peek_messages(max_messages=32):
        body = json.loads(base64.b64decode(message.content))
        if body.get("registryId") == registry_id and "breaker" in body.get("reason", ""):
            return body
    for message in queue.receive_messages(max_messages=32, visibility_timeout=1):
        body = json.loads(base64.b64decode(message.content))
        if body.get("registryId") == registry_id and "breaker" in body.get("reason", ""):
            return body
    pytest.fail("no re-check was scheduled for the breaker's window end")
