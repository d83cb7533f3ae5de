"""Exposure windows (dlp/domain/exposure.py, pure) and the emulated `resourcechanges` table they are read from."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dlp.azure.graph import ResourceGraph, changes_query
from dlp.domain import exposure, provenance
from dlp.domain.exposure import CLOSED_BY_DELETION, CLOSED_BY_PERSON, CLOSED_BY_RESPONDER, STILL_OPEN, windows
from dlp.domain.intent import PENDING, Intent
from dlp.domain.model import Change
from dlp.emulator import registry_id
from dlp.emulator.changes import ChangeLog
from dlp.emulator.tokens import SYSTEM_CLIENT_ID

SUB = "11111111-2222-3333-4444-555555555555"
REG = registry_id(SUB, "rg", "acrone")
REG2 = registry_id(SUB, "rg", "acrtwo")
T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
RESPONDER = "9f1c0a3e-0000-4000-8000-00000000abcd"


def base(export="disabled", public="Disabled"):
    return {"id": REG, "properties": {"policies": {"exportPolicy": {"status": export}}, "publicNetworkAccess": public,
                                      "adminUserEnabled": False}}


def row(log: ChangeLog, before, after, who, at, target=REG, change_type="Update", correlation=""):
    before = {**before, "id": target}
    after = {**after, "id": target}
    return log.record(before, after, changed_by=who, at=at, change_type=change_type, correlation_id=correlation)


def flip(log, who, at, export, target=REG):
    old = "enabled" if export == "disabled" else "disabled"
    return row(log, base(export=old), base(export=export), who, at, target)


def test_flip_and_restore_within_a_second_is_one_closed_window():
    log = ChangeLog()
    flip(log, "mallory@contoso.com", T0, "enabled")
    flip(log, "mallory@contoso.com", T0 + timedelta(milliseconds=800), "disabled")
    found = windows(log.rows())[REG.lower()]
    assert len(found) == 1
    window = found[0]
    assert window.property == "policies.exportPolicy.status"
    assert window.opened_at == T0 and window.closed_at == T0 + timedelta(milliseconds=800)
    assert window.seconds() == 0.8
    assert window.opened_by == window.closed_by == "mallory@contoso.com"
    assert window.closer == CLOSED_BY_PERSON
    assert window.sentence() == ("Registry was open for 0.8 s: exports enabled by mallory@contoso.com at "
                                 "2026-11-30T12:00:00Z, disabled by mallory@contoso.com at 2026-11-30T12:00:00.800000Z")


def test_a_window_still_open_has_no_end_and_counts_until_asked():
    log = ChangeLog()
    row(log, base(public="Disabled"), base(public="Enabled"), "eve@contoso.com", T0)
    (window,) = windows(log.rows())[REG.lower()]
    assert window.closer == STILL_OPEN and window.closed_at is None
    assert window.seconds() is None
    assert window.seconds(T0 + timedelta(minutes=5)) == 300
    assert window.sentence(T0 + timedelta(minutes=5)).startswith("Registry is open for 300 s: public network access")


def test_several_windows_and_two_callers_in_order():
    log = ChangeLog()
    flip(log, "alice@contoso.com", T0, "enabled")
    flip(log, "bob@contoso.com", T0 + timedelta(seconds=10), "disabled")
    flip(log, "bob@contoso.com", T0 + timedelta(seconds=60), "enabled")
    flip(log, "alice@contoso.com", T0 + timedelta(seconds=90), "disabled")
    row(log, base(), {**base(), "properties": {**base()["properties"], "adminUserEnabled": True}}, "carol@contoso.com",
        T0 + timedelta(seconds=70))
    found = windows(log.rows())[REG.lower()]
    assert [(w.property, w.opened_by, w.closed_by, w.seconds()) for w in found] == [
        ("policies.exportPolicy.status", "alice@contoso.com", "bob@contoso.com", 10),
        ("policies.exportPolicy.status", "bob@contoso.com", "alice@contoso.com", 30),
        ("adminUserEnabled", "carol@contoso.com", "", None),
    ]
    assert len({w.key for w in found}) == 3


def test_a_window_closed_by_the_responder_says_so_when_provenance_says_it_was_our_write():
    """Whether a close was the responder's is not decided here: provenance's predicate says it (our identity, our
    intent's correlation ID, in its time, the first change carrying it, the intent's property and value)."""
    log = ChangeLog()
    row(log, base(public="Disabled"), base(public="Enabled"), "mallory@contoso.com", T0)
    row(log, base(public="Enabled"), base(public="Disabled"), RESPONDER.upper(), T0 + timedelta(seconds=3),
        correlation="intent-1")
    intent = Intent((T0 + timedelta(seconds=2)).isoformat(), "mallory@contoso.com", "intent-1",
                    (Change("publicNetworkAccess", "Enabled", "Disabled"),), status=PENDING,
                    until=(T0 + timedelta(seconds=30)).timestamp())
    records = exposure.histories(log.rows())[REG.lower()]
    closes = provenance.responder_closes(records, [intent], provenance.Responder.of(app_ids=[RESPONDER]))
    (window,) = exposure.registry_windows(records, closes)
    assert window.closer == CLOSED_BY_RESPONDER
    assert "disabled by the responder" in window.sentence()
    (unjudged,) = windows(log.rows())[REG.lower()]           # no predicate: nobody's close is taken as ours
    assert unjudged.closer == CLOSED_BY_PERSON and "disabled by 9F1C0A3E" in unjudged.sentence()


def test_windows_of_two_registries_are_kept_apart_and_rows_in_any_order():
    log = ChangeLog()
    flip(log, "a@x", T0, "enabled", REG)
    flip(log, "b@x", T0 + timedelta(seconds=1), "enabled", REG2)
    flip(log, "a@x", T0 + timedelta(seconds=2), "disabled", REG)
    found = windows(list(reversed(log.rows())) + log.rows())       # duplicates count once
    assert len(found[REG.lower()]) == 1 and found[REG.lower()][0].closed
    assert len(found[REG2.lower()]) == 1 and not found[REG2.lower()][0].closed


def test_opened_before_the_history_and_deleted_while_open():
    log = ChangeLog()
    flip(log, "a@x", T0, "disabled")                   # no opening change in the rows
    row(log, base(public="Disabled"), base(public="Enabled"), "b@x", T0 + timedelta(seconds=5))
    row(log, base(public="Enabled"), base(public="Enabled"), "c@x", T0 + timedelta(seconds=9), change_type="Delete")
    first, second = windows(log.rows())[REG.lower()]
    assert first.opened_at is None and first.closed_at == T0 and first.seconds() is None
    assert "unknown time" in first.sentence()
    assert second.closer == CLOSED_BY_DELETION and second.seconds() == 4


def test_hostile_changed_by_is_shown_safely():
    hostile = "Mallory\u202e\u200bmoc.osotnoc@eciffo-ti\n\r\x1b[31m " + "x" * 400
    log = ChangeLog()
    flip(log, hostile, T0, "enabled")
    flip(log, "ｍａｌｌｏｒｙ", T0 + timedelta(seconds=1), "disabled")        # fullwidth letters fold to ASCII
    (window,) = windows(log.rows())[REG.lower()]
    text = window.sentence()
    assert "\u202e" not in text and "\u200b" not in text and "\n" not in text and "\x1b" not in text
    assert "disabled by mallory at" in text
    assert len(exposure.display_text(hostile)) <= exposure.MAX_DISPLAY
    assert window.to_json()["openedBy"].startswith("Mallorymoc.osotnoc")


def test_rows_that_are_not_changes_are_skipped():
    junk = [None, 3, {}, {"properties": "x"}, {"properties": {"targetResourceId": REG}},
            {"properties": {"targetResourceId": REG, "changeAttributes": {"timestamp": "not a time"}}},
            {"properties": {"targetResourceId": REG, "changeAttributes": {"timestamp": "2026-11-30T12:00:00Z"},
                            "changes": {"properties.publicNetworkAccess": "Enabled"}}}]
    assert windows(junk) == {REG.lower(): ()}


@pytest.mark.parametrize("text, seconds", [("7d", 604800), ("36h", 129600), ("90m", 5400), ("600", 600)])
def test_parse_since(text, seconds):
    assert exposure.parse_since(text) == seconds


def test_parse_since_refuses_junk():
    with pytest.raises(ValueError):
        exposure.parse_since("a week")


def test_parse_time_takes_azure_spellings():
    assert exposure.parse_time("2024-04-09T13:26:17.347+00:00") == datetime(2024, 4, 9, 13, 26, 17, 347000,
                                                                             tzinfo=timezone.utc)
    assert exposure.parse_time("2024-04-09T13:26:17.3470000Z").microsecond == 347000
    assert exposure.parse_time("yesterday") is None


def test_changes_query_refuses_what_is_not_a_registry_id():
    assert "targetResourceId in~ ('" + REG + "')" in changes_query(T0, [REG])
    with pytest.raises(ValueError):
        changes_query(T0, [REG + "' or 1==1 //"])


# --- the emulator's resourcechanges table, read by the real adapter over HTTPS --------------------


def test_emulator_records_every_write_and_answers_with_lag(azure_env):
    local_azure = azure_env
    arm = local_azure.arm
    arm.create(SUB, "rg", "acrone", export="disabled", public="Disabled")
    arm.write(REG, {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}}, caller="mallory@contoso.com")
    arm.graph.changes.lag_s = 3600
    arm.write(REG, {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}, caller="mallory@contoso.com")
    graph = ResourceGraph(arm.url, local_azure.credential())
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    rows = [r for page in graph.changes(since, registry_ids=[REG]) for r in page.rows]
    assert len(rows) == 1                                    # the second is not visible yet
    change = rows[0]["properties"]
    assert change["changeAttributes"]["changedBy"] == "mallory@contoso.com"
    assert change["changes"]["properties.policies.exportPolicy.status"] == {
        "previousValue": "disabled", "newValue": "enabled", "changeCategory": "User", "propertyChangeType": "Update",
        "isTruncated": "false"}
    arm.graph.changes.lag_s = 0
    assert len(arm.graph.changes.rows()) == 2


def test_emulator_pages_change_rows_by_1000(azure_env):
    local_azure = azure_env
    arm = local_azure.arm
    arm.create(SUB, "rg", "acrone", export="disabled")
    for i in range(1001):
        flip(arm.graph.changes, "a@x", T0 + timedelta(seconds=i), "enabled" if i % 2 == 0 else "disabled")
    graph = ResourceGraph(arm.url, local_azure.credential())
    pages = list(graph.changes(T0, subscriptions=[SUB]))
    assert [len(p.rows) for p in pages] == [1000, 1]
    found = windows([r for p in pages for r in p.rows])[REG.lower()]
    assert len(found) == 501 and not found[-1].closed


def test_responder_patch_is_recorded_with_its_client_id(azure_env):
    local_azure = azure_env
    from dlp.azure.arm import ArmGateway

    arm = local_azure.arm
    arm.create(SUB, "rg", "acrone", export="enabled", public="Enabled")
    gateway = ArmGateway(arm.url, local_azure.credential())
    gateway.update_registry(REG, {"properties": {"publicNetworkAccess": "Disabled"}})
    (change,) = arm.graph.changes.rows()
    assert change["properties"]["changeAttributes"]["changedBy"] == SYSTEM_CLIENT_ID
    assert "properties.publicNetworkAccess" in change["properties"]["changes"]


# --- infra: the exposure workbook reads columns the rows carry --------------------------------------


def test_exposure_workbook_reads_declared_columns_and_is_wired_in_main():
    import json
    import re
    from pathlib import Path

    from dlp.outputs import findings

    infra = Path(__file__).resolve().parents[1] / "infra"
    module = (infra / "app" / "exposure-workbook.bicep").read_text()
    used = set(re.findall(r"\b(Exposure\w+|RegistryName|EvaluationId|RuleId|Action|TimeGenerated)\b", module))
    assert {"ExposureSeconds", "ExposureOpenedAt", "ExposureClosedAt", "ExposureOpenedBy", "ExposureClosedBy",
            "ExposurePulls", "ExposurePullsNote"} <= used
    assert used <= set(findings.COLUMN_NAMES)
    declared = {c["name"]: c["type"] for c in json.loads((infra / "app" / "findings-columns.json").read_text())}
    assert declared["ExposureOpenedAt"] == declared["ExposureClosedAt"] == "datetime"
    assert declared["ExposureSeconds"] == "real" and declared["ExposurePulls"] == "int"
    assert declared["ExposurePullDetails"] == "dynamic"
    main = (infra / "main.bicep").read_text()
    wiring = re.search(r"module exposureWorkbook 'app/exposure-workbook\.bicep' = \{(.*?)\n\}", main, re.DOTALL)
    assert wiring and "workspaceName: monitoring.outputs.workspaceName" in wiring.group(1)
    params = set(re.findall(r"^param (\w+)", module, re.MULTILINE))
    given = set(re.findall(r"^\s{4}(\w+):", wiring.group(1), re.MULTILINE))
    assert given == params


def test_exposure_rows_carry_the_window_and_agree_with_the_columns():
    from dlp.outputs import findings
    from dlp.responder import timeline

    log = ChangeLog()
    flip(log, "mallory@contoso.com", T0, "enabled")
    flip(log, "bob@contoso.com", T0 + timedelta(seconds=90), "disabled")
    (window,) = windows(log.rows())[REG.lower()]
    evaluation = timeline.evaluation_of(window, trigger="retry", mode="audit", started_at=T0.isoformat())
    assert evaluation.evaluation_id == timeline.evaluation_of(window, trigger="sweep", mode="enforce",
                                                              started_at="x").evaluation_id
    (row,) = findings.rows(evaluation)
    assert tuple(sorted(row)) == tuple(sorted(findings.COLUMN_NAMES))
    assert (row["Action"], row["RuleId"], row["Status"]) == ("exposure", "DLP.ACR.ExportPolicy", "fail")
    assert row["ExposureOpenedAt"] == "2026-11-30T12:00:00Z" and row["ExposureClosedAt"] == "2026-11-30T12:01:30Z"
    assert row["ExposureSeconds"] == 90 and row["ExposureOpenedBy"] == "mallory@contoso.com"
    assert row["ExposureClosedBy"] == "bob@contoso.com"
    assert row["Message"] == window.sentence()


def test_remediation_window_from_event_time_never_negative():
    from dlp.domain.exposure import remediation_exposure

    window = remediation_exposure("2026-11-30T12:00:00Z", "eve\u202e@x", ["publicNetworkAccess"],
                                  T0 + timedelta(seconds=4))
    assert window.seconds == 4 and window.opened_by == "eve@x" and window.closed_by == "responder"
    ahead = remediation_exposure("2026-11-30T12:00:09Z", "eve@x", ["publicNetworkAccess"], T0)
    assert ahead.seconds == 0
    unknown = remediation_exposure("", "", ["publicNetworkAccess"], T0)
    assert unknown.seconds is None and unknown.opened_at == "" and "unknown time" in unknown.sentence


# --- change history as Azure really writes it (issue 25, item 7) ------------------------------------------------


def real_row(change_id: str, at: str, changes: dict, *, who="mallory@contoso.com", change_type="Update",
             by_type="User", correlation="c0ffee00-0000-4000-8000-000000000001", previous="", new=""):
    """A row in the forms public samples of Resource Graph output show."""
    return {"id": f"{REG}/providers/Microsoft.Resources/changes/{change_id}", "name": change_id,
            "properties": {"targetResourceId": REG, "changeType": change_type,
                           "changeAttributes": {"timestamp": at, "changedBy": who, "changedByType": by_type,
                                                "correlationId": correlation, "clientType": "Unspecified",
                                                "previousResourceSnapshotId": previous, "newResourceSnapshotId": new},
                           "changes": changes}}


def export(previous, new):
    return {"properties.policies.exportPolicy.status": {"previousValue": previous, "newValue": new,
                                                        "propertyChangeType": "Update"}}


def test_same_timestamp_changes_are_ordered_as_their_ids_encode_later_is_smaller():
    at = "2026-11-30T12:00:00.123Z"
    enable = real_row("08584000000000000200_7f13e0a1-0000-4000-8000-000000000001", at, export("disabled", "enabled"))
    disable = real_row("08584000000000000100_00000000-0000-4000-8000-000000000002", at, export("enabled", "disabled"))
    for rows in ([enable, disable], [disable, enable]):        # unlinked snapshots: only the IDs tell the order
        (window,) = windows(rows)[REG.lower()]
        assert window.closed and window.opened_at is not None and window.seconds() == 0


def test_the_snapshot_chain_wins_over_the_ids_where_it_exists():
    at = "2026-11-30T12:00:00.123Z"
    enable = real_row("08584000000000000100_a", at, export("disabled", "enabled"), previous="s0", new="s1")
    disable = real_row("08584000000000000200_b", at, export("enabled", "disabled"), previous="s1", new="s2")
    (window,) = windows([disable, enable])[REG.lower()]
    assert window.closed and window.opened_at is not None


def test_id_order_takes_the_last_path_segment_and_sorts_unencoded_ids_last():
    assert exposure.id_order(f"{REG}/providers/Microsoft.Resources/changes/0858_x") < exposure.id_order("0857_y")
    assert exposure.id_order("0857_y") < exposure.id_order("not-encoded")


@pytest.mark.parametrize("previous, new, opens", [("False", "True", True), (False, True, True), ("True", "False", False),
                                                   (None, "True", True), ("null", "True", True)])
def test_booleans_as_text_and_null_or_the_string_null_as_absent(previous, new, opens):
    change = {"properties.adminUserEnabled": {"previousValue": previous, "newValue": new}}
    (window,) = windows([real_row("08584000000000000100_a", "2026-11-30T12:00:00Z", change)])[REG.lower()]
    assert window.property == "adminUserEnabled" and (window.closer == STILL_OPEN) == opens


def test_a_remove_with_null_falls_back_to_azures_default():
    change = {"properties.anonymousPullEnabled": {"previousValue": "True", "newValue": None,
                                                  "propertyChangeType": "Remove"}}
    (window,) = windows([real_row("08584000000000000100_a", "2026-11-30T12:00:00Z", change)])[REG.lower()]
    assert window.closed and window.opened_at is None          # absent = false (the default): it closed


@pytest.mark.parametrize("text, micro", [("2026-11-30T12:00:00.12Z", 120000), ("2026-11-30T12:00:00.1234567Z", 123456),
                                         ("2026-11-30T12:00:00.123+00:00", 123000), ("2026-11-30T12:00:00Z", 0)])
def test_timestamps_with_2_to_7_fraction_digits(text, micro):
    moment = exposure.parse_time(text)
    assert moment is not None and moment.microsecond == micro and moment.utcoffset() == timedelta(0)


def test_unspecified_and_system_callers_read_unknown_and_azure():
    opened = real_row("08584000000000000300_a", "2026-11-30T12:00:00Z", export("disabled", "enabled"),
                      who="System", by_type="System", correlation=exposure.NO_CORRELATION)
    deleted = real_row("08584000000000000200_b", "2026-11-30T12:00:05Z", {}, who="Unspecified", by_type="Unspecified",
                       change_type="Delete")
    (window,) = windows([opened, deleted])[REG.lower()]
    text = window.sentence()
    assert "exports enabled by Azure" in text and "deleted by unknown" in text and "Unspecified" not in text
    assert window.to_json()["closedBy"] == ""


def test_the_emulator_writes_the_real_forms():
    log = ChangeLog()
    created = row(log, base(), base(), "ignored@x", T0, change_type="Create")
    first = row(log, base(), {**base(), "properties": {**base()["properties"], "adminUserEnabled": True}}, "a@x",
                T0 + timedelta(seconds=1))
    second = flip(log, "a@x", T0 + timedelta(seconds=1), "enabled")          # the same timestamp
    assert created["properties"]["changeAttributes"]["changedBy"] == "Unspecified"
    attributes = first["properties"]["changeAttributes"]
    assert attributes["timestamp"] == "2026-11-30T12:00:01.0000000Z" and first["location"]
    assert first["properties"]["changes"]["properties.adminUserEnabled"]["newValue"] == "True"
    assert exposure.id_order(second["name"]) > exposure.id_order(first["name"])        # later: a smaller number
    assert int(second["name"].split("_")[0]) < int(first["name"].split("_")[0])
    removed = log.record({"id": REG, "properties": {"x": "1"}}, {"id": REG, "properties": {}}, changed_by="a@x")
    assert removed["properties"]["changes"]["properties.x"]["newValue"] is None
    system = log.record_system(base(export="enabled"), base(), at=T0 + timedelta(seconds=2))
    assert system["properties"]["changeAttributes"]["changedBy"] == "System"
    assert system["properties"]["changeAttributes"]["correlationId"] == exposure.NO_CORRELATION
    log.link_snapshots = False
    third = flip(log, "a@x", T0 + timedelta(seconds=3), "disabled")
    assert third["properties"]["changeAttributes"]["previousResourceSnapshotId"] != \
        system["properties"]["changeAttributes"]["newResourceSnapshotId"]
