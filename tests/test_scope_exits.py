"""Registries that leave the monitored scope (issue 22): deleted, moved away by a resource group's moveResources
action, or no longer listed by the sweep. Each alerts once, with who and when when an event says so, through the
Functions handlers against the emulators and Azurite.

The events are shaped as Event Grid delivers them from a subscription system topic (Event Grid's Azure
subscription event schema): a `Microsoft.Resources.ResourceActionSuccess` whose subject and `resourceUri` are
the source resource group and whose `operationName` is `Microsoft.Resources/subscriptions/resourceGroups/
moveResources/action`; its data carries claims and the POST URL, never the moved resources or the target.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.domain.model import GONE_DELETED, GONE_MOVED
from dlp.inputs import events
from dlp.settings import RETRY_QUEUE
from tests.evaluation_log import Evaluations

SUB = "11111111-2222-3333-4444-555555555555"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
MOVE = "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action"

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()
handle_sweep = function_app.sweep.build().get_user_function()


def group_id(rg: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}"


def resource_event(subject: str, kind: str, operation: str, caller: str, event_id: str = "") -> func.EventGridEvent:
    data = {"authorization": {"scope": subject, "action": operation},
            "claims": {UPN: caller, "ipaddr": "198.51.100.7"}, "correlationId": str(uuid.uuid4()),
            "httpRequest": {"clientRequestId": str(uuid.uuid4()), "clientIpAddress": "198.51.100.7", "method": "POST",
                            "url": f"https://management.azure.com{subject}/moveResources?api-version=2021-04-01"},
            "resourceProvider": "Microsoft.Resources", "resourceUri": subject, "operationName": operation,
            "status": "Succeeded", "subscriptionId": SUB, "tenantId": "72f988bf-0000-0000-0000-000000000000"}
    return func.EventGridEvent(id=event_id or f"ev-{uuid.uuid4().hex[:8]}", data=data, topic=f"/subscriptions/{SUB}",
                               subject=subject, event_type=kind, event_time=dt.datetime.now(dt.timezone.utc),
                               data_version="2")


def move_event(rg: str, caller: str, event_id: str = "") -> func.EventGridEvent:
    return resource_event(group_id(rg), "Microsoft.Resources.ResourceActionSuccess", MOVE, caller, event_id)


class World:
    def __init__(self, azure, azurite: str, evaluations: Evaluations, monkeypatch):
        self.azure = azure
        self.evaluations = evaluations
        self.monkeypatch = monkeypatch
        tag = uuid.uuid4().hex[:6]
        self.source, self.target = f"rg-src-{tag}", f"rg-out-{tag}"
        self.tag = tag
        self.queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
        try:
            self.queue.create_queue()
        except ResourceExistsError:
            pass

    def registries(self, count: int, rg: str = "") -> list[str]:
        return [self.azure.arm.create(SUB, rg or self.source, f"acrx{self.tag}n{i}", export="disabled",
                                      public="Disabled")["id"] for i in range(count)]

    def instance(self):
        runtime.reset()
        services = runtime.services()
        services.retry.base_delay_s = 0            # the re-checks' schedule, at once
        return services

    def sweep(self) -> None:
        self.instance()
        handle_sweep(TimerRequest(past_due=False, schedule_status={"Last": "2026-11-21T06:00:00+00:00"}))

    def cards(self, name: str) -> list[dict]:
        return [m for m in self.azure.teams.messages if name in json.dumps(m)]

    def mails(self, name: str) -> list[dict]:
        return [m for m in self.azure.email.sent if name in json.dumps(m)]

    def rows(self, registry_id: str) -> list[dict]:
        return [r for r in self.azure.logs.rows() if r["RegistryId"].lower() == registry_id.lower()]

    def rechecks(self) -> list:
        found = []
        for message in self.queue.receive_messages(max_messages=32, visibility_timeout=2):
            body = json.loads(base64.b64decode(message.content).decode())
            if body.get("kind") == "scope-check" and self.source in body.get("resourceGroup", ""):
                found.append((message, body))
        return found

    def run(self, messages: list) -> None:
        for message, body in messages:
            handle_retry(func.QueueMessage(id=message.id, body=json.dumps(body).encode(),
                                           pop_receipt=message.pop_receipt))
            self.queue.delete_message(message)


@pytest.fixture
def world(azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "8")
    local_azure.email.polls = 0
    runtime.reset()
    with Evaluations() as collector:
        w = World(local_azure, azurite_env, collector, monkeypatch)
        monkeypatch.setenv("DLP_SCOPES", group_id(w.source))          # the target lies outside
        yield w
    for message, _body in w.rechecks():                               # leave the shared queue as found
        w.queue.delete_message(message)
    runtime.reset()


def name(registry_id: str) -> str:
    return registry_id.rsplit("/", 1)[-1]


def test_a_compliant_registry_that_is_deleted_alerts_once_with_who(world):
    (registry,) = world.registries(1)
    world.instance()
    delete = resource_event(registry, "Microsoft.Resources.ResourceDeleteSuccess",
                            "Microsoft.ContainerRegistry/registries/delete", "eve@contoso.com", "ev-del")
    world.azure.arm.remove(registry)
    handle_event(delete)
    handle_event(delete)                               # Event Grid delivers at least once
    world.instance()
    handle_event(delete)                               # and another instance sees it too
    cards = world.cards(name(registry))
    assert len(cards) == 1 and len(world.mails(name(registry))) == 1
    assert "Registry deleted" in json.dumps(cards[0]) and "eve@contoso.com" in json.dumps(cards[0])


def test_a_registry_moved_out_of_scope_alerts_once_naming_the_mover_and_its_old_place(world):
    moved, stays = world.registries(2)
    world.sweep()                                      # the sweep remembers what is in rg-src
    assert world.cards(name(moved)) == []              # compliant: nothing to say
    (new_id,) = world.azure.arm.move([moved], group_id(world.target))
    world.instance()
    handle_event(move_event(world.source, "mallory@contoso.com", "ev-move"))

    cards, mails = world.cards(name(moved)), world.mails(name(moved))
    assert len(cards) == 1 and len(mails) == 1
    text = mails[0]["content"]["plainText"]
    assert "Registry left the monitored scope" in text and "mallory@contoso.com" in text
    assert world.source in text and "moveResources" in text
    assert world.cards(name(stays)) == []
    rows = [r for r in world.rows(moved) if r["Trigger"] == "event"]
    assert {(r["Action"], r["ActionReason"], r["Caller"]) for r in rows} == {("gone", GONE_MOVED, "mallory@contoso.com")}
    assert world.rows(new_id) == []                    # outside DLP_SCOPES: never read, never recorded

    handle_event(move_event(world.source, "mallory@contoso.com", "ev-move"))    # redelivered: nothing new
    world.sweep()                                                               # nor from the next sweep
    assert len(world.cards(name(moved))) == 1 and len(world.mails(name(moved))) == 1


def test_a_registry_that_alerted_is_known_without_any_sweep(world):
    """Every registry that ever alerted has an alert row in its resource group's key range: a move finds it."""
    (registry,) = world.registries(1)
    current = world.azure.arm.get(registry)
    current["properties"]["policies"]["exportPolicy"]["status"] = "enabled"
    world.azure.arm.add(current)
    world.instance()
    handle_event(resource_event(registry, "Microsoft.Resources.ResourceWriteSuccess",
                                "Microsoft.ContainerRegistry/registries/write", "bob@contoso.com"))
    assert len(world.cards(name(registry))) == 1                       # remediated
    world.azure.arm.move([registry], group_id(world.target))
    handle_event(move_event(world.source, "mallory@contoso.com"))
    cards = world.cards(name(registry))
    assert len(cards) == 2 and "left the monitored scope" in json.dumps(cards[1])


def test_a_move_still_running_is_read_again_until_the_registry_has_left(world):
    """ARM runs a move for up to four hours: the event may come while the registry is still at its old ID."""
    (registry,) = world.registries(1)
    world.sweep()
    world.instance()
    handle_event(move_event(world.source, "mallory@contoso.com"))
    assert world.cards(name(registry)) == []           # still there: nothing to say yet
    pending = world.rechecks()
    assert len(pending) == 1 and pending[0][1]["registryIds"] == [registry]
    world.azure.arm.move([registry], group_id(world.target))
    world.run(pending)
    cards = world.cards(name(registry))
    assert len(cards) == 1 and "mallory@contoso.com" in json.dumps(cards[0])


def test_a_registry_the_sweep_no_longer_lists_alerts_once(world):
    gone, stays = world.registries(2)
    world.sweep()
    world.azure.arm.remove(gone)                       # no event reached us (an event lost, a subscription moved)
    world.sweep()
    cards = world.cards(name(gone))
    assert len(cards) == 1 and "left the monitored scope" in json.dumps(cards[0])
    (mail,) = world.mails(name(gone))
    assert "no longer lists it" in mail["content"]["plainText"]
    world.sweep()
    assert len(world.cards(name(gone))) == 1 and world.cards(name(stays)) == []


def test_a_deleted_resource_group_alerts_its_registries_as_deleted(world):
    registries = world.registries(3)
    world.sweep()
    for registry in registries:
        world.azure.arm.remove(registry)
    world.instance()
    handle_event(resource_event(group_id(world.source), "Microsoft.Resources.ResourceDeleteSuccess",
                                "Microsoft.Resources/subscriptions/resourceGroups/delete", "eve@contoso.com"))
    for registry in registries:
        cards = world.cards(name(registry))
        assert len(cards) == 1 and "Registry deleted" in json.dumps(cards[0])
        assert {(r["Action"], r["ActionReason"]) for r in world.rows(registry)
                if r["Trigger"] == "event"} == {("gone", GONE_DELETED)}


def test_a_move_of_a_resource_group_outside_the_scopes_reads_nothing(world):
    world.registries(1, rg="rg-elsewhere-" + world.tag)
    world.instance()
    before = world.azure.arm.log.count(service="arm")
    handle_event(move_event("rg-elsewhere-" + world.tag, "mallory@contoso.com"))
    assert world.azure.arm.log.count(service="arm") == before


@pytest.mark.parametrize(("subject", "problem"), [
    (group_id("rg-a") + "/providers/Microsoft.ContainerRegistry/registries/acrabcde", "not a resource group ID"),
    (f"/subscriptions/{SUB}", "not a resource group ID"),
    ("/subscriptions/not-a-guid/resourceGroups/rg", "not a resource group ID"),
])
def test_a_move_event_about_something_else_than_a_resource_group_is_malformed(subject, problem):
    intake = events.intake("e1", "Microsoft.Resources.ResourceActionSuccess", subject, {"operationName": MOVE})
    assert problem in intake.malformed and intake.group_change is None


def test_move_and_resource_group_delete_events_become_group_changes_and_registry_actions_are_ignored():
    data = {"operationName": MOVE.upper(), "claims": {UPN: "m@contoso.com"}}
    intake = events.intake("e1", "microsoft.resources.resourceactionsuccess", group_id("rg-a") + "/", data)
    assert intake.group_change is not None
    assert (intake.group_change.resource_group, intake.group_change.reason) == (group_id("rg-a"), GONE_MOVED)
    assert intake.group_change.context.caller == "m@contoso.com"
    delete = events.intake("e2", "Microsoft.Resources.ResourceDeleteSuccess", group_id("rg-a"),
                           {"operationName": "Microsoft.Resources/subscriptions/resourceGroups/delete"})
    assert delete.group_change is not None and delete.group_change.reason == GONE_DELETED
    build = events.intake("e3", "Microsoft.Resources.ResourceActionSuccess",
                          group_id("rg-a") + "/providers/Microsoft.ContainerRegistry/registries/acrabcde",
                          {"operationName": "Microsoft.ContainerRegistry/registries/scheduleRun/action"})
    assert "action" in build.ignored and not build.targets and build.group_change is None
    other = events.intake("e4", "Microsoft.Resources.ResourceActionSuccess", group_id("rg-a"),
                          {"operationName": "Microsoft.Resources/subscriptions/resourceGroups/exportTemplate/action"})
    assert other.ignored and other.group_change is None
