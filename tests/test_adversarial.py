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
from dlp.outputs.alerts.store import TableAlertStore
from dlp.outputs.outbox import Outbox
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
    # the look-alike is not silently dropped: the sweep records it (and would alert) as such
    assert {r["Action"] + "/" + r["ActionReason"] for r in rows_of(local_azure, outside)} == {"blocked/scope-lookalike"}


def test_state_keys_keep_a_look_alike_registry_apart(azurite_env):
    """Breaker rows, leases and alert rows are keyed by the ID folded A-Z only: the look-alike group's registry
    cannot share (or reset) the other's revert-war count."""
    from dlp.azure.state import partition_of

    plain, kelvin = rid("sandbox-k", "acrshared01"), rid(f"sandbox-{KELVIN}", "acrshared01")
    assert partition_of(plain) != partition_of(kelvin)
    assert partition_of(plain) == partition_of(plain.upper().replace("SUBSCRIPTIONS", "subscriptions"))


# --- item 9: claims given as a JSON string ------------------------------------------------------------------------

OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID_CLAIM = "http://schemas.microsoft.com/identity/claims/tenantid"
FULL_CLAIMS = {UPN: "alice@contoso.com", "name": "Alice", "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
               OID_CLAIM: "6f1c7a52-0b7e-4a0c-9a57-1f2d3c4b5a69", TID_CLAIM: "72f988bf-86f1-41af-91ab-2d7cd011db47",
               "ipaddr": "198.51.100.4"}


@pytest.mark.parametrize("form", ["object", "json-string"])
def test_claims_as_a_json_string_are_read_like_the_object_form(app, local_azure, form):
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-claims", name, export="disabled", public="Disabled")["id"]
    runtime.reset()
    claims = FULL_CLAIMS if form == "object" else json.dumps(FULL_CLAIMS)
    handle_event(event(reg, claims=claims))
    (row, *_) = rows_of(local_azure, reg)
    assert (row["Caller"], row["CallerName"], row["CallerObjectId"], row["CallerAppId"], row["CallerTenantId"],
            row["CallerVerified"]) == ("alice@contoso.com", "Alice", FULL_CLAIMS[OID_CLAIM], FULL_CLAIMS["appid"],
                                       FULL_CLAIMS[TID_CLAIM], True)


@pytest.mark.parametrize("claims", ["{not json", json.dumps(["a", "list"]), json.dumps({UPN: 42}), "x" * 70_000])
def test_unusable_claims_strings_leave_the_caller_unknown_and_the_event_still_enforced(app, local_azure, claims):
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-claims", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg, claims=claims))
    assert app.actions() == [("remediated", "-")]
    (row, *_) = rows_of(local_azure, reg)
    assert row["Caller"] == "" and row["CallerVerified"] is None


# --- item 7: attribution an attacker cannot dress up --------------------------------------------------------------

RLO, ZWSP = "\u202e", "\u200b"
DRESSED_UP = {
    # no UPN (a service principal); the display name is the attacker's choice: a bidi override, zero-width
    # characters and a forged line
    "name": f"Security Team{RLO}moc.osotnoc@nimda{ZWSP}\r\nChanged by: admin@contoso.com",
    "appid": f"0c1d-{ZWSP}app", OID_CLAIM: "9a8b-oid", TID_CLAIM: "72f9-tid", "ipaddr": "203.0.113.66",
}
INVISIBLE = (RLO, ZWSP, "\r", "\n", "\u2066", "\ufeff")


def visible_only(text: str) -> bool:
    return not any(ch in text for ch in INVISIBLE)


def test_a_dressed_up_display_name_is_never_the_identity_and_reaches_nothing_unclean(app, local_azure, caplog):
    caplog.set_level(logging.DEBUG)
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-dressed", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg, claims=DRESSED_UP))
    assert app.actions() == [("remediated", "-")]
    # the record: the app ID is the identity, the display name a separate, clean column
    (row, *_) = rows_of(local_azure, reg)
    assert row["Caller"] == "app:0c1d-app"
    assert row["CallerName"] == "Security Teammoc.osotnoc@nimda Changed by: admin@contoso.com"
    assert (row["CallerObjectId"], row["CallerAppId"], row["CallerTenantId"]) == ("9a8b-oid", "0c1d-app", "72f9-tid")
    assert all(visible_only(str(value)) for value in row.values())
    # the card: "Changed by" is the app, the display name is labelled as the caller's own choice
    (card,) = cards_about(local_azure, name)
    shown = facts(card)
    assert shown["Changed by"] == "app:0c1d-app"
    assert shown["Display name (set by the caller)"].startswith("Security Teammoc.osotnoc@nimda Changed by:")
    assert shown["Caller object ID"] == "9a8b-oid" and shown["Caller tenant ID"] == "72f9-tid"
    assert visible_only(json.dumps(card, ensure_ascii=False))
    # the mail, both bodies: no forged "Changed by" line, nothing invisible
    (mail,) = mails_about(local_azure, name)
    plain, html_body = mail["content"]["plainText"], mail["content"]["html"]
    assert [line for line in plain.splitlines() if line.startswith("Changed by")] == ["Changed by: app:0c1d-app"]
    assert visible_only(plain.replace("\n", "")) and visible_only(html_body.replace("\n", ""))
    assert "Changed by</th><td>app:0c1d-app</td>" in html_body
    # every log line the responder wrote is one clean line
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("dlp")]
    assert ours and all(visible_only(message) for message in ours)


def test_a_tag_value_with_a_bidi_override_is_cleaned_in_the_record_and_the_alert(app, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_EXEMPT_TAG", "dlp-exempt")
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-tags", name, export="enabled", public="Enabled",
                                 tags={"dlp-exempt": f"2999-01-01 approved{RLO}OSIC yb\nWarning: none"})["id"]
    runtime.reset()
    handle_event(event(reg))
    assert app.actions() == [("exempt", "tag-exemption")]
    (row, *_) = rows_of(local_azure, reg)
    assert visible_only(row["ActionDetail"]) and "approvedOSIC yb Warning: none" in row["ActionDetail"]
    (card,) = cards_about(local_azure, name)
    (mail,) = mails_about(local_azure, name)
    assert visible_only(json.dumps(card, ensure_ascii=False))
    assert visible_only(mail["content"]["plainText"].replace("\n", "")) and "approvedOSIC" in mail["content"]["html"]


def recheck(body: dict, headers: dict) -> tuple[int, dict]:
    request = func.HttpRequest(method="POST", url="https://app.azurewebsites.net/api/recheck", params={},
                               headers=headers, body=json.dumps(body).encode())
    response = function_app.recheck.build().get_user_function()(request)
    return response.status_code, json.loads(response.get_body().decode())


def test_a_recheck_caller_is_who_asked_never_who_changed_and_unverified_without_app_service_auth(app, local_azure,
                                                                                                monkeypatch):
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    monkeypatch.setenv("DLP_MODE", "audit")
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-recheck", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    status, _ = recheck({"registryId": reg}, {"X-MS-CLIENT-PRINCIPAL-NAME": "ciso@contoso.com",
                                              "X-MS-CLIENT-PRINCIPAL-ID": "forged-oid"})
    assert status == 200
    (row, *_) = rows_of(local_azure, reg)
    assert (row["Trigger"], row["Caller"], row["CallerObjectId"], row["CallerVerified"]) == \
        ("http", "ciso@contoso.com", "forged-oid", False)
    (card,) = cards_about(local_azure, name)
    shown = facts(card)
    assert shown["Changed by"] == "unknown (manual re-check)"
    assert shown["Re-check requested by"] == "ciso@contoso.com (unverified: App Service Authentication is off)"
    (mail,) = mails_about(local_azure, name)
    assert "Changed by: ciso" not in mail["content"]["plainText"]
    assert "Re-check requested by: ciso@contoso.com (unverified" in mail["content"]["plainText"]


def test_with_app_service_auth_the_recheck_caller_is_verified_with_its_ids(app, local_azure, monkeypatch):
    import base64

    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("DLP_MODE", "audit")
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-recheck", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    principal = {"auth_typ": "aad", "claims": [{"typ": UPN, "val": "oncall@contoso.com"},
                                               {"typ": "name", "val": "On Call"},
                                               {"typ": OID_CLAIM, "val": "1d2e-oid"},
                                               {"typ": TID_CLAIM, "val": "72f9-tid"},
                                               {"typ": "appid", "val": "c0de-app"}]}
    status, _ = recheck({"registryId": reg}, {
        "X-MS-CLIENT-PRINCIPAL-NAME": "oncall@contoso.com", "X-MS-CLIENT-PRINCIPAL-ID": "1d2e-oid",
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()})
    assert status == 200
    (row, *_) = rows_of(local_azure, reg)
    assert (row["Caller"], row["CallerName"], row["CallerObjectId"], row["CallerTenantId"], row["CallerAppId"],
            row["CallerVerified"]) == ("oncall@contoso.com", "On Call", "1d2e-oid", "72f9-tid", "c0de-app", True)
    (card,) = cards_about(local_azure, name)
    assert facts(card)["Re-check requested by"] == "oncall@contoso.com"
    assert facts(card)["Changed by"] == "unknown (manual re-check)"


def test_every_responder_logger_is_protected_by_the_clean_line_filter():
    import re
    from pathlib import Path

    from dlp.sanitize import LOGGERS

    source = Path(__file__).resolve().parents[1] / "dlp"
    named = {name for path in source.rglob("*.py") if "emulator" not in path.parts
             for name in re.findall(r'getLogger\("(dlp[^"]*)"\)', path.read_text(encoding="utf-8"))}
    assert named <= set(LOGGERS), named - set(LOGGERS)
    for name in LOGGERS:
        assert any(type(f).__name__ == "CleanLogFilter" for f in logging.getLogger(name).filters), name


# --- item 5: a bad optional-output setting degrades that output only -----------------------------------------------

KV_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://kv-dlp.vault.azure.net/secrets/teams-webhook/)"


@pytest.fixture
def fresh_config_alert(azurite_env):
    """The misconfiguration alert is de-duplicated in the shared state table: start each test without its row."""
    from dlp.azure.state import partition_of
    from dlp.outputs.alerts.config import KEY

    client = tables(azurite_env).get_table_client("dlpstate")
    try:
        client.delete_entity(partition_of(KEY), "alert")
    except Exception:
        pass        # not there (or the table does not exist yet): nothing to forget
    return partition_of(KEY)


def health() -> tuple[int, dict]:
    request = func.HttpRequest(method="GET", url="https://app.azurewebsites.net/api/health", body=b"")
    response = function_app.health.build().get_user_function()(request)
    return response.status_code, json.loads(response.get_body().decode())


def misconfiguration_mails(azure) -> list[dict]:
    return [m for m in azure.email.sent if "Output misconfigured" in m["content"]["subject"]]


def misconfiguration_cards(azure) -> list[dict]:
    return [m for m in azure.teams.messages if "Output misconfigured" in json.dumps(m)]


def test_an_unresolved_key_vault_reference_turns_off_teams_only(app, azurite_env, local_azure, monkeypatch, caplog,
                                                                  fresh_config_alert):
    monkeypatch.setenv("DLP_TEAMS_WEBHOOK_URL", KV_REFERENCE)
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-degraded", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    caplog.set_level(logging.INFO)
    handle_event(event(reg))
    # enforcement goes on, and so do Log Analytics and email
    assert app.actions() == [("remediated", "-")]
    assert local_azure.arm.get(reg)["properties"]["publicNetworkAccess"] == "Disabled"
    assert rows_of(local_azure, reg)
    assert len(mails_about(local_azure, name)) == 1 and local_azure.teams.messages == []
    # a start-up error names the setting (never its value)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "dlp.runtime"]
    assert any("DLP_TEAMS_WEBHOOK_URL" in e and "Key Vault" in e for e in errors)
    assert not any("kv-dlp" in r.getMessage() for r in caplog.records)
    # the working channel carries one alert that Teams is off
    (mail,) = misconfiguration_mails(local_azure)
    assert "Teams alerts" in mail["content"]["subject"] and "DLP_TEAMS_WEBHOOK_URL" in mail["content"]["plainText"]
    assert "Enforcement and the other outputs go on" in mail["content"]["plainText"]
    # health: 200, degraded, the problem listed
    status, body = health()
    assert status == 200 and body["status"] == "degraded"
    assert [(p["setting"], p["turnedOff"]) for p in body["problems"]] == [("DLP_TEAMS_WEBHOOK_URL", "Teams alerts")]
    assert body["outputs"]["teams"] is False and body["outputs"]["email"] is True
    assert "kv-dlp" not in json.dumps(body)
    # another instance (or a restart) does not announce it again
    runtime.reset()
    handle_event(event(reg))
    assert len(misconfiguration_mails(local_azure)) == 1


@pytest.mark.parametrize("setting, value, turned_off", [
    ("DLP_EMAIL_TO", "secops-at-contoso", "email"),
    ("DLP_EMAIL_SENDER", "@Microsoft.KeyVault(VaultName=kv-dlp;SecretName=sender)", "email"),
    ("DLP_LOGS_RULE_ID", "dcr-not-an-immutable-id", "logs"),
    ("DLP_LOGS_ENDPOINT", "http://dce.westeurope-1.ingest.monitor.azure.com", "logs"),
    ("DLP_RULE_DOCS_URL", "javascript:alert(1)", "docs"),
])
def test_any_bad_output_setting_turns_off_its_output_and_the_rest_goes_on(app, azurite_env, local_azure, monkeypatch,
                                                                         fresh_config_alert, setting, value,
                                                                         turned_off):
    monkeypatch.setenv(setting, value)
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-degraded", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    handle_event(event(reg))
    assert app.actions() == [("remediated", "-")]
    assert local_azure.arm.get(reg)["properties"]["publicNetworkAccess"] == "Disabled"
    assert bool(rows_of(local_azure, reg)) == (turned_off != "logs")
    assert bool(mails_about(local_azure, name)) == (turned_off != "email")
    (card,) = cards_about(local_azure, name)
    (announced,) = misconfiguration_cards(local_azure)
    shown = json.dumps(announced, ensure_ascii=False).replace("\\\\_", "_")      # the card escapes Markdown
    assert setting in shown and value not in shown
    if turned_off == "docs":        # links fall back to Microsoft Learn, never to the bad value
        urls = [a["url"] for a in card["attachments"][0]["content"].get("actions", [])]
        assert urls and not any("javascript" in u for u in urls)
        assert any(u.startswith("https://learn.microsoft.com/") for u in urls)
    status, body = health()
    assert status == 200 and body["status"] == "degraded" and setting in {p["setting"] for p in body["problems"]}


def test_settings_that_decide_enforcement_still_fail_loudly(app, local_azure, monkeypatch):
    from dlp.settings import ConfigError

    monkeypatch.setenv("DLP_SCOPES", " , ")                  # set but empty: an error, never "everywhere"
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-loud", name, export="enabled", public="Enabled")["id"]
    runtime.reset()
    with pytest.raises(ConfigError, match="DLP_SCOPES"):
        handle_event(event(reg))                             # Event Grid retries it once the setting is fixed
    assert arm_calls(local_azure) == []
    status, body = health()
    assert status == 503 and body["status"] == "misconfigured"
    assert [p["setting"] for p in body["configurationError"]["problems"]] == ["DLP_SCOPES"]


def test_a_healthy_configuration_is_ok_and_announces_nothing(app, local_azure, fresh_config_alert):
    runtime.reset()
    name = unique()
    reg = local_azure.arm.create(SUB, "rg-healthy", name, export="disabled", public="Disabled")["id"]
    handle_event(event(reg))
    status, body = health()
    assert status == 200 and body["status"] == "ok" and body["problems"] == []
    assert misconfiguration_cards(local_azure) == [] and misconfiguration_mails(local_azure) == []


def test_a_recheck_of_a_look_alike_of_a_scope_is_refused_and_says_why(app, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/prod-k")
    reg = rid(f"prod-{KELVIN}", "acrlookalike01")
    runtime.reset()
    status, body = recheck({"registryId": reg}, {})
    assert status == 403 and body["error"]["code"] == "OutOfScope"
    assert "KELVIN SIGN" in body["error"]["message"] and "only under Unicode case folding" in body["error"]["message"]
    assert arm_calls(local_azure) == []


def test_the_misconfiguration_alert_is_sent_once_then_again_only_after_a_day(azure_env):
    """Many instances and restarts announce the same problems once; a reminder after REMIND_AFTER."""
    from datetime import datetime, timedelta, timezone

    from dlp.outputs.alerting import AlertNotifier
    from dlp.outputs.alerts.batch import MemoryOutbox
    from dlp.outputs.alerts.config import KEY, REMIND_AFTER, misconfiguration_alert, signature
    from dlp.outputs.alerts.store import MemoryAlertStore
    from dlp.outputs.alerts.teams import TeamsChannel
    from dlp.settings import load

    now = [datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)]
    store = MemoryAlertStore()
    settings = load({"DLP_TEAMS_WEBHOOK_URL": azure_env.teams.webhook_url(), "DLP_RULE_DOCS_URL": "ftp://x"})

    def instance() -> AlertNotifier:
        return AlertNotifier(store, [TeamsChannel(settings.teams_webhook_url)], MemoryOutbox(), clock=lambda: now[0])

    def announce() -> bool:
        alert = misconfiguration_alert(settings, at=now[0].isoformat())
        return instance().announce(KEY, signature(settings), alert, remind_after=REMIND_AFTER)

    assert [announce(), announce(), announce()] == [True, False, False]
    now[0] += REMIND_AFTER + timedelta(minutes=1)
    assert [announce(), announce()] == [True, False]
    assert len(misconfiguration_cards(azure_env)) == 2
    other = load({"DLP_TEAMS_WEBHOOK_URL": azure_env.teams.webhook_url(), "DLP_RULE_DOCS_URL": "ftp://y",
                  "DLP_EMAIL_TO": "nobody"})
    assert signature(other) != signature(settings)              # other problems: news at once
