"""Findings to Log Analytics (dlp/outputs/recording.py, dlp/azure/logs.py) with the outbox behind them.

Real SDK clients only: azure-monitor-ingestion over HTTPS to the Logs Ingestion emulator (which un-gzips
and stores what it receives and fails on demand), azure-identity against the emulated App Service identity
endpoint, azure-data-tables against the real Azurite. Evaluations come from the real pipeline against the
emulated ARM, or are built from the real rule catalogue for sweeps.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.identity import ManagedIdentityCredential

import function_app
from dlp import __version__, runtime
from dlp.azure.arm import ArmGateway
from dlp.azure.budget import Budget
from dlp.azure.logs import scope_for
from dlp.azure.state import MemoryState, table_service
from dlp.domain.model import Assessment, Context, Evaluation, Outcome, Registry, Target
from dlp.domain.rules import evaluate, rules
from dlp.emulator import LocalAzure
from dlp.emulator.registries import registry_id
from dlp.outputs import findings
from dlp.outputs.outbox import Outbox
from dlp.outputs.recording import (
    FINDINGS,
    REJECTED,
    LogRecorder,
    LogsRecorder,
    RecordingError,
    build_recorder,
    row_size,
)
from dlp.responder import pipeline
from dlp.responder.services import Services
from dlp.settings import OUTBOX_TABLE, Settings, load

SUB = "00000000-0000-0000-0000-0000000000c3"
RULE_IDS = [rule.id for rule in rules()]
SDK_CHUNK_BYTES = 1024 * 1024       # azure-monitor-ingestion cuts uploads into chunks of at most this (json.dumps per row)


class NoAlerts:
    """The Notifier protocol, silent: alerting is not under test here."""

    def notify(self, evaluations, *, digest: bool = False) -> None:
        return None


@dataclass
class World:
    azure: LocalAzure
    settings: Settings
    tables: object
    outbox: Outbox
    recorder: LogsRecorder
    credential: ManagedIdentityCredential

    def received(self) -> list[dict]:
        return self.azure.logs.rows(self.settings.logs_rule_id, self.settings.logs_stream)

    def posts(self) -> list:
        return self.azure.logs.log.filter(method="POST")

    def kept(self, kind: str = FINDINGS) -> list[dict]:
        return [row for item in self.outbox.pending(kind, 1000) for row in item.payload]

    def services(self, mode: str = "enforce") -> Services:
        settings = replace(self.settings, mode=mode)
        return Services(settings=settings, arm=ArmGateway(settings.arm_endpoint, self.credential),
                                 state=MemoryState(), recorder=self.recorder, notifier=NoAlerts())


@pytest.fixture
def world(azure_env: LocalAzure, azurite_env: str) -> World:
    settings = load(os.environ)
    assert settings.logs_enabled and settings.storage_configured
    tables = table_service(settings, None)
    tables.delete_table(OUTBOX_TABLE)              # Azurite lives for the whole session: a fresh outbox per test
    credential = ManagedIdentityCredential()       # the real credential code, against the emulated identity endpoint
    recorder = build_recorder(settings, credential, tables)
    assert isinstance(recorder, LogsRecorder)
    return World(azure_env, settings, tables, Outbox(tables), recorder, credential)


def sweep(count: int, *, message_bytes: int = 0, trigger: str = "sweep") -> list[Evaluation]:
    """Evaluations of `count` drifted registries from the real rule catalogue, as a sweep would record them."""
    started = datetime.now(timezone.utc).isoformat()
    evaluations = []
    for i in range(count):
        registry = Registry(id=registry_id(SUB, "rg-sweep", f"acr{i:04d}"), name=f"acr{i:04d}")
        assessment = evaluate(registry)
        if message_bytes:
            padded = tuple(replace(f, message=f"{f.message} {'x' * message_bytes}") for f in assessment.findings)
            assessment = Assessment(registry, padded)
        evaluations.append(Evaluation(str(uuid.uuid4()), registry.id, Context(trigger=trigger), "audit",
                                      Outcome("would-remediate", "audit-mode", "audit mode: nothing written"),
                                      assessment, started, 1.0))
    return evaluations


def rows_of(evaluations: list[Evaluation]) -> list[dict]:
    return [row for evaluation in evaluations for row in findings.rows(evaluation)]


def keys(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["EvaluationId"], r["RuleId"]) for r in rows]


# --- what the rows say ----------------------------------------------------------------------------------


def test_exact_rows_for_a_compliant_a_remediated_and_a_blocked_evaluation(world: World):
    arm = world.azure.arm
    clean = arm.create(SUB, "rg-dlp", "acrclean", export="disabled", public="Disabled", dataEndpointEnabled=True,
                       networkRuleBypassOptions="None")
    drifted = arm.create(SUB, "rg-dlp", "acrdrift")
    piped = arm.create(SUB, "rg-dlp", "acrpipes", pipelines=["nightly"])
    context = Context(trigger="event", event_id="evt-42", correlation_id="corr-42", caller="alice@contoso.com",
                      caller_ip="203.0.113.7", operation_name="Microsoft.ContainerRegistry/registries/write")

    evaluations = pipeline.run([Target(r["id"], context) for r in (clean, drifted, piped)], world.services())

    assert [e.outcome.action for e in evaluations] == ["none", "remediated", "blocked"]
    received = world.received()
    assert len(world.posts()) == 1                       # one invocation, one request, rows of each evaluation together
    assert received == rows_of(evaluations)              # exactly the schema's rows, through gzip + JSON and back
    common = {"SubscriptionId": SUB, "ResourceGroup": "rg-dlp", "Sku": "Premium", "Trigger": "event",
              "EventId": "evt-42", "CorrelationId": "corr-42", "Caller": "alice@contoso.com",
              "CallerIpAddress": "203.0.113.7", "OperationName": "Microsoft.ContainerRegistry/registries/write",
              "Mode": "enforce", "Attempt": 0, "ResponderVersion": __version__}
    for row in received:
        assert set(row) == set(findings.COLUMN_NAMES)
        assert row.items() >= common.items()
        assert datetime.fromisoformat(row["TimeGenerated"]).tzinfo is not None
    by_registry: dict[str, list[dict]] = {}
    for row in received:
        by_registry.setdefault(row["RegistryName"], []).append(row)
    assert list(by_registry) == ["acrclean", "acrdrift", "acrpipes"]
    for name, rows in by_registry.items():
        assert [r["RuleId"] for r in rows] == RULE_IDS, name
        assert len({r["EvaluationId"] for r in rows}) == 1, name
        assert {r["RegistryId"] for r in rows} == {registry_id(SUB, "rg-dlp", name)}

    ok = by_registry["acrclean"]
    assert all(r["Status"] in ("pass", "not-applicable") for r in ok)
    assert {(r["Compliant"], r["Action"], r["ActionReason"], r["ActionDetail"]) for r in ok} == {(True, "none", "", "")}
    assert all(r["Changes"] == {} for r in ok)

    reverted = {"publicNetworkAccess": {"old": "Enabled", "new": "Disabled"},
                "policies.exportPolicy.status": {"old": "enabled", "new": "disabled"}}
    fixed = by_registry["acrdrift"]
    status = {r["RuleId"]: r["Status"] for r in fixed}
    assert status["DLP.ACR.ExportPolicy"] == status["DLP.ACR.PublicNetworkAccess"] == "fail"
    assert {(r["Compliant"], r["Action"], r["ActionReason"]) for r in fixed} == {(False, "remediated", "")}
    assert all(r["Changes"] == reverted for r in fixed)
    assert fixed[0]["ActionDetail"] == ("reverted publicNetworkAccess Enabled -> Disabled, "
                                        "policies.exportPolicy.status enabled -> disabled")
    assert next(r for r in fixed if r["RuleId"] == "DLP.ACR.ExportPolicy")["Message"] == (
        "exportPolicy.status is enabled; must be disabled; publicNetworkAccess is Enabled; must be Disabled")

    held = by_registry["acrpipes"]
    status = {r["RuleId"]: r["Status"] for r in held}
    assert status["DLP.ACR.ExportPipelines"] == status["DLP.ACR.ExportPolicy"] == "fail"
    assert {(r["Compliant"], r["Action"], r["ActionReason"]) for r in held} == {(False, "blocked", "export-pipelines")}
    assert all(r["Changes"] == reverted for r in held)    # what would have been written
    assert "nightly" in held[0]["ActionDetail"]
    # only the export part is blocked: public access is closed in the same invocation, and the detail says so
    assert held[0]["ActionDetail"].startswith("reverted publicNetworkAccess Enabled -> Disabled; not written: ")
    assert arm.get(piped["id"])["properties"]["publicNetworkAccess"] == "Disabled"
    assert arm.get(piped["id"])["properties"]["policies"]["exportPolicy"]["status"] == "enabled"

    assert world.outbox.count(FINDINGS) == 0 and world.outbox.count(REJECTED) == 0


def test_rows_of_one_evaluation_always_travel_in_one_request(world: World):
    evaluations = sweep(80, message_bytes=2000)            # ~2.5 MiB of rows: the SDK's 1 MiB chunks need 3 requests
    assert sum(row_size(r) for r in rows_of(evaluations)) > 2 * SDK_CHUNK_BYTES

    with Budget.of(20).active():
        world.recorder.record(evaluations)

    posts = world.posts()
    assert len(posts) == 3
    seen: dict[str, int] = {}
    for index, post in enumerate(posts):
        body = post.json()
        assert sum(row_size(r) for r in body) <= SDK_CHUNK_BYTES
        for row in body:
            assert seen.setdefault(row["EvaluationId"], index) == index, "an evaluation was split across requests"
    assert world.received() == rows_of(evaluations)
    assert world.outbox.count(FINDINGS) == 0


# --- failures, the outbox and re-sending ---------------------------------------------------------------


def test_a_failure_in_the_second_of_several_chunks_keeps_exactly_that_chunks_rows(world: World):
    evaluations = sweep(80, message_bytes=2000)
    world.azure.logs.faults.add(method="POST", status=502, skip=1, times=1)      # a gateway blip on the 2nd chunk

    with Budget.of(20).active():
        world.recorder.record(evaluations)

    posts = world.posts()
    assert [p.status for p in posts] == [204, 502, 204]
    failed_chunk = posts[1].json()
    assert keys(world.kept()) == keys(failed_chunk)                               # exactly that chunk's rows ...
    assert world.kept() == failed_chunk                                           # ... unchanged
    assert world.received() == posts[0].json() + posts[2].json()
    assert {i.last_error for i in world.outbox.pending(FINDINGS, 1000)} == {"HTTP 502 BadGateway: Injected fault (502)."}

    sent = world.recorder.drain()                                                 # the timer's work
    assert sent.sent == len(failed_chunk) and sent.kept == 0
    assert world.outbox.count(FINDINGS) == 0
    assert sorted(keys(world.received())) == sorted(keys(rows_of(evaluations)))   # every row once, none lost
    assert len(world.posts()) == 4

    again = world.recorder.drain()
    assert (again.sent, again.kept) == (0, 0)
    assert len(world.posts()) == 4                                                # not again once sent


def test_rows_kept_during_an_outage_go_first_in_the_next_upload_and_only_once(world: World):
    first = sweep(3)
    world.azure.logs.stop()                                                       # Log Analytics unreachable
    with Budget.of(20).active():
        world.recorder.record(first)
    items = world.outbox.pending(FINDINGS)
    assert [i.key for i in items] == [e.evaluation_id for e in first]             # one item per evaluation, in order
    assert [i.payload for i in items] == [findings.rows(e) for e in first]
    assert world.received() == []

    world.azure.logs.start()
    second = sweep(1, trigger="event")
    with Budget.of(20).active():
        world.recorder.record(second)
    assert len(world.posts()) == 1
    assert world.received() == rows_of(first) + rows_of(second)                  # the backlog first, then the new rows
    assert world.outbox.count(FINDINGS) == 0

    third = sweep(1, trigger="event")
    with Budget.of(20).active():
        world.recorder.record(third)
    assert world.posts()[-1].json() == rows_of(third)                              # the old rows are not sent again
    assert world.recorder.drain().sent == 0
    assert len(world.posts()) == 2


def test_a_transient_failure_retried_within_the_budget_keeps_nothing(world: World):
    world.azure.logs.faults.add(method="POST", status=503, headers={"Retry-After": "0"}, times=2)
    evaluations = sweep(2)
    with Budget.of(20).active():
        world.recorder.record(evaluations)
    assert [p.status for p in world.posts()] == [503, 503, 204]
    assert world.received() == rows_of(evaluations)
    assert world.outbox.count(FINDINGS) == 0


def test_a_throttled_upload_keeps_the_rows_within_the_invocation_budget(world: World):
    world.azure.logs.faults.add(method="POST", status=429, headers={"Retry-After": "30"}, times=None)
    evaluations = sweep(2)
    started = time.monotonic()
    with Budget.of(5).active():
        world.recorder.record(evaluations)
    assert time.monotonic() - started < 5
    assert len(world.posts()) == 1                       # a 30 s Retry-After does not fit: no second try now
    assert keys(world.kept()) == keys(rows_of(evaluations))


def test_the_timer_function_drains_the_outbox(world: World, azure_env: LocalAzure):
    runtime.reset()
    try:
        recorder = runtime.services().recorder           # the app's own recorder, built from the environment
        world.azure.logs.stop()
        with Budget.of(20).active():
            recorder.record(sweep(2))
        assert world.outbox.count(FINDINGS) == 2
        world.azure.logs.start()

        drain = function_app.outbox_drain.build().get_user_function()
        drain(TimerRequest(past_due=False))

        assert world.outbox.count(FINDINGS) == 0
        assert len(world.received()) == 2 * len(RULE_IDS)
        drain(TimerRequest(past_due=False))
        assert len(world.posts()) == 1
    finally:
        runtime.reset()


# --- refused rows ----------------------------------------------------------------------------------------


def test_rows_refused_for_good_are_reported_and_set_aside_not_retried(world: World, caplog):
    message = "Record 4: the value of 'Changes' is not valid for a column of type dynamic"
    world.azure.logs.faults.add(method="POST", status=400, times=2,
                                body={"error": {"code": "InvalidContent", "message": message}})
    bad, good = sweep(2)
    with caplog.at_level(logging.WARNING), Budget.of(20).active():
        world.recorder.record([bad, good])

    # the batch failed; each evaluation was tried alone; the first was refused again, the second went in
    assert [p.status for p in world.posts()] == [400, 400, 204]
    assert world.received() == findings.rows(good)
    (item,) = world.outbox.pending(REJECTED)
    assert item.key == bad.evaluation_id and item.payload == findings.rows(bad)
    assert item.last_error == f"HTTP 400 InvalidContent: {message}"
    assert world.outbox.count(FINDINGS) == 0
    refused = [r for r in caplog.records if r.levelno == logging.ERROR and "refused" in r.getMessage()]
    assert len(refused) == 1 and message in refused[0].getMessage() and bad.evaluation_id in refused[0].getMessage()

    world.recorder.drain()
    assert len(world.posts()) == 3                       # never retried
    assert world.outbox.count(REJECTED) == 1             # never dropped


def test_a_missing_role_assignment_keeps_rows_for_a_retry_instead_of_rejecting_them(world: World):
    world.azure.logs.faults.add(method="POST", status=403, times=1, body={"error": {
        "code": "OperationFailed", "message": "The authentication token provided does not have access to ingest data "
                                              "for the data collection rule"}})
    evaluations = sweep(1)
    with Budget.of(20).active():
        world.recorder.record(evaluations)
    assert world.outbox.count(REJECTED) == 0
    assert keys(world.kept()) == keys(rows_of(evaluations))
    assert world.recorder.drain().sent == len(RULE_IDS)  # once the role is assigned, they go out
    assert world.received() == rows_of(evaluations)


def test_an_outbox_item_that_is_not_rows_is_set_aside_not_dropped(world: World, caplog):
    world.outbox.put(FINDINGS, "odd", {"not": "a list of rows"})
    with caplog.at_level(logging.ERROR):
        world.recorder.drain()
    assert world.outbox.count(FINDINGS) == 0
    (item,) = world.outbox.pending(REJECTED)
    assert item.payload == {"not": "a list of rows"} and item.last_error == "not a list of finding rows"
    assert "not a list of finding rows" in caplog.text
    assert world.posts() == []


# --- when the rows can be neither sent nor kept -----------------------------------------------------------


def broken_storage(azurite: str) -> object:
    key = azurite.split("AccountKey=")[1].split(";", maxsplit=1)[0]
    return table_service(load({"AzureWebJobsStorage": azurite.replace(key, "bm90IHRoZSBrZXk=")}), None)


def test_an_outbox_that_cannot_be_written_makes_the_invocation_fail(world: World, azurite: str):
    recorder = build_recorder(world.settings, world.credential, broken_storage(azurite))
    world.azure.arm.create(SUB, "rg-dlp", "acrdrift")
    services = replace(world.services(), recorder=recorder)
    world.azure.logs.stop()

    with pytest.raises(RecordingError, match=r"neither delivered .* nor kept"):
        pipeline.run([Target(registry_id(SUB, "rg-dlp", "acrdrift"), Context(trigger="event"))], services)


def test_no_storage_at_all_makes_the_invocation_fail_when_the_upload_fails(world: World):
    recorder = build_recorder(world.settings, world.credential, None)
    world.azure.logs.stop()
    with pytest.raises(RecordingError, match="no storage"), Budget.of(20).active():
        recorder.record(sweep(1))


def test_a_broken_outbox_does_not_fail_an_invocation_whose_rows_were_delivered(world: World, azurite: str, caplog):
    recorder = build_recorder(world.settings, world.credential, broken_storage(azurite))
    evaluations = sweep(2)
    with caplog.at_level(logging.WARNING), Budget.of(20).active():
        recorder.record(evaluations)
    assert world.received() == rows_of(evaluations)
    assert "outbox not readable" in caplog.text


# --- no Log Analytics configured ---------------------------------------------------------------------------


def test_without_logs_settings_nothing_is_uploaded_and_one_notice_says_so(azure_env: LocalAzure, caplog,
                                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DLP_LOGS_ENDPOINT")
    monkeypatch.delenv("DLP_LOGS_RULE_ID")
    settings = load(os.environ)
    assert not settings.logs_enabled
    with caplog.at_level(logging.INFO):
        recorder = build_recorder(settings, ManagedIdentityCredential(), None)
        for _ in range(3):
            recorder.record(sweep(2))
    assert isinstance(recorder, LogRecorder)
    notices = [r for r in caplog.records if "application log only" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING
    lines = [r for r in caplog.records if r.name == "dlp.evaluation" and r.getMessage().startswith("evaluation ")]
    assert len(lines) == 6                                # the structured line per evaluation stays
    assert all("registry=/subscriptions/" in r.getMessage() and "action=would-remediate" in r.getMessage()
               for r in lines)
    assert len(azure_env.logs.log) == 0                   # no upload attempted


def test_the_token_scope_follows_the_cloud_of_the_ingestion_endpoint():
    assert scope_for("https://dcr-1.westeurope-1.ingest.monitor.azure.com") == "https://monitor.azure.com/.default"
    assert scope_for("https://dce-1.usgovvirginia-1.ingest.monitor.azure.us") == "https://monitor.azure.us/.default"
    assert scope_for("https://dce-1.chinaeast2-1.ingest.monitor.azure.cn") == "https://monitor.azure.cn/.default"
    assert scope_for("https://127.0.0.1:4443") == "https://monitor.azure.com/.default"


# --- end to end, through the Functions handlers --------------------------------------------------------------


def registry_event(resource_id: str) -> func.EventGridEvent:
    data = {"claims": {"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "mallory@contoso.com"},
            "correlationId": "corr-outage", "operationName": "Microsoft.ContainerRegistry/registries/write",
            "resourceUri": resource_id, "status": "Succeeded", "subscriptionId": SUB}
    return func.EventGridEvent(id="evt-outage", data=data, topic=f"/subscriptions/{SUB}", subject=resource_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc), data_version="2")


@pytest.fixture
def app_instance(world: World, monkeypatch: pytest.MonkeyPatch):
    """A fresh Function App instance (new composition root) on the emulators and Azurite, alerts off."""
    for name in ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    yield function_app
    runtime.reset()


def test_a_log_analytics_outage_does_not_erase_the_record_of_a_remediation(world: World, app_instance,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    world.azure.arm.create(SUB, "rg-dlp", "acroutage")
    reg = registry_id(SUB, "rg-dlp", "acroutage")
    world.azure.logs.stop()

    app_instance.on_registry_event.build().get_user_function()(registry_event(reg))      # acknowledged, no raise

    assert world.azure.arm.get(reg)["properties"]["publicNetworkAccess"] == "Disabled"   # remediated meanwhile
    kept = world.kept()
    assert {r["Action"] for r in kept} == {"remediated"} and {r["Caller"] for r in kept} == {"mallory@contoso.com"}

    world.azure.logs.start()
    app_instance.outbox_drain.build().get_user_function()(TimerRequest(past_due=False))
    assert world.received() == kept
    assert world.outbox.count(FINDINGS) == 0


def test_the_event_handler_raises_when_rows_can_be_neither_sent_nor_kept(world: World, app_instance, azurite: str,
                                                                       monkeypatch: pytest.MonkeyPatch):
    key = azurite.split("AccountKey=")[1].split(";", maxsplit=1)[0]
    monkeypatch.setenv("AzureWebJobsStorage", azurite.replace(key, "bm90IHRoZSBrZXk="))   # storage refuses us
    world.azure.arm.create(SUB, "rg-dlp", "acrnowhere")
    world.azure.logs.stop()

    with pytest.raises(RecordingError, match="were neither delivered"):    # so Event Grid delivers the event again
        app_instance.on_registry_event.build().get_user_function()(registry_event(registry_id(SUB, "rg-dlp",
                                                                                                "acrnowhere")))
