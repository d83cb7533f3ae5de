"""Crash consistency (issue 12): kill an instance between any two steps, then let other instances finish.

Each case is a drifted registry in enforce mode and a worker PROCESS that handles its Event Grid event and is
killed (`os._exit`, no cleanup, no `finally`) at one point of the path:

    intent | PATCH | verify | record | notify (state commit | Teams send | email send) | intent resolved

The crash point is set by wrapping one of the responder's own adapters in the child (never an SDK method).
Then, as Azure would: the claims, lease and intent of the dead instance expire; Event Grid delivers the event
again to another instance (this process), the durable retry runs what was handed over, and the outbox timer
runs on TWO instances at the same moment (this process and another child). Afterwards, for every case:

* the registry is compliant and was PATCHed exactly once;
* exactly one remediation is recorded: the rows Log Analytics holds with Action == remediated carry one
  EvaluationId (the queries de-duplicate on EvaluationId + RuleId: a record written twice is one record);
* exactly one alert per channel, except where a Teams card was posted and the instance died before it could
  mark it delivered: the Workflows webhook has no idempotency key, so that card goes out a second time
  (documented at-least-once; the email of the same alert is de-duplicated by ACS's Operation-Id).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.azure.retryqueue import POISON_QUEUE
from dlp.domain.provenance import CHANGE_LAG
from dlp.outputs.alerting import FAR_FUTURE
from dlp.outputs.alerts.store import TableAlertStore
from dlp.settings import RETRY_QUEUE
from tests.evaluation_log import Evaluations
from tests.test_faults import event, table_proxy, world  # noqa: F401 (fixtures: Table storage behind a fault proxy)
from tests.test_responder import fresh_instance

ROOT = Path(__file__).resolve().parent.parent
SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-crash"
BUDGET_S = 4
EXPIRY_S = BUDGET_S + 11          # claims (budget + 5 s), leases and intents (budget + 10 s) of a dead instance
CRASHED = 17

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()
handle_drain = function_app.outbox_drain.build().get_user_function()
handle_health = function_app.health.build().get_user_function()

# crash point -> (adapter, method, before/after the call)
POINTS = {
    "intent|patch": ("state", "record_remediation", "after"),
    "patch|verify": ("arm", "update_registry", "after"),
    "verify|record": ("recorder", "record", "before"),
    "record|notify": ("notifier", "notify", "before"),
    "state-commit|send": ("notifier", "_send_dues", "before"),
    "teams-send|mark": ("teams", "send", "after"),
    "email-send|mark": ("email", "send", "after"),
    "notify|resolve": ("state", "resolve_intent", "before"),
}
TEAMS_REPEATED = {"teams-send|mark"}    # posted, then died before marking it delivered: at least once


def crash_at(services, point: str) -> None:
    """Make this process die at `point` (an instance attribute wrapping the responder's own adapter)."""
    where, name, when = POINTS[point]
    adapter = {"teams": lambda: services.notifier._channels["teams"],
               "email": lambda: services.notifier._channels["email"]}.get(where, lambda: getattr(services, where))()
    original = getattr(adapter, name)

    def crashing(*args, **kwargs):
        if when == "before":
            os._exit(CRASHED)
        original(*args, **kwargs)
        os._exit(CRASHED)

    setattr(adapter, name, crashing)


WORKER = """
import sys
sys.path.insert(0, ".")
import function_app
from dlp import runtime
from tests.test_crash import crash_at, event
point, registry_id, event_id = sys.argv[1:4]
services = runtime.services()
crash_at(services, point)
function_app.on_registry_event.build().get_user_function()(event(registry_id, event_id))
print("the crash point was never reached", flush=True)
"""

DRAINER = """
import sys
sys.path.insert(0, ".")
from azure.functions.timer import TimerRequest
import function_app
print("ready", flush=True)
sys.stdin.readline()
function_app.outbox_drain.build().get_user_function()(TimerRequest(past_due=False))
print("drained", flush=True)
"""


@pytest.fixture
def instance(azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", str(BUDGET_S))
    local_azure.email.polls = 0
    runtime.reset()
    with Evaluations() as collector:
        yield collector
    runtime.reset()


def child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=dict(os.environ),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def intents_of(azurite: str, registry_id: str) -> list[dict]:
    table = TableServiceClient.from_connection_string(azurite).get_table_client("dlpstate")
    return [e for e in table.query_entities("RowKey ge 'rem|' and RowKey lt 'rem}'")
            if e.get("RegistryId") == registry_id]


def drain_on_two_instances() -> None:
    """The outbox timer fires on two instances at the same moment."""
    other = child(DRAINER)
    try:
        assert other.stdout.readline().strip() == "ready", other.stderr.read()[-2000:]
        fresh_instance()
        other.stdin.write("go\n")
        other.stdin.flush()
        handle_drain(TimerRequest(past_due=False))
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0 and "drained" in out, err[-3000:]


def run_retries(queue: QueueClient, registry_ids: set[str]) -> None:
    for _ in range(5):
        found = False
        for message in queue.receive_messages(max_messages=32, visibility_timeout=1):
            body = base64.b64decode(message.content).decode()
            if json.loads(body).get("registryId") in registry_ids:
                found = True
                handle_retry(func.QueueMessage(id=message.id, body=body.encode(), pop_receipt=message.pop_receipt))
                queue.delete_message(message)
        if not found:
            return


def named(messages, name: str) -> int:
    return sum(1 for message in messages if name in json.dumps(message))


def remediation_records(azure, name: str) -> set[str]:
    return {row["EvaluationId"] for row in azure.logs.rows() if row["RegistryName"] == name
            and row["Action"] == "remediated"}


def retry_queue(azurite: str) -> QueueClient:
    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    return queue


@pytest.mark.parametrize("recovery", ["redelivery", "drain"])
def test_a_crash_between_any_two_steps_loses_nothing_and_sends_nothing_twice(instance, azurite, local_azure, recovery):
    """`redelivery`: Event Grid delivers each event again to another instance, then the timer runs on two.
    `drain`: no redelivery (Event Grid gave up, or the crash came after it was acknowledged): the outbox timer on
    two instances at once finds the orphaned intents and kept alerts alone."""
    azure = local_azure
    tag = uuid.uuid4().hex[:6]
    cases = {}
    for i, point in enumerate(POINTS):
        name = f"acrx{tag}n{i}"
        cases[point] = (name, azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"])
    # every worker handles its registry's event and dies at its point (all at once: the waits overlap)
    workers = {point: child(WORKER, point, rid, f"ev-{name}") for point, (name, rid) in cases.items()}
    for point, worker in workers.items():
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == CRASHED, (point, out, err[-3000:])
    died = time.monotonic()
    for point, (_name, rid) in cases.items():
        # it died after the write where the write comes before the point: nothing finished the job yet
        assert azure.arm.log.count(method="PATCH", path_contains=rid) == (0 if point == "intent|patch" else 1), point

    time.sleep(max(0.0, EXPIRY_S - (time.monotonic() - died)))       # the dead instance's claims expire
    if recovery == "redelivery":
        fresh_instance()
        for name, rid in cases.values():                          # Event Grid delivers each event again
            handle_event(event(rid, f"ev-{name}"))
        run_retries(retry_queue(azurite), {rid for _, rid in cases.values()})
    drain_on_two_instances()
    drain_on_two_instances()                                      # nothing left for a second tick
    if recovery == "drain":
        # The intent written before a PATCH that never left: no evidence yet either way (change history shows no
        # write of it, but may just lag), so it stays pending, never lapsed by a read. A tick once history covers
        # its time (provenance.CHANGE_LAG after its deadline) settles it.
        (_, never) = cases["intent|patch"]
        assert [e["Status"] for e in intents_of(azurite, never)] == ["pending"]
        services = fresh_instance()
        services.clock = lambda: datetime.now(timezone.utc) + CHANGE_LAG + timedelta(minutes=1)
        handle_drain(TimerRequest(past_due=False))
        assert [e["Status"] for e in intents_of(azurite, never)] == ["lapsed"]

    records = instance.take()
    for point, (name, rid) in cases.items():
        outcomes = [(r["action"], r["reason"]) for r in records if r["registryId"] == rid]
        summary = (point, outcomes)
        never_written = recovery == "drain" and point == "intent|patch"
        if recovery == "redelivery":
            assert outcomes == [("remediated", "-" if point == "intent|patch" else "verified-later")], summary
        assert azure.arm.log.count(method="PATCH", path_contains=rid) == (0 if never_written else 1), summary
        status = azure.arm.get(rid)["properties"]["policies"]["exportPolicy"]["status"]
        if never_written:
            # the drain never writes: the intent lapsed, the drift is recorded and alerted (its events remediate)
            assert status == "enabled" and remediation_records(azure, name) == set(), summary
            assert any(row["RegistryName"] == name and row["Action"] == "would-remediate" for row in azure.logs.rows())
        else:
            assert status == "disabled", summary
            assert len(remediation_records(azure, name)) == 1, summary
        assert named(azure.email.sent, name) == 1, summary
        assert named(azure.teams.messages, name) == (2 if point in TEAMS_REPEATED else 1), summary
    service = TableServiceClient.from_connection_string(azurite)
    assert [k for k in TableAlertStore(service).backlog(1000, FAR_FUTURE)
            if any(name in json.dumps(k.payload) for name, _ in cases.values())] == []    # nothing left kept
    pending = [e for e in service.get_table_client("dlpstate").query_entities("Status eq 'pending'")
               if any(rid == e.get("RegistryId") for _, rid in cases.values())]
    assert pending == []                                                              # every intent resolved
    if recovery == "redelivery":         # the redelivery that sent what was kept cleared the alert row's marker
        stores = TableAlertStore(service)
        assert {point: stores.get(rid).unsent for point, (_, rid) in cases.items()} == {p: "" for p in cases}


def test_concurrent_drains_on_two_instances_send_each_kept_alert_once(instance, azurite, local_azure):
    """Teams and ACS down while 6 registries are remediated: 12 kept copies. Back up, the timer fires on two
    instances at once: the ETag-guarded claims let each copy go out once."""
    azure = local_azure
    tag = uuid.uuid4().hex[:6]
    names = [f"acry{tag}n{i}" for i in range(6)]
    ids = [azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"] for name in names]
    fresh_instance()
    azure.teams.stop()
    azure.email.stop()
    for name, rid in zip(names, ids, strict=True):
        handle_event(event(rid, f"ev-{name}"))
    assert [r["action"] for r in instance.take()] == ["remediated"] * 6
    service = TableServiceClient.from_connection_string(azurite)
    kept = [k for k in TableAlertStore(service).backlog(1000, FAR_FUTURE) if any(n in json.dumps(k.payload) for n in names)]
    assert Counter(k.channel for k in kept) == Counter({"teams": 6, "email": 6})
    assert all(k.claimed_until == 0.0 and k.attempts == 1 for k in kept)     # failed once, free for the drain
    azure.teams.start()
    azure.email.start()
    drain_on_two_instances()
    for name in names:
        assert named(azure.teams.messages, name) == 1, name
        assert named(azure.email.sent, name) == 1, name


def test_a_poison_message_is_announced_once_on_every_channel_and_counted_by_health(instance, azurite, local_azure):
    azure = local_azure
    poison = QueueClient.from_connection_string(azurite, POISON_QUEUE)
    try:
        poison.create_queue()
    except ResourceExistsError:
        pass
    poison.clear_messages()
    name = f"acrp{uuid.uuid4().hex[:8]}"
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{name}"
    poison.send_message(base64.b64encode(json.dumps({"registryId": rid, "attempt": 3}).encode()).decode())
    drain_on_two_instances()
    drain_on_two_instances()
    assert named(azure.teams.messages, "dlp-retry-poison") == 1
    assert named(azure.email.sent, "dlp-retry-poison") == 1
    assert named(azure.teams.messages, name) == 1
    fresh_instance()
    response = handle_health(func.HttpRequest(method="GET", url="/api/health", body=b""))
    body = json.loads(response.get_body())
    assert response.status_code == 200 and body["backlog"]["poisonMessages"] == 1, body
    poison.clear_messages()
    body = json.loads(handle_health(func.HttpRequest(method="GET", url="/api/health", body=b"")).get_body())
    assert body["backlog"]["poisonMessages"] == 0


def test_an_alert_out_of_attempts_is_set_aside_announced_elsewhere_and_counted(instance, azurite, local_azure,
                                                                              monkeypatch):
    from dlp.outputs.alerts import sending

    monkeypatch.setattr(sending, "MAX_ATTEMPTS", 2)
    azure = local_azure
    name = f"acru{uuid.uuid4().hex[:8]}"
    rid = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    fresh_instance()
    azure.teams.faults.add(method="POST", status=400, times=None)      # the workflow refuses it, every time
    handle_event(event(rid, f"ev-{name}"))                            # attempt 1
    assert named(azure.email.sent, name) == 1 and azure.teams.messages == []
    drain_on_two_instances()                                          # attempt 2: the last; set aside, announced
    drain_on_two_instances()
    notices = [m for m in azure.email.sent if "could not be sent on teams" in json.dumps(m) and name in json.dumps(m)]
    assert len(notices) == 1
    assert azure.teams.messages == []
    body = json.loads(handle_health(func.HttpRequest(method="GET", url="/api/health", body=b"")).get_body())
    assert body["backlog"]["undeliverableAlerts"] >= 1
    service = TableServiceClient.from_connection_string(azurite)
    dead = [e for e in service.get_table_client("dlpstate").query_entities("Dead eq true")
            if e["RowKey"].startswith("out|") and name in e.get("RegistryId", "")]
    assert len(dead) == 1 and dead[0]["Channel"] == "teams" and "400" in dead[0]["LastError"]


def test_when_recording_fails_the_alert_says_so_and_the_redelivery_records_it_once(world):
    """Log Analytics down and the outbox refused (connections to it answered 503): the rows can be neither sent
    nor kept. The alerts still go out, saying the record is pending; the invocation fails so that Event Grid
    delivers the event again; that delivery finds the intent, confirms the write with its read, and records
    the remediation under the first evaluation's id; no second alert."""
    azure = world.azure
    name = f"acrr{uuid.uuid4().hex[:8]}"
    rid = azure.arm.create(SUB, "rg-faults", name, export="enabled", public="Disabled")["id"]
    world.services()
    azure.logs.faults.add(times=None, status=503)
    world.proxy.faults.add(times=None, service="table", path="dlpoutbox", status=503)
    delivery = event(rid, f"ev-{name}")
    with pytest.raises(Exception, match="neither delivered"):
        handle_event(delivery)
    (first,) = world.evaluations.take(rid)
    assert first["action"] == "remediated"
    cards = [m for m in azure.teams.messages if name in json.dumps(m)]
    mails = [m for m in azure.email.sent if name in json.dumps(m)]
    assert len(cards) == 1 and len(mails) == 1
    assert "Record" in json.dumps(cards[0]) and "pending" in json.dumps(cards[0])
    assert "pending" in mails[0]["content"]["plainText"]

    azure.logs.faults.clear()
    world.proxy.faults.clear()
    world.services()                                   # another instance takes the redelivery
    handle_event(delivery)
    (again,) = world.evaluations.take(rid)
    assert (again["action"], again["reason"], again["evaluationId"]) == ("remediated", "verified-later",
                                                                          first["evaluationId"])
    assert remediation_records(azure, name) == {first["evaluationId"]}
    assert named(azure.teams.messages, name) == 1 and named(azure.email.sent, name) == 1
    assert azure.arm.log.count(method="PATCH", path_contains=rid) == 1


def test_findings_refused_for_good_are_announced_once_and_counted(instance, azurite, local_azure):
    from dlp.outputs.outbox import Outbox
    from dlp.outputs.recording import REJECTED

    azure = local_azure
    key = f"eval-{uuid.uuid4().hex[:8]}"
    Outbox(TableServiceClient.from_connection_string(azurite)).put(
        REJECTED, key, [{"EvaluationId": key, "RuleId": "ACR.Export.Disabled"}], error="HTTP 400 InvalidStream")
    drain_on_two_instances()
    drain_on_two_instances()
    assert named(azure.teams.messages, key) == 1 and named(azure.email.sent, key) == 1
    assert "InvalidStream" in json.dumps([m for m in azure.email.sent if key in json.dumps(m)])
    body = json.loads(handle_health(func.HttpRequest(method="GET", url="/api/health", body=b"")).get_body())
    assert body["backlog"]["rejectedFindings"] >= 1


def test_a_write_that_landed_before_its_instance_died_is_recorded_even_if_the_registry_was_reopened(
        instance, azurite, local_azure):
    """The instance dies after its PATCH landed; Event Grid redelivers before the intent's `until` (the registry
    reads compliant, and a live writer's intent is left to it); the attacker re-opens the registry before the timer
    runs. The timer's later read finds the registry drifted, which proves nothing about our write: change history
    shows it landed, so it is recorded `remediated` (`verified-later`) with the window it closed, opened by the
    original caller, and the re-opened drift is recorded too (never `lapsed`, never lost)."""
    azure = local_azure
    name = f"acrland{uuid.uuid4().hex[:6]}"
    registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    worker = child(WORKER, "patch|verify", registry_id, f"ev-{name}")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == CRASHED, (out, err[-3000:])
    assert azure.arm.get(registry_id)["properties"]["policies"]["exportPolicy"]["status"] == "disabled"   # landed
    fresh_instance()
    handle_event(event(registry_id, f"ev-{name}"))                    # redelivered before the intent's until
    assert [e["Status"] for e in intents_of(azurite, registry_id)] == ["pending"]
    azure.arm.write(registry_id, {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}},
                    caller="mallory@contoso.com")                      # re-opened before the timer
    time.sleep(EXPIRY_S)                                               # the dead writer's budget is over
    fresh_instance()
    handle_drain(TimerRequest(past_due=False))

    (intent,) = intents_of(azurite, registry_id)
    assert intent["Status"] == "recorded"
    landed = [r for r in azure.logs.rows() if r["RegistryId"] == registry_id and r["Action"] == "remediated"]
    assert {r["EvaluationId"] for r in landed} == {intent["EvaluationId"]}
    row = landed[0]
    assert row["ActionReason"] == "verified-later" and row["ExposureClosedBy"] == "responder"
    assert row["ExposureOpenedAt"] and row["ExposureClosedAt"] > row["ExposureOpenedAt"]
    drift = [r for r in azure.logs.rows() if r["RegistryId"] == registry_id and r["Action"] == "would-remediate"]
    assert drift, "the re-opened drift is recorded too"
    assert named(azure.teams.messages, name) >= 1


def test_two_landed_writes_of_one_registry_are_both_recorded_none_hides_the_other(instance, azurite, local_azure):
    """Two writers died after their PATCHes landed (an attacker re-opened the registry between them): each write is
    its own remediation with its own window, so the timer records both, under their own evaluation ids; neither is
    superseded into silence."""
    azure = local_azure
    name = f"acrtwo{uuid.uuid4().hex[:6]}"
    registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    for index in range(2):
        worker = child(WORKER, "patch|verify", registry_id, f"ev-{name}-{index}")
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == CRASHED, (out, err[-3000:])
        if index == 0:
            time.sleep(EXPIRY_S)                      # the first writer's lease expires: the second may write
            azure.arm.write(registry_id, {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}},
                            caller="mallory@contoso.com")
    time.sleep(EXPIRY_S)
    fresh_instance()
    handle_drain(TimerRequest(past_due=False))
    intents = intents_of(azurite, registry_id)
    assert len(intents) == 2 and {i["Status"] for i in intents} == {"recorded"}
    landed = {r["EvaluationId"] for r in azure.logs.rows() if r["RegistryId"] == registry_id
              and r["Action"] == "remediated" and r["ActionReason"] == "verified-later"}
    assert landed == {i["EvaluationId"] for i in intents}


def test_intents_that_cannot_be_settled_yet_do_not_keep_the_others_waiting(azurite):
    """The timer takes the least recently looked at orphans first: a stamped one goes to the back of the line."""
    from dlp.azure.state import TableState, table_service
    from dlp.domain.intent import PENDING, Intent
    from dlp.domain.model import Change
    from dlp.settings import load

    state = TableState(table_service(load({"AzureWebJobsStorage": azurite}), None))
    name = f"acrrot{uuid.uuid4().hex[:6]}"
    registry_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{name}"
    past = time.time() - 3600
    rows = [state.record_remediation(registry_id, Intent(
        datetime.fromtimestamp(past + i, timezone.utc).isoformat(), "x", f"{name}-{i}",
        (Change("publicNetworkAccess", "Enabled", "Disabled"),), status=PENDING, until=past + 60)) for i in range(3)]
    mine = [r for _, r in state.orphaned_intents(time.time(), 500) if r.row_key in rows]
    assert [r.row_key for r in mine] == rows
    state.note_look(registry_id, rows[0], time.time())          # the first could not be settled
    again = [r.row_key for _, r in state.orphaned_intents(time.time(), 500) if r.row_key in rows]
    assert again == [rows[1], rows[2], rows[0]]


def test_an_event_that_settles_an_orphan_still_gets_its_delayed_look_at_the_history(instance, azurite, local_azure):
    """The event's evaluation becomes the remediation's `verified-later` record, but the write it reports may still
    hide a flip-and-restore: its delayed change-history check is queued as for any compliant registry."""
    from dlp.responder.timeline import CHECK_KIND

    azure = local_azure
    name = f"acrchk{uuid.uuid4().hex[:6]}"
    registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    worker = child(WORKER, "patch|verify", registry_id, f"ev-{name}")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == CRASHED, (out, err[-3000:])
    time.sleep(EXPIRY_S)
    fresh_instance().retry.check_delay_s = 0                         # the delayed check visible at once
    handle_event(event(registry_id, f"ev-{name}-later"))
    (record,) = instance.take(registry_id)
    assert (record["action"], record["reason"]) == ("remediated", "verified-later")
    queued = [json.loads(base64.b64decode(m.content)) for m in retry_queue(azurite).peek_messages(max_messages=32)]
    assert any(m.get("kind") == CHECK_KIND and m.get("registryId") == registry_id for m in queued)
