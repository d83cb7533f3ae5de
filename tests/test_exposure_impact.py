"""Exposure impact end to end: what was pulled while a registry was open, through the Functions handlers, the real
SDK clients over HTTPS (azure-monitor-query against the Log Analytics query emulator serving registry log rows,
Resource Graph's change history, Logs Ingestion, Teams) and Azurite's queues and tables.

A window found by the delayed check is recorded and alerted with its pulls (its first look is due by then); the
looks still to come sit on the durable retry queue and are replayed here from their messages."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.azure import credential
from dlp.responder import impact, timeline
from dlp.settings import RETRY_QUEUE
from dlp.triggers import handlers
from dlp.triggers.http_api import health_report

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-imp"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
RESPONDER = "5b1f0c2e-7a41-4d0e-9c3f-0000000e1a17"
EXPORT_ON = {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}}
EXPORT_OFF = {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}
MALLORY_IP = "198.51.100.7"

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()


def rid(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{name}"


@pytest.fixture
def world(azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/{RG}")
    monkeypatch.setenv("AZURE_CLIENT_ID", RESPONDER)
    for name, value in local_azure.registry_logs_env().items():
        monkeypatch.setenv(name, value)
    for name in ("DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)
    credential.reset()
    runtime.reset()
    yield local_azure
    runtime.reset()
    credential.reset()


def instance():
    """A fresh app instance whose queued checks and looks become visible at once."""
    runtime.reset()
    services = runtime.services()
    services.retry.check_delay_s = 0
    services.retry.look_delay_s = 0
    services.retry.base_delay_s = 0
    return services


def event(registry_id: str, caller: str, event_id: str, when: dt.datetime | None = None):
    data = {"claims": {UPN: caller}, "correlationId": "corr-" + event_id, "operationName":
            "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id, "status": "Succeeded",
            "subscriptionId": SUB}
    return func.EventGridEvent(id=event_id, data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=when or dt.datetime.now(dt.timezone.utc), data_version="2")


def messages(azurite: str, kind: str, registry_id: str) -> list[tuple[object, dict]]:
    """This registry's queued messages of `kind`, taken off the queue (replayed from their bodies below)."""
    from azure.core.exceptions import ResourceExistsError

    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    found = []
    for message in queue.receive_messages(max_messages=32, visibility_timeout=1):
        body = json.loads(base64.b64decode(message.content).decode())
        if body.get("kind") == kind and body.get("registryId", "").lower() == registry_id.lower():
            found.append((message, body))
            queue.delete_message(message)
    return found


def replay(found) -> None:
    for message, body in found:
        handle_retry(func.QueueMessage(id=message.id, body=json.dumps(body).encode(), pop_receipt=message.pop_receipt))


def rows_of(azure, registry_id: str) -> list[dict]:
    return [r for r in azure.logs.rows() if r["RegistryId"].lower() == registry_id.lower()]


def newest(rows: list[dict], evaluation_id: str, rule_id: str | None = None) -> dict:
    """The row the queries keep: arg_max(TimeGenerated) per EvaluationId (+ RuleId)."""
    mine = [r for r in rows if r["EvaluationId"] == evaluation_id and (rule_id is None or r["RuleId"] == rule_id)]
    return max(mine, key=lambda r: r["TimeGenerated"])


def cards(azure) -> list[str]:
    return [json.dumps(m, ensure_ascii=False) for m in azure.teams.messages]


def flip_and_restore(world, name: str, *, minutes_ago: float = 10, seconds_open: float = 60) -> tuple[str, dt.datetime]:
    """Exports enabled and disabled again by mallory, `minutes_ago` (change history has both rows already)."""
    reg = rid(name)
    world.arm.create(SUB, RG, name, export="disabled", public="Disabled")
    opened = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago)
    world.arm.write(reg, EXPORT_ON, caller="mallory@contoso.com", at=opened)
    world.arm.write(reg, EXPORT_OFF, caller="mallory@contoso.com", at=opened + dt.timedelta(seconds=seconds_open))
    return reg, opened


def checked(world, azurite, reg: str, opened: dt.datetime) -> None:
    """The event of the closing write, then its delayed check."""
    handle_event(event(reg, "mallory@contoso.com", "ev-" + reg[-6:], opened + dt.timedelta(seconds=60)))
    replay(messages(azurite, timeline.CHECK_KIND, reg))


def queries_of(world, reg: str) -> int:
    return sum(1 for q in world.logs_query.queries if reg.lower() in q["query"].lower())


def test_flip_and_restore_records_and_alerts_exactly_the_pulls_inside_the_window(world, azurite_env):
    reg, opened = flip_and_restore(world, "acrpull01")
    logs = world.logs_query
    for seconds, tag in ((10, "payments/api:1.4"), (20, "payments/api:1.5"), (30, "payments/worker:2.0")):
        repository, _, version = tag.partition(":")
        logs.add_pull(reg, opened + dt.timedelta(seconds=seconds), repository, version, identity="mallory@contoso.com",
                      caller_ip=f"{MALLORY_IP}:51234")
    logs.add_pull(reg, opened + dt.timedelta(seconds=90), "secret/outside", "9.9", identity="mallory@contoso.com",
                  caller_ip=MALLORY_IP)                                  # after the close: never counted
    logs.add_pull(rid("acrother01"), opened + dt.timedelta(seconds=15), "other/repo", "1")    # another registry
    logs.add_login(reg, opened + dt.timedelta(seconds=5), identity="mallory@contoso.com", caller_ip=MALLORY_IP)
    instance()
    checked(world, azurite_env, reg, opened)

    (row,) = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    assert row["ExposurePulls"] == 3
    assert [d["repository"] + d["reference"] for d in row["ExposurePullDetails"]] == [
        "payments/api:1.4", "payments/api:1.5", "payments/worker:2.0"]
    assert {d["callerIp"] for d in row["ExposurePullDetails"]} == {MALLORY_IP}          # the port is dropped
    assert row["ExposurePullsNote"].startswith("counted")
    posted = cards(world)
    (card,) = [c for c in posted if "Registry was open for" in c]
    assert ("3 pulls from 198.51.100.7 (mallory@contoso.com): payments/api:1.4, payments/api:1.5, "
            "payments/worker:2.0") in card
    assert all("secret/outside" not in text for text in [*posted, json.dumps(rows_of(world, reg))])

    later = messages(azurite_env, impact.LOOK_KIND, reg)
    assert [body["look"] for _, body in later] == [2]                    # look 1 ran with the check
    replay(later)
    assert len(cards(world)) == len(posted)                             # the same picture: no second alert
    assert len([r for r in rows_of(world, reg) if r["Action"] == "exposure"]) == 1   # and no second record
    assert queries_of(world, reg) == 2                                  # the look's cost: two queries per window


def test_a_remediation_window_gets_its_pulls_from_the_delayed_looks(world, azurite_env):
    reg = rid("acrpull02")
    world.arm.create(SUB, RG, "acrpull02", export="disabled", public="Disabled")
    world.arm.write(reg, EXPORT_ON, caller="mallory@contoso.com")
    opened = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    world.logs_query.add_pull(reg, opened + dt.timedelta(seconds=12), "payments/api", "1.4",
                              identity="mallory@contoso.com", caller_ip=MALLORY_IP)
    instance()
    (evaluation,) = handlers.on_event(event(reg, "mallory@contoso.com", "ev-rem", opened))
    assert evaluation.outcome.action == "remediated"
    first = newest(rows_of(world, reg), evaluation.evaluation_id)
    assert first["ExposurePulls"] is None and first["ExposurePullsNote"].startswith("pending: first look at")
    assert "pulls not looked up yet" in cards(world)[-1]
    sent = len(cards(world))

    looks = messages(azurite_env, impact.LOOK_KIND, reg)
    assert sorted(body["look"] for _, body in looks) == [1, 2]
    replay(looks)
    rows = rows_of(world, reg)
    updated = newest(rows, evaluation.evaluation_id, "DLP.ACR.ExportPolicy")
    assert updated["ExposurePulls"] == 1 and updated["Action"] == "remediated" and updated["Status"] == "fail"
    rules = {x["RuleId"] for x in rows if x["EvaluationId"] == evaluation.evaluation_id}
    assert {newest(rows, evaluation.evaluation_id, rule)["ExposurePulls"] for rule in rules} == {1}   # every row
    new_cards = cards(world)[sent:]
    assert len(new_cards) == 1 and "Pulls found while the registry was open" in new_cards[0]
    assert "1 pull from 198.51.100.7 (mallory@contoso.com): payments/api:1.4" in new_cards[0]
    assert queries_of(world, reg) == 2


def test_a_failing_query_leaves_pulls_unknown_alerts_the_window_and_the_next_look_retries(world, azurite_env):
    reg, opened = flip_and_restore(world, "acrpull03")
    world.logs_query.add_pull(reg, opened + dt.timedelta(seconds=5), "payments/api", "1.4",
                              identity="mallory@contoso.com", caller_ip=MALLORY_IP)
    world.logs_query.forbidden = True
    services = instance()
    checked(world, azurite_env, reg, opened)
    (row,) = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    assert row["ExposurePulls"] is None                                   # unknown is never 0
    assert "unknown: HTTP 403 InsufficientAccessError" in row["ExposurePullsNote"]
    (card,) = [c for c in cards(world) if "Registry was open for" in c]
    assert "pulls unknown: HTTP 403 InsufficientAccessError" in card
    status, body = health_report(services=services)
    assert status == 200 and body["status"] == "degraded"
    assert "InsufficientAccessError" in body["registryLogs"]["lastError"]["error"]
    assert body["registryLogs"]["workspaceId"] == world.workspace_id

    world.logs_query.forbidden = False                                    # the role assignment took effect
    sent = len(cards(world))
    replay(messages(azurite_env, impact.LOOK_KIND, reg))
    exposure_rows = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    assert newest(exposure_rows, row["EvaluationId"])["ExposurePulls"] == 1
    assert len(cards(world)) == sent + 1
    assert health_report(services=runtime.services())[1]["registryLogs"]["failing"] is False


def test_logs_arriving_after_the_first_look_update_the_record_and_alert_once(world, azurite_env):
    reg, opened = flip_and_restore(world, "acrpull04")
    world.logs_query.known_tables = {"ContainerRegistryRepositoryEvents", "ContainerRegistryLoginEvents"}
    instance()
    checked(world, azurite_env, reg, opened)
    (row,) = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    assert row["ExposurePulls"] == 0 and "no pulls recorded" in row["ExposurePullsNote"]
    sent = len(cards(world))
    for seconds in (3, 4):                                                # ingested late
        world.logs_query.add_pull(reg, opened + dt.timedelta(seconds=seconds), "payments/api", f"1.{seconds}",
                                  identity="eve@contoso.com", caller_ip="203.0.113.9")
    found = messages(azurite_env, impact.LOOK_KIND, reg)
    replay(found)
    replay(found)                                                         # delivered twice: the second does nothing
    exposure_rows = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    assert len(exposure_rows) == 2 and newest(exposure_rows, row["EvaluationId"])["ExposurePulls"] == 2
    new_cards = cards(world)[sent:]
    assert len(new_cards) == 1 and "2 pulls from 203.0.113.9 (eve@contoso.com)" in new_cards[0]


def test_hostile_repository_and_identity_strings_are_cleaned_everywhere(world, azurite_env):
    reg, opened = flip_and_restore(world, "acrpull05")
    world.logs_query.add_pull(reg, opened + dt.timedelta(seconds=5), "pay\u202ements/api\n**bold**", "1.4\x1b[31m",
                              identity="ｍａｌｌｏｒｙ\u200b@contoso.com\r\nBcc: x", caller_ip="198.51.100.7:1")
    instance()
    checked(world, azurite_env, reg, opened)
    (row,) = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    texts = [json.dumps(row, ensure_ascii=False), *cards(world)]
    for bad in ("\u202e", "\u200b", "\x1b", "\r", "\\n**bold", "ｍａｌｌｏｒｙ"):
        assert all(bad not in text for text in texts), bad
    assert row["ExposurePullDetails"][0]["identity"].startswith("mallory@contoso.com")


def test_two_instances_racing_on_the_same_look_record_and_alert_once(world, azurite_env):
    reg, opened = flip_and_restore(world, "acrpull06")
    instance()
    checked(world, azurite_env, reg, opened)
    world.logs_query.add_pull(reg, opened + dt.timedelta(seconds=8), "payments/api", "2.0",
                              identity="mallory@contoso.com", caller_ip=MALLORY_IP)
    ((_, body),) = messages(azurite_env, impact.LOOK_KIND, reg)
    sent, recorded = len(cards(world)), len(rows_of(world, reg))
    world.logs_query.latency = 0.3                       # both instances are inside the query at the same time
    first, second = instance(), instance()
    done = threading.Barrier(2)

    def run(services):
        done.wait()
        impact.run_look(dict(body), services)

    threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cards(world)) == sent + 1
    assert len(rows_of(world, reg)) == recorded + 1
    busy = messages(azurite_env, impact.LOOK_KIND, reg)           # the loser asked to be run again later
    replay(busy)
    assert len(cards(world)) == sent + 1 and len(rows_of(world, reg)) == recorded + 1


def test_without_a_workspace_the_pulls_are_unknown_and_nothing_is_queued(world, azurite_env, monkeypatch):
    monkeypatch.delenv("DLP_REGISTRY_LOGS_WORKSPACE")
    reg, opened = flip_and_restore(world, "acrpull07")
    instance()
    checked(world, azurite_env, reg, opened)
    (row,) = [r for r in rows_of(world, reg) if r["Action"] == "exposure"]
    assert row["ExposurePulls"] is None and row["ExposurePullsNote"].startswith("off")
    assert "pulls unknown: registry logs are not configured" in next(c for c in cards(world) if "was open" in c)
    assert not messages(azurite_env, impact.LOOK_KIND, reg) and not world.logs_query.queries
