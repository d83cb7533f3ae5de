"""Dead-lettered events come back: the replay timer (function_app.dead_letter_replay) over blobs Event Grid
wrote into Azurite's blob service in its real shape (dlp/emulator/deadletter.py), through the real pipeline,
ARM emulator and Table/Queue storage; the document parser (Event Grid SDK); `python -m dlp replay`; and
/api/health's dead-letter backlog.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import azure.functions as func
import pytest

import function_app
from dlp import cli, runtime
from dlp.emulator.deadletter import blob_names, container_client, dead_lettered, write_dead_letters
from dlp.inputs import events
from dlp.inputs.event_files import EventDocumentError, load_document, parse_event
from dlp.responder.deadletter import MALFORMED_PREFIX, PROCESSED_PREFIX
from tests.evaluation_log import Evaluations

ROOT = Path(__file__).resolve().parents[1]
SUB = "11111111-2222-3333-4444-555555555555"
OTHER_SUB = "99999999-2222-3333-4444-555555555555"
RG = "rg-dl"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
WRITE = "Microsoft.Resources.ResourceWriteSuccess"
WHEN = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc)

replay_timer = function_app.dead_letter_replay.build().get_user_function()
handle_event = function_app.on_registry_event.build().get_user_function()


def rid(name: str, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{name}"


def raw_event(registry_id: str, *, event_id: str | None = None, caller: str = "mallory@contoso.com",
              schema: str = "eventgrid", kind: str = WRITE, when: dt.datetime = WHEN) -> dict:
    data = {"claims": {UPN: caller}, "correlationId": "corr-dl", "operationName":
            "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id, "status": "Succeeded"}
    event_id = event_id or str(uuid.uuid4())
    stamp = when.isoformat().replace("+00:00", "Z")
    if schema == "cloudevents":
        return {"specversion": "1.0", "id": event_id, "source": f"/subscriptions/{SUB}", "type": kind,
                "subject": registry_id, "time": stamp, "datacontenttype": "application/json", "data": data}
    return {"id": event_id, "topic": f"/subscriptions/{SUB}", "subject": registry_id, "eventType": kind,
            "eventTime": stamp, "data": data, "dataVersion": "2", "metadataVersion": "1"}


@pytest.fixture
def replay(azurite_env, monkeypatch):
    """A fresh app instance in enforce mode with its own dead-letter container (Azurite lives for the session)."""
    container = f"dl-{uuid.uuid4().hex[:16]}"
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "5")
    monkeypatch.setenv("DLP_DEADLETTER_CONTAINER", container)
    runtime.reset()
    with Evaluations() as collector:
        collector.container = container
        collector.connection = azurite_env
        yield collector
    runtime.reset()


def state(azure, registry_id):
    props = azure.arm.get(registry_id)["properties"]
    return props["policies"]["exportPolicy"]["status"], props["publicNetworkAccess"]


def patches_of(azure, name):
    return [r for r in azure.arm.log.filter(method="PATCH") if name in r.path]


def arm_calls(azure):
    return [r for r in azure.arm.log if r.service in ("arm", "arm-op", "graph")]


def get_health():
    request = func.HttpRequest(method="GET", url="https://app.azurewebsites.net/api/health", body=b"")
    response = function_app.health.build().get_user_function()(request)
    return response.status_code, json.loads(response.get_body().decode())


# --- the document parser (Event Grid SDK) ----------------------------------------------------------------

def test_relevant_event_types_are_the_sdks_system_event_names():
    from azure.eventgrid import SystemEventNames

    assert SystemEventNames.ResourceWriteSuccessEventName.value.lower() == events.WRITE_SUCCESS
    assert SystemEventNames.ResourceDeleteSuccessEventName.value.lower() == events.DELETE_SUCCESS


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_a_dead_letter_blob_parses_into_targets_with_its_dead_letter_fields(schema):
    reg = rid("acrparse01")
    blob = [dead_lettered(raw_event(reg, schema=schema), reason="MaxDeliveryAttemptsExceeded", attempts=30,
                          outcome="TimedOut", status=408)]
    (parsed,) = load_document(json.dumps(blob).encode(), trigger="dead-letter")
    assert parsed.dead_letter is not None
    assert parsed.dead_letter.reason == "MaxDeliveryAttemptsExceeded" and parsed.dead_letter.delivery_attempts == 30
    assert parsed.dead_letter.last_outcome == "TimedOut" and parsed.dead_letter.last_http_status == 408
    assert parsed.event_time == WHEN
    (target,) = parsed.intake.targets
    assert target.registry_id == reg and target.context.trigger == "dead-letter"
    assert target.context.caller == "mallory@contoso.com"


@pytest.mark.parametrize("content, why", [
    (b"{not json", "is not JSON"),
    (b"\xff\xfe\x00", "is not JSON"),
    (b"42", "is not an event"),
    (b'"text"', "is not an event"),
    (json.dumps([{}] * 6000).encode(), "at most 5000"),
])
def test_a_document_that_is_not_events_is_one_clear_error(content, why):
    with pytest.raises(EventDocumentError, match=why):
        load_document(content)


def test_the_sdks_coercions_never_make_a_target_out_of_a_non_string():
    reg = rid("acrcoerce1")
    body = raw_event(reg)
    body["subject"] = [reg]                       # the SDK would turn it into the text "['...']"
    body["data"]["resourceUri"] = {"id": reg}
    assert parse_event(body).intake.targets == ()
    body = raw_event(reg)
    body["eventType"] = ["Microsoft.Resources.ResourceWriteSuccess"]
    assert parse_event(body).intake.malformed == "event has no event type"


def test_an_event_the_sdk_refuses_is_still_handled_when_it_names_a_registry():
    """A CloudEvent without `source` or with a time nobody can parse: the SDK refuses it, the registry it names
    is still re-read (a read can never cause a wrong write); its time is unknown."""
    reg = rid("acrnosrc01")
    body = raw_event(reg, schema="cloudevents")
    del body["source"]
    body["time"] = "yesterday"
    parsed = parse_event(body)
    assert [t.registry_id for t in parsed.intake.targets] == [reg]
    assert parsed.event_time is None and parsed.intake.targets[0].context.event_time == ""


# --- the replay timer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_a_dead_lettered_drift_is_remediated_and_recorded_with_its_reason_and_delay(replay, local_azure, schema):
    name = f"acrdlfix{schema[:4]}"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    blob = write_dead_letters(replay.connection, replay.container,
                              [dead_lettered(raw_event(reg, schema=schema), reason="MaxDeliveryAttemptsExceeded")],
                              when=WHEN)
    replay_timer(None)
    assert state(local_azure, reg) == ("disabled", "Disabled")
    (record,) = replay.take(reg)
    assert record["action"] == "remediated" and record["trigger"] == "dead-letter"
    rows = [r for r in local_azure.logs.rows() if r["RegistryId"] == reg]
    assert rows and {r["DeadLetterReason"] for r in rows} == {"MaxDeliveryAttemptsExceeded"}
    assert {r["Trigger"] for r in rows} == {"dead-letter"}
    assert min(r["ReplayDelaySeconds"] for r in rows) >= (dt.datetime.now(dt.timezone.utc) - WHEN).total_seconds() - 60
    assert blob_names(replay.connection, replay.container) == [PROCESSED_PREFIX + blob]
    replay_timer(None)                                    # nothing left: no second evaluation
    assert replay.take(reg) == [] and len(patches_of(local_azure, name)) == 1


def test_a_duplicate_of_an_event_already_handled_live_changes_nothing_and_alerts_once(replay, local_azure):
    name = "acrdldup01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    raw = raw_event(reg, event_id="ev-dup-1")
    handle_event(func.EventGridEvent(id=raw["id"], data=raw["data"], topic=raw["topic"], subject=reg,
                                     event_type=WRITE, event_time=WHEN, data_version="2"))
    cards = len(local_azure.teams.messages)
    assert cards == 1
    write_dead_letters(replay.connection, replay.container, [dead_lettered(raw), dead_lettered(raw)])
    runtime.reset()                                        # another instance replays it
    replay_timer(None)
    assert len(patches_of(local_azure, name)) == 1
    assert [r["action"] for r in replay.take(reg)] == ["remediated", "none"]   # the duplicate in the blob: once
    registry_cards = [m for m in local_azure.teams.messages if "Events were dead-lettered" not in json.dumps(m)]
    assert len(registry_cards) == cards                   # no state change: no second alert about the registry
    assert len(cards_about_dead_letters(local_azure)) == 1      # only that events were dead-lettered
    assert blob_names(replay.connection, replay.container)[0].startswith(PROCESSED_PREFIX)


def test_an_event_for_a_deleted_registry_is_recorded_gone_and_the_blob_done(replay, local_azure):
    reg = rid("acrdlgone1")
    write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(reg))])
    replay_timer(None)
    assert [r["action"] for r in replay.take(reg)] == ["gone"]
    assert blob_names(replay.connection, replay.container)[0].startswith(PROCESSED_PREFIX)


def test_a_malformed_blob_is_set_aside_once_and_the_others_are_replayed(replay, local_azure):
    name = "acrdlmal01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    bad = write_dead_letters(replay.connection, replay.container, b'[{"id": "cut off', when=WHEN)
    good = write_dead_letters(replay.connection, replay.container,
                              [dead_lettered(raw_event(reg)), dead_lettered({"id": 7, "what": "not an event"}),
                               dead_lettered(raw_event(reg, kind="Microsoft.Resources.ResourceActionSuccess"))],
                              topic="systemtopic-acr")
    replay_timer(None)
    assert state(local_azure, reg) == ("disabled", "Disabled")
    assert sorted(blob_names(replay.connection, replay.container)) == sorted([MALFORMED_PREFIX + bad,
                                                                              PROCESSED_PREFIX + good])
    status, body = get_health()
    assert status == 200 and body["status"] == "degraded"
    assert body["deadLetters"] == {"container": replay.container, "pending": 0, "oldestAgeSeconds": None,
                                   "malformed": 1}
    replay_timer(None)                                     # set aside: not read every 5 minutes
    assert replay.take(reg) and len(patches_of(local_azure, name)) == 1


def test_health_counts_waiting_dead_letters_and_the_age_of_the_oldest(replay, local_azure):
    container_client(replay.connection, replay.container)          # infra/ creates it
    status, body = get_health()
    assert status == 200 and body["status"] == "ok" and body["outputs"]["deadLetterReplay"] is True
    assert body["deadLetters"]["pending"] == 0
    write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(rid("acrdlhlth1")))])
    write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(rid("acrdlhlth2")))])
    time.sleep(1.1)
    status, body = get_health()
    assert status == 200 and body["status"] == "degraded"
    assert body["deadLetters"]["pending"] == 2 and body["deadLetters"]["oldestAgeSeconds"] >= 1


def test_health_says_when_the_container_cannot_be_read(replay, monkeypatch):
    monkeypatch.setenv("DLP_DEADLETTER_CONTAINER", "no-such-container-here")
    runtime.reset()
    status, body = get_health()
    assert status == 200 and body["status"] == "degraded"
    assert "404" in body["deadLetters"]["error"] and "container does not exist" in body["deadLetters"]["error"]


def test_in_audit_mode_a_replayed_drift_is_only_reported(replay, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "audit")
    runtime.reset()
    name = "acrdlaudit"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Enabled")
    write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(reg))])
    replay_timer(None)
    assert patches_of(local_azure, name) == []
    assert [r["action"] for r in replay.take(reg)] == ["would-remediate"]


def test_a_planted_dead_letter_cannot_widen_what_the_responder_touches(replay, local_azure, monkeypatch):
    """Anyone holding the storage account's keys can write a blob. A planted event still goes through intake
    and a fresh read: a registry outside DLP_SCOPES is not even read, and hostile text stays text."""
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}")
    runtime.reset()
    outside = rid("acrdlout01", sub=OTHER_SUB)
    local_azure.arm.create(OTHER_SUB, RG, "acrdlout01", export="enabled", public="Enabled")
    hostile = "admin@contoso.com\u202e\n[evil](https://x)"
    write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(outside, caller=hostile))])
    replay_timer(None)
    assert arm_calls(local_azure) == [] and patches_of(local_azure, "acrdlout01") == []
    assert state(local_azure, outside) == ("enabled", "Enabled")
    assert blob_names(replay.connection, replay.container)[0].startswith(PROCESSED_PREFIX)


def test_a_huge_blob_is_set_aside_without_being_downloaded(replay, local_azure, monkeypatch):
    import dlp.inputs.event_files

    monkeypatch.setattr(dlp.inputs.event_files, "MAX_DOCUMENT_BYTES", 1024)      # our limit, not the SDK's
    name = write_dead_letters(replay.connection, replay.container, b"[" + b" " * 4096 + b"]")
    replay_timer(None)
    assert blob_names(replay.connection, replay.container) == [MALFORMED_PREFIX + name]
    assert [r for r in local_azure.arm.log] == []


CHILD = """
import sys
sys.path.insert(0, ".")
import function_app
function_app.dead_letter_replay.build().get_user_function()(None)
"""


def test_a_crash_mid_blob_replays_the_whole_blob_once_more_and_nothing_twice(replay, local_azure, azurite_env):
    """The instance dies after the first event's PATCH, inside the second event's read: the blob stays;
    the next run (another instance) replays both, the first is now compliant, the second is fixed, the blob
    moves to processed/ once."""
    first, second = rid("acrdlcrsh1"), rid("acrdlcrsh2")
    local_azure.arm.create(SUB, RG, "acrdlcrsh1", export="enabled", public="Disabled")
    local_azure.arm.create(SUB, RG, "acrdlcrsh2", export="enabled", public="Disabled")
    blob = write_dead_letters(replay.connection, replay.container,
                              [dead_lettered(raw_event(first)), dead_lettered(raw_event(second))])
    local_azure.arm.faults.add("GET", path="acrdlcrsh2", mode="hang", times=None)
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env=dict(os.environ),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not local_azure.arm.log.filter(method="GET", path_contains="acrdlcrsh2"):
            assert time.monotonic() < deadline and child.poll() is None, child.stderr.read() if child.poll() else ""
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)                 # dies between two lines, wherever it was
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert len(patches_of(local_azure, "acrdlcrsh1")) == 1 and patches_of(local_azure, "acrdlcrsh2") == []
    assert blob_names(replay.connection, replay.container) == [blob]           # not marked: replayed again
    local_azure.arm.faults.clear()
    from dlp.responder.lease import SPECULATIVE_TTL_S

    time.sleep(SPECULATIVE_TTL_S)       # the next run comes minutes later: the dead reader's short lease has expired
    runtime.reset()
    replay.take()
    replay_timer(None)
    assert state(local_azure, first) == ("disabled", "Disabled") and state(local_azure, second) == ("disabled", "Disabled")
    assert len(patches_of(local_azure, "acrdlcrsh1")) == 1 and len(patches_of(local_azure, "acrdlcrsh2")) == 1
    records = replay.take()
    assert [r["action"] for r in records if r["registryId"] == first] == ["none"]
    assert [r["action"] for r in records if r["registryId"] == second] == ["remediated"]
    assert blob_names(replay.connection, replay.container) == [PROCESSED_PREFIX + blob]


def test_a_blob_whose_marking_fails_is_replayed_next_run_without_a_second_write(replay, local_azure):
    """Handled, then the move to processed/ is refused (the storage account's network rules, a 403): the
    blob stays and the next run handles its events again, harmlessly."""
    name = "acrdlmark1"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    blob = write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(reg))])
    from dlp.responder.deadletter import DeadLetterContainer

    def refused(self, *args, **kwargs):
        from azure.core.exceptions import HttpResponseError

        raise HttpResponseError(message="This request is not authorized to perform this operation.")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DeadLetterContainer, "settle", refused)     # our adapter, not the SDK
        replay_timer(None)                                       # reported, not raised: the other blobs go on
    assert blob_names(replay.connection, replay.container) == [blob]
    (card,) = cards_about_dead_letters(local_azure)
    assert "could not be replayed" in card
    runtime.reset()
    replay_timer(None)
    assert [r["action"] for r in replay.take(reg)] == ["remediated", "none"]
    assert len(patches_of(local_azure, name)) == 1
    assert blob_names(replay.connection, replay.container) == [PROCESSED_PREFIX + blob]


# --- python -m dlp replay ---------------------------------------------------------------------------------

def test_cli_replay_of_a_file_is_plan_only(replay, local_azure, tmp_path, capsys):
    name = "acrdlcli01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    path = tmp_path / "events.json"
    path.write_text(json.dumps([dead_lettered(raw_event(reg, event_id="ev-cli-1"), reason="TimeToLiveExceeded")]))
    code = cli.main(["replay", str(path), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1                                       # drift found (before any remediation)
    assert out[0]["registryId"] == reg and out[0]["action"] == "would-remediate"
    assert out[0]["deadLetterReason"] == "TimeToLiveExceeded" and out[0]["eventId"] == "ev-cli-1"
    assert patches_of(local_azure, name) == []


def test_cli_replay_remediate_follows_the_clis_one_rule_confirmation_not_dlp_mode(replay, local_azure, tmp_path,
                                                                                  capsys, monkeypatch):
    """As `scan --remediate`: without a terminal and without --yes it refuses before any Azure call; with --yes
    it writes whatever DLP_MODE says (that is the deployed app's setting); answered no on a terminal, plan only."""
    name = "acrdlcli02"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(raw_event(reg)))
    monkeypatch.setenv("DLP_MODE", "audit")
    local_azure.arm.log.reset()
    assert cli.main(["replay", str(path), "--remediate"]) == 2
    assert "pass --yes" in capsys.readouterr().err and len(local_azure.arm.log) == 0

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert cli.main(["replay", str(path), "--remediate"]) == 1
    captured = capsys.readouterr()
    assert "[y/N]" in captured.err and "not confirmed" in captured.err and "would-remediate" in captured.out
    assert patches_of(local_azure, name) == []
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["replay", str(path), "--remediate", "--yes"]) == 1
    assert "remediated" in capsys.readouterr().out and len(patches_of(local_azure, name)) == 1


def test_cli_replay_an_azure_failure_is_exit_2_with_the_error_said_once(replay, local_azure, tmp_path, capsys):
    name = "acrdlcli05"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")
    local_azure.arm.faults.add(method="GET", path=f"{name}$", status=403, service="arm",
                               body={"error": {"code": "AuthorizationFailed", "message": "no read on acrdlcli05"}})
    path = tmp_path / "event.json"
    path.write_text(json.dumps(raw_event(reg)))
    assert cli.main(["replay", str(path)]) == 2
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if name in line)
    assert " error " in row and "no read on acrdlcli05" in row
    assert row.count("AuthorizationFailed") == 1, row         # no "code: code: message"


def test_cli_replay_leaves_events_outside_the_scope_given_unread(replay, local_azure, tmp_path, capsys):
    inside, outside = rid("acrdlcli06"), rid("acrdlcli07").replace(RG, "rg-elsewhere")
    local_azure.arm.create(SUB, RG, "acrdlcli06", export="disabled", public="Disabled")
    path = tmp_path / "events.json"
    path.write_text(json.dumps([raw_event(inside, event_id="ev-in"), raw_event(outside, event_id="ev-out")]))
    local_azure.arm.log.reset()
    code = cli.main(["replay", str(path), "-s", SUB, "-g", RG, "-o", "json"])
    lines = json.loads(capsys.readouterr().out)
    assert code in (0, 1)
    assert {line["eventId"]: "ignored" in line for line in lines} == {"ev-in": False, "ev-out": True}
    assert not [r for r in local_azure.arm.log if "acrdlcli07" in r.path]


def test_cli_replay_reads_the_dead_letter_container_and_leaves_it(replay, local_azure, capsys):
    reg = rid("acrdlcli03")
    local_azure.arm.create(SUB, RG, "acrdlcli03", export="disabled", public="Disabled")
    blob = write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(reg))])
    assert cli.main(["replay", "--dead-letter"]) == 1       # other rules fail (no private endpoint...)
    out = capsys.readouterr().out
    assert "acrdlcli03" in out and " none " in out and "MaxDeliveryAttemptsExceeded" in out
    assert blob_names(replay.connection, replay.container) == [blob]


def test_cli_replay_reports_unreadable_input_in_one_line(replay, tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("[{")
    assert cli.main(["replay", str(path), str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "broken.json is not JSON" in err and "missing.json" in err and "Traceback" not in err


def test_cli_replay_shows_hostile_text_as_one_plain_line(replay, local_azure, tmp_path, capsys):
    path = tmp_path / "event.json"
    body = raw_event(rid("acrdlcli04"), event_id="ev\u202e\u200bX\nY")
    body["eventType"] = "Custom\u202eEvent\nType"
    path.write_text(json.dumps(body))
    assert cli.main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\u202e" not in out and "\u200b" not in out and "evX Y" in out and "CustomEvent Type" in out


# --- the "events were dead-lettered" alert ----------------------------------------------------------------

def cards_about_dead_letters(azure):
    return [json.dumps(m) for m in azure.teams.messages if "Events were dead-lettered" in json.dumps(m)]


def test_dead_letters_are_announced_once_per_batch_naming_the_reason(replay, local_azure):
    name = "acrdlann01"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")
    write_dead_letters(replay.connection, replay.container,
                       [dead_lettered(raw_event(reg), reason="MaxDeliveryAttemptsExceeded")])
    replay_timer(None)
    (card,) = cards_about_dead_letters(local_azure)
    assert "MaxDeliveryAttemptsExceeded" in card and "1 event replayed" in card and name in card
    mails = [m for m in local_azure.email.sent if "dead-lettered" in json.dumps(m)]
    assert len(mails) == 1
    replay_timer(None)                                     # nothing new: nothing announced
    runtime.reset()                                        # nor by another instance
    replay_timer(None)
    assert len(cards_about_dead_letters(local_azure)) == 1
    write_dead_letters(replay.connection, replay.container,
                       [dead_lettered(raw_event(reg), reason="TimeToLiveExceeded")])
    replay_timer(None)
    assert len(cards_about_dead_letters(local_azure)) == 2
    assert "TimeToLiveExceeded" in cards_about_dead_letters(local_azure)[1]


def test_a_planted_reason_is_shown_as_plain_text(replay, local_azure):
    reg = rid("acrdlann02")
    local_azure.arm.create(SUB, RG, "acrdlann02", export="disabled", public="Disabled")
    write_dead_letters(replay.connection, replay.container,
                       [dead_lettered(raw_event(reg), reason="Max\u202eDelivery\u200b\n**[click](https://evil)**")])
    replay_timer(None)
    (card,) = cards_about_dead_letters(local_azure)
    assert "\\u202e" not in card and "\\u200b" not in card and "\\n**[click]" not in card


def test_a_blob_that_cannot_be_moved_never_holds_up_the_others(replay, local_azure):
    """Someone holding the account's keys takes an infinite lease on an old blob: its move to processed/ is refused.
    It is reported, alerted and tried again next run; the newer blob's drift is fixed all the same."""
    from azure.storage.blob import BlobClient

    stuck = write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(rid("acrdlleas1")))])
    BlobClient.from_connection_string(replay.connection, replay.container, stuck).acquire_lease(lease_duration=-1)
    time.sleep(0.05)
    name = "acrdlleas2"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    later = write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(reg))])
    replay_timer(None)
    assert state(local_azure, reg) == ("disabled", "Disabled")
    names = blob_names(replay.connection, replay.container)
    assert stuck in names and PROCESSED_PREFIX + later in names
    (card,) = cards_about_dead_letters(local_azure)
    assert "could not be replayed" in card and "lease" in card.lower()


def test_a_blob_of_thousands_of_events_costs_one_read_per_registry(replay, local_azure):
    name = "acrdlmany1"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")
    events_ = [dead_lettered(raw_event(reg)) for _ in range(2000)]        # distinct event IDs: no dedup by ID
    write_dead_letters(replay.connection, replay.container, events_)
    replay_timer(None)
    assert [r.method for r in arm_calls(local_azure)] == ["GET", "PATCH"]
    assert [r["action"] for r in replay.take(reg)] == ["remediated"]
    assert blob_names(replay.connection, replay.container)[0].startswith(PROCESSED_PREFIX)


def test_a_blob_the_run_has_no_time_for_goes_to_the_durable_retry_and_is_moved(replay, local_azure, azurite_env):
    from azure.storage.queue import QueueClient

    from dlp.responder.deadletter import Replayer
    from dlp.settings import RETRY_QUEUE

    regs = [rid(f"acrdltime{i}") for i in range(3)]
    for i in range(3):
        local_azure.arm.create(SUB, RG, f"acrdltime{i}", export="disabled", public="Disabled")
    blob = write_dead_letters(replay.connection, replay.container, [dead_lettered(raw_event(r)) for r in regs])
    services = runtime.services()
    services.retry.base_delay_s = 0                # visible at once, so that the test can see the hand-over
    local_azure.set_latency(1.5)                   # the first read leaves less than the minimum for the next
    report = Replayer(services, services.dead_letters).run(budget_s=6.0)
    local_azure.set_latency(0)
    assert report.blobs[0].settled == "processed" and len(report.blobs[0].evaluations) == 1
    assert blob_names(replay.connection, replay.container) == [PROCESSED_PREFIX + blob]
    queue = QueueClient.from_connection_string(azurite_env, RETRY_QUEUE)
    handed = []
    for message in queue.peek_messages(max_messages=32):
        body = json.loads(__import__("base64").b64decode(message.content))
        if body.get("registryId") in regs:
            handed.append(body)
    queued = sorted(b["registryId"] for b in handed)
    assert queued == sorted(regs[1:]) and all(b["enforce"] is True for b in handed)


# --- claims read from a blob are never "verified" on their own ------------------------------------------------


def test_claims_in_a_dead_letter_blob_are_recorded_unverified(replay, local_azure):
    """Anyone who can write to the dead-letter container can write an event naming anyone: the caller is recorded
    with CallerVerified false and the alert says so, because change history names someone else for that write."""
    name = "acrdlforge1"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")
    local_azure.arm.write(reg, {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}},
                          caller="mallory@contoso.com", correlation_id="corr-forged")
    forged = raw_event(reg, caller="alice@contoso.com", when=dt.datetime.now(dt.timezone.utc))
    forged["data"]["correlationId"] = "corr-forged"
    write_dead_letters(replay.connection, replay.container, [dead_lettered(forged)])
    replay_timer(None)
    rows = [r for r in local_azure.logs.rows() if r["RegistryId"] == reg]
    assert rows and {(r["Caller"], r["CallerVerified"]) for r in rows} == {("alice@contoso.com", False)}
    named = [json.dumps(m) for m in local_azure.teams.messages if "alice@contoso.com" in json.dumps(m)]
    assert named and all(c.count("alice@contoso.com") == c.count("alice@contoso.com (unverified: read from a "
                                                                 "dead-letter blob") for c in named)


def test_claims_in_a_dead_letter_blob_that_change_history_confirms_are_verified(replay, local_azure):
    name = "acrdlconfirm"
    reg = rid(name)
    local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")
    local_azure.arm.write(reg, {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}},
                          caller="mallory@contoso.com", correlation_id="corr-real")
    real = raw_event(reg, caller="mallory@contoso.com", when=dt.datetime.now(dt.timezone.utc))
    real["data"]["correlationId"] = "corr-real"
    write_dead_letters(replay.connection, replay.container, [dead_lettered(real)])
    replay_timer(None)
    rows = [r for r in local_azure.logs.rows() if r["RegistryId"] == reg]
    assert rows and {(r["Caller"], r["CallerVerified"]) for r in rows} == {("mallory@contoso.com", True)}
