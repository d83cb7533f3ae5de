"""Counting what was pulled while a registry was open (dlp/domain/pulls.py, pure), the KQL that selects the rows
(dlp/azure/logs_query.py), the query adapter against the emulator's error answers, and the settings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dlp.azure.logs_query import QueryFailed, RegistryLogs, window_query
from dlp.domain import pulls
from dlp.domain.model import PULLS_COUNTED, Pulls
from dlp.emulator import registry_id
from dlp.settings import load

SUB = "11111111-2222-3333-4444-555555555555"
REG = registry_id(SUB, "rg", "acrone")
T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=93)


def pull(seconds: float, repository="payments/api", tag="1.4", identity="mallory@contoso.com", ip="198.51.100.7",
         **extra):
    return {"TimeGenerated": T0 + timedelta(seconds=seconds), "Type": pulls.REPOSITORY_EVENTS, "OperationName": "Pull",
            "Repository": repository, "Tag": tag, "Digest": "sha256:" + "a" * 64, "Identity": identity,
            "CallerIpAddress": ip, "ResultType": "200", "CorrelationId": f"c{seconds}", **extra}


def test_only_successful_pulls_inside_the_window_count_once_each():
    rows = [pull(10), pull(10), pull(20, tag="1.5"), pull(30, repository="payments/worker", tag="2.0"),
            pull(-1, repository="before"), pull(94, repository="after"), pull(40, ResultType="401"),
            {**pull(50), "OperationName": "Push"},
            {"TimeGenerated": (T0 + timedelta(seconds=5)).isoformat(), "Type": pulls.LOGIN_EVENTS,
             "OperationName": "Login", "Identity": "eve@contoso.com", "CallerIpAddress": "203.0.113.9:443"}]
    found, picture = pulls.count(rows, T0, T1)
    assert found.status == PULLS_COUNTED and found.count == 3 and picture.count == 3
    assert found.sentence == ("3 pulls from 198.51.100.7 (mallory@contoso.com): payments/api:1.4, payments/api:1.5, "
                              "payments/worker:2.0; logins without a pull: 203.0.113.9 (eve@contoso.com) "
                              "(1 refused pull not counted)")
    assert "before" not in found.sentence and "after" not in str(found.to_json())
    assert [p.artifact for p in found.details] == ["payments/api:1.4", "payments/api:1.5", "payments/worker:2.0"]


def test_window_bounds_are_included_and_a_digest_names_an_untagged_pull():
    found, _ = pulls.count([pull(0, tag=""), pull(93)], T0, T1)
    assert found.count == 2 and found.details[0].reference == "@sha256:" + "a" * 64


def test_no_pull_is_a_counted_zero_and_unknown_is_never_zero():
    found, _ = pulls.count([], T0, T1)
    assert (found.count, found.sentence) == (0, "no pulls recorded")
    failed = pulls.unknown("HTTP 403 InsufficientAccessError: no access")
    assert failed.count is None and failed.sentence == "pulls unknown: HTTP 403 InsufficientAccessError: no access"
    assert pulls.off().count is None and pulls.pending(T1).count is None


def test_grouping_by_caller_and_the_limits():
    rows = [pull(i, repository=f"repo{i}", identity=f"user{i % 7}", ip=f"10.0.0.{i % 7}") for i in range(60)]
    found, picture = pulls.count(rows, T0, T1)
    assert found.count == 60 and len(found.details) == pulls.MAX_DETAILS
    assert found.sentence.count("pulls from") == pulls.MAX_CALLERS and "and 2 more callers" in found.sentence
    assert len(picture.callers) == 7
    truncated, _ = pulls.count(rows, T0, T1, truncated=True)
    assert truncated.sentence.startswith("at least ") and truncated.truncated


@pytest.mark.parametrize("raw, ip", [("198.51.100.7:51234", "198.51.100.7"), ("[2001:db8::1]:443", "2001:db8::1"),
                                     ("2001:db8::1", "2001:db8::1"), ("198.51.100.7", "198.51.100.7"),
                                     (None, "")])
def test_caller_ip_without_its_port(raw, ip):
    assert pulls.caller_ip(raw) == ip


def test_hostile_text_is_cleaned():
    found, _ = pulls.count([pull(1, repository="evil\u202e/x\n", tag="t\x1b[31m",
                                 identity="ｍａｌｌｏｒｙ\u200b@contoso.com")], T0, T1)
    text = str(found.to_json())
    assert "\u202e" not in text and "\x1b" not in text and "\u200b" not in text and "\n" not in found.sentence
    assert found.details[0].identity == "mallory@contoso.com"


def test_the_picture_grows_only_with_more_pulls_or_new_callers():
    first = pulls.count([pull(1)], T0, T1)[1]
    same = pulls.count([pull(1)], T0, T1)[1]
    assert same.news(first) == ()
    more = pulls.count([pull(1), pull(2, ip="203.0.113.9")], T0, T1)[1]
    assert more.news(first) == ("1 more pull", "a new caller: 203.0.113.9 (mallory@contoso.com)")
    assert pulls.Picture.from_json(more.to_json()) == more
    assert pulls.Picture.from_json("junk") == pulls.Picture()


def test_pulls_round_trip_through_json():
    found, _ = pulls.count([pull(1), pull(2, tag="")], T0, T1)
    assert Pulls.from_json(found.to_json()) == found


# --- the query text and the adapter --------------------------------------------------------------------------


def test_the_query_selects_the_registry_the_window_and_pulls_with_a_bound():
    text = window_query(REG, T0, T1)
    assert f'_ResourceId =~ "{REG}"' in text
    assert "between (datetime(2026-11-30T12:00:00.000000Z) .. datetime(2026-11-30T12:01:33.000000Z))" in text
    assert 'OperationName =~ "Pull"' in text and "ContainerRegistryLoginEvents" in text
    assert "| project TimeGenerated, Type," in text and "| top 1001 by TimeGenerated asc" in text


@pytest.mark.parametrize("bad", [REG + '" or 1==1 //', REG.replace("acrone", "acr-one"), "/subscriptions/x", ""])
def test_the_query_refuses_what_is_not_a_registry_id(bad):
    with pytest.raises(ValueError):
        window_query(bad, T0, T1)


@pytest.fixture
def logs(azure_env, local_azure):
    client = RegistryLogs(local_azure.workspace_id, local_azure.logs_query.endpoint, local_azure.credential())
    yield client
    client.close()


def test_the_adapter_reads_rows_through_azure_monitor_query(local_azure, logs):
    local_azure.logs_query.add_pull(REG, T0 + timedelta(seconds=3), "payments/api", "1.4", caller_ip="198.51.100.7:1")
    local_azure.logs_query.add_pull(REG, T0 + timedelta(minutes=5), "later/api", "1")
    found = logs.window_rows(REG, T0, T1, now=T1)
    assert [row["Repository"] for row in found.rows] == ["payments/api"] and not found.truncated
    assert isinstance(found.rows[0]["TimeGenerated"], datetime)             # the SDK parses datetime columns
    (sent,) = local_azure.logs_query.queries
    assert sent["timespan"].startswith("2026-11-30T11:59:59")


@pytest.mark.parametrize("setup, words", [
    (lambda q: setattr(q, "forbidden", True), "HTTP 403 InsufficientAccessError"),
    (lambda q: setattr(q, "workspaces", {"00000000-0000-0000-0000-000000000000"}), "HTTP 404 WorkspaceNotFoundError"),
    (lambda q: None, "Failed to resolve table"),
    (lambda q: setattr(q, "partial_error", True), "partial result"),
])
def test_failures_are_reasons_never_rows(local_azure, logs, setup, words):
    if "partial" in words:
        local_azure.logs_query.add_pull(REG, T0 + timedelta(seconds=3), "payments/api", "1.4")
    setup(local_azure.logs_query)
    with pytest.raises(QueryFailed) as failed:
        logs.window_rows(REG, T0, T1, now=T1)
    assert words in failed.value.reason and "Bearer" not in failed.value.reason
    assert logs.health()["lastError"]["error"] == failed.value.reason


def test_throttling_past_the_budget_is_a_failure_not_a_hang(local_azure, logs):
    from dlp.azure.budget import Budget

    local_azure.logs_query.add_pull(REG, T0 + timedelta(seconds=3), "payments/api", "1.4")
    local_azure.logs_query.faults.add("POST", status=429, times=10, headers={"Retry-After": "30"})
    with Budget.of(2.0).active(), pytest.raises(QueryFailed):
        logs.window_rows(REG, T0, T1, now=T1)


# --- settings --------------------------------------------------------------------------------------------------


def test_registry_logs_settings():
    settings = load({"DLP_REGISTRY_LOGS_WORKSPACE": "2B1F0C2E-7A41-4D0E-9C3F-0000000E1A17"})
    assert settings.pulls_enabled and settings.registry_logs_workspace == "2b1f0c2e-7a41-4d0e-9c3f-0000000e1a17"
    assert settings.logs_query_endpoint == "https://api.loganalytics.io/v1"
    assert load({}).pulls_enabled is False
    sovereign = load({"DLP_REGISTRY_LOGS_WORKSPACE": "2b1f0c2e-7a41-4d0e-9c3f-0000000e1a17",
                      "DLP_LOGS_QUERY_ENDPOINT": "https://api.loganalytics.azure.cn/v1/"})
    assert sovereign.logs_query_endpoint == "https://api.loganalytics.azure.cn/v1"


@pytest.mark.parametrize("name, value", [("DLP_REGISTRY_LOGS_WORKSPACE", "my-workspace"),
                                         ("DLP_REGISTRY_LOGS_WORKSPACE", "@Microsoft.KeyVault(SecretUri=x)"),
                                         ("DLP_LOGS_QUERY_ENDPOINT", "http://api.loganalytics.io/v1"),
                                         ("DLP_LOGS_QUERY_ENDPOINT", "https://api.loganalytics.io/v2/x")])
def test_a_bad_registry_logs_setting_turns_off_the_pulls_only(name, value):
    environ = {"DLP_REGISTRY_LOGS_WORKSPACE": "2b1f0c2e-7a41-4d0e-9c3f-0000000e1a17", "DLP_MODE": "enforce", name: value}
    settings = load(environ)
    assert settings.mode == "enforce" and not settings.pulls_enabled
    assert [setting for setting, _ in settings.degraded] == [name]


# --- the alert ----------------------------------------------------------------------------------------------------


def test_card_and_mail_say_the_pulls_and_a_look_alert_has_its_own_id_and_headline():
    from dataclasses import replace

    from dlp.domain.model import A_EXPOSURE, Context, Evaluation, Exposure, Outcome
    from dlp.outputs.alerts import bodies, card
    from dlp.outputs.alerts.alert import build_alert, window_alert_id
    from dlp.outputs.alerts.states import S_EXPOSED

    found, _ = pulls.count([pull(1), pull(2, tag="1.5")], T0, T1)
    exposure = Exposure("policies.exportPolicy.status", T0.isoformat(), T1.isoformat(), 93.0, "mallory@contoso.com",
                        "mallory@contoso.com", "change-history", "Registry was open for 93 s: ...", "k",
                        "DLP.ACR.ExportPolicy", found)
    first = Evaluation("e1", REG, Context(trigger="retry"), "audit", Outcome(A_EXPOSURE, "person", "x"), exposure=exposure)
    alert = build_alert(first, None, S_EXPOSED, alert_id=window_alert_id(first), at=T1.isoformat())
    assert alert.alert_id == "e1" and alert.headline == "Registry was open"
    expected = "2 pulls from 198.51.100.7 (mallory@contoso.com): payments/api:1.4, payments/api:1.5"
    mail = bodies.single(alert)
    assert f"Pulls while open: {expected}" in mail.plain and expected in mail.html
    assert expected in str(card.message([alert]))
    later = replace(first, outcome=Outcome(A_EXPOSURE, pulls.REASON_FOUND, "x"))
    look_alert = build_alert(later, None, S_EXPOSED, alert_id=window_alert_id(later), at=T1.isoformat())
    assert look_alert.headline == "Pulls found while the registry was open"
    assert window_alert_id(later) not in ("e1", window_alert_id(replace(later, exposure=replace(
        exposure, pulls=pulls.count([pull(1)], T0, T1)[0]))))
    assert window_alert_id(later) == window_alert_id(replace(later))     # the same picture: the same ID
