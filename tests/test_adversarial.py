"""Issue 11, attacker first: what someone with Contributor on a subscription (and control of their own token's
display name) can try against scopes, exemptions, attribution and optional settings. Everything goes through the
Functions handlers, the real SDK clients over HTTPS to the emulators, and Azurite.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import azure.functions as func
import pytest

import function_app
from dlp import runtime
from dlp.alerts.store import TableAlertStore
from dlp.outbox import Outbox
from tests.alerts_support import tables
from tests.evaluation_log import Evaluations

SUB = "11111111-2222-3333-4444-555555555555"
SUB2 = "99999999-2222-3333-4444-555555555555"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
KELVIN, LONG_S, DOTLESS_I, FULLWIDTH_K = "\u212a", "\u017f", "\u0131", "\uff2b"

handle_event = function_app.on_registry_event.build().get_user_function()


def rid(rg: str, name: str, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"


def unique(prefix: str = "acr") -> str:
    return prefix + uuid.uuid4().hex[:12]


def event(registry_id: str, *, claims=None, event_id: str = "", data_extra=None) -> func.EventGridEvent:
    claims = {UPN: "mallory@contoso.com"} if claims is None else claims
    data = {"claims": claims, "correlationId": "corr-11", "httpRequest": {"clientIpAddress": "203.0.113.9"},
            "operationName": "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id,
            "status": "Succeeded", "subscriptionId": SUB, **(data_extra or {})}
    return func.EventGridEvent(id=event_id or unique("ev-"), data=data, topic=f"/subscriptions/{SUB}",
                               subject=registry_id, event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc), data_version="2")


@pytest.fixture
def app(azurite_env, monkeypatch):
    """A fresh instance on the emulators with every output on (Log Analytics, Teams, email), enforce mode."""
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "8")
    runtime.reset()
    with Evaluations() as collector:
        yield collector
    runtime.reset()


def arm_calls(azure):
    return [r for r in azure.arm.log.filter() if r.service in ("arm", "arm-op")]


def patched(azure) -> list[str]:
    return [r.path for r in azure.arm.log.filter(method="PATCH")]


def cards_about(azure, name: str) -> list[dict]:
    return [m for m in azure.teams.messages if name in json.dumps(m, ensure_ascii=False)]


def mails_about(azure, name: str) -> list[dict]:
    return [m for m in azure.email.sent if name in json.dumps(m, ensure_ascii=False)]


def rows_of(azure, registry_id: str) -> list[dict]:
    return [r for r in azure.logs.rows() if r["RegistryId"] == registry_id]


def facts(card: dict) -> dict[str, str]:
    body = card["attachments"][0]["content"]["body"]
    found: dict[str, str] = {}
    for element in body:
        if element["type"] == "FactSet":
            for fact in element["facts"]:
                found.setdefault(fact["title"], fact["value"])
    return found


# --- item 8: out of scope means silent ---------------------------------------------------------------------------

def test_a_write_outside_the_scopes_costs_no_arm_call_no_row_no_alert_state_and_no_alert(app, azurite_env,
                                                                                         local_azure, monkeypatch,
                                                                                         caplog):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB2}")
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-elsewhere", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    caplog.set_level(logging.DEBUG, logger="dlp.evaluation")
    for _ in range(3):                      # an attacker hammering registries elsewhere: still nothing
        handle_event(event(reg))
    assert arm_calls(local_azure) == []
    assert app.actions() == []                                                   # nothing at info level
    debug = [r for r in caplog.records if r.name == "dlp.evaluation" and name in r.getMessage()]
    assert len(debug) == 3 and {r.levelno for r in debug} == {logging.DEBUG}
    assert "reason=out-of-scope" in debug[0].getMessage()
    assert rows_of(local_azure, reg) == []
    assert TableAlertStore(tables(azurite_env)).get(reg) is None
    assert [i for i in Outbox(tables(azurite_env)).pending("alerts", 1000) if name in json.dumps(i.payload)] == []
    assert cards_about(local_azure, name) == [] and mails_about(local_azure, name) == []


def test_a_write_inside_the_scopes_is_still_recorded_and_alerted(app, azurite_env, local_azure, monkeypatch):
    """The control for the silence above: the same event on a registry in scope is a row and an alert."""
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}")
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-inside", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg))
    assert app.actions() == [("remediated", "-")]
    assert rows_of(local_azure, reg) and len(cards_about(local_azure, name)) == 1


# --- item 4: Unicode look-alikes never widen an exemption or a scope ---------------------------------------------

LOOKALIKES = [
    pytest.param(f"sandbox-{KELVIN}", "sandbox-k", "KELVIN SIGN", id="kelvin-sign"),
    pytest.param(f"{LONG_S}andbox-k", "sandbox-k", "LATIN SMALL LETTER LONG S", id="long-s"),
    pytest.param(f"sandbox-k{DOTLESS_I}", "sandbox-ki", "LATIN SMALL LETTER DOTLESS I", id="dotless-i"),
    pytest.param(f"sandbox-{FULLWIDTH_K}", "sandbox-k", "FULLWIDTH LATIN CAPITAL LETTER K", id="fullwidth"),
]


@pytest.mark.parametrize("attacker_rg, exempt_rg, character", LOOKALIKES)
def test_a_look_alike_resource_group_does_not_borrow_an_exemption_and_is_alerted_as_such(
        app, azurite_env, local_azure, monkeypatch, attacker_rg, exempt_rg, character):
    monkeypatch.setenv("DLP_EXEMPTIONS", f"/subscriptions/{SUB}/resourceGroups/{exempt_rg}")
    name = unique()
    reg = local_azure.arm.create(SUB, attacker_rg, name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg))
    assert app.actions() == [("remediated", "-")]                       # enforced like any other registry
    assert len(patched(local_azure)) == 1
    props = local_azure.arm.get(reg)["properties"]
    assert props["publicNetworkAccess"] == "Disabled"
    # recorded as a near miss ...
    (row, *_) = rows_of(local_azure, reg)
    assert "only under Unicode case folding" in row["ActionDetail"] and character in row["ActionDetail"]
    assert "NOT exempt" in row["ActionDetail"]
    # ... and alerted as one, on the card and in both mail bodies
    (card,) = cards_about(local_azure, name)
    assert "NOT exempt" in facts(card)["Warning"] and character in facts(card)["Warning"]
    (mail,) = mails_about(local_azure, name)
    assert "NOT exempt" in mail["content"]["plainText"] and "NOT exempt" in mail["content"]["html"]


def test_plain_ascii_case_still_matches_an_exemption(app, local_azure, monkeypatch):
    """The control: ARM IDs ignore A-Z case, so `SANDBOX-K` is exempted by `.../sandbox-k`, with no warning."""
    monkeypatch.setenv("DLP_EXEMPTIONS", f"/subscriptions/{SUB}/resourceGroups/sandbox-k")
    name = unique()
    reg = local_azure.arm.create(SUB, "SANDBOX-K", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg))
    assert app.actions() == [("exempt", "exemption")] and patched(local_azure) == []
    (row, *_) = rows_of(local_azure, reg)
    assert "Warning" not in row["ActionDetail"]


def test_a_look_alike_of_a_scope_stays_out_of_scope_but_is_recorded_and_alerted(app, azurite_env, local_azure,
                                                                               monkeypatch):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/prod-k")
    name = unique()
    reg = local_azure.arm.create(SUB, f"prod-{KELVIN}", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg))
    assert arm_calls(local_azure) == []                                 # out of scope: never read, never written
    assert app.actions() == [("blocked", "scope-lookalike")]          # but recorded at info level ...
    (row,) = rows_of(local_azure, reg)
    assert "DLP_SCOPES" in row["ActionDetail"] and "KELVIN SIGN" in row["ActionDetail"]
    assert TableAlertStore(tables(azurite_env)).get(reg) is not None   # ... and alerted, once
    (card,) = cards_about(local_azure, name)
    assert "Remediation blocked" in card["attachments"][0]["content"]["body"][0]["text"]
    handle_event(event(reg))
    assert len(cards_about(local_azure, name)) == 1


def test_the_sweep_keeps_a_look_alike_resource_group_out_of_a_scope(azurite_env, local_azure, monkeypatch):
    from azure.functions.timer import TimerRequest

    for setting in ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
        monkeypatch.delenv(setting, raising=False)
    sub = str(uuid.uuid4())
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{sub}/resourceGroups/prod-k")
    monkeypatch.setenv("DLP_MODE", "enforce")
    inside = local_azure.arm.create(sub, "PROD-K", "acrinside01", export="enabled", public="Enabled")["id"]
    outside = local_azure.arm.create(sub, f"prod-{KELVIN}", "acroutside01", export="enabled", public="Enabled")["id"]
    runtime.reset()
    try:
        function_app.sweep.build().get_user_function()(TimerRequest(past_due=False, schedule_status={}))
    finally:
        runtime.reset()
    assert local_azure.arm.get(inside)["properties"]["publicNetworkAccess"] == "Disabled"
    assert local_azure.arm.get(outside)["properties"]["publicNetworkAccess"] == "Enabled"
    assert all("acroutside01" not in path for path in patched(local_azure))


def test_state_keys_keep_a_look_alike_registry_apart(azurite_env):
    """Breaker rows, leases and alert rows are keyed by the ID folded A-Z only: the look-alike group's registry
    cannot share (or reset) the other's revert-war count."""
    from dlp.azure.state import partition_of

    plain, kelvin = rid("sandbox-k", "acrshared01"), rid(f"sandbox-{KELVIN}", "acrshared01")
    assert partition_of(plain) != partition_of(kelvin)
    assert partition_of(plain) == partition_of(plain.upper().replace("SUBSCRIPTIONS", "subscriptions"))
