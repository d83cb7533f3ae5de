"""Settings are parsed once; every bad value fails with a message that names its setting (never its secret)."""

from __future__ import annotations

from datetime import date

import pytest

from dlp.settings import DEVELOPMENT_STORAGE, SETTINGS, ConfigError, load

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"


def test_defaults_are_audit_mode_and_every_output_off():
    settings = load({})
    assert settings.mode == "audit" and settings.scopes == () and settings.exempt_tag == ""
    assert settings.max_remediations == 3 and settings.time_budget_s == 20.0 and not settings.allow_lockout
    assert settings.outputs() == {"logAnalytics": False, "teams": False, "email": False, "storage": False,
                                  "deadLetterReplay": False, "registryLogs": False}


def test_every_documented_default_loads():
    assert load({s.name: s.default for s in SETTINGS}).mode == "audit"


@pytest.mark.parametrize(("name", "value"), [
    ("DLP_MODE", "fix-it"), ("DLP_SCOPES", "/subscriptions/not-a-guid"), ("DLP_EXEMPTIONS", f"{SUB}/resourceGroups/rg@tomorrow"),
    ("DLP_EXEMPTIONS", "acrprod01"), ("DLP_ALLOW_LOCKOUT", "yes"), ("DLP_MAX_REMEDIATIONS", "0"),
    ("DLP_TIME_BUDGET_S", "29"), ("DLP_TIME_BUDGET_S", "soon"), ("DLP_ARM_ENDPOINT", "http://management.azure.com"),
    ("DLP_SWEEP_SCHEDULE", "every 6 hours"), ("DLP_SCOPES", " , "), ("DLP_EXEMPTIONS", ","),
    ("DLP_SCOPES", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/scopes/)"),
])
def test_a_bad_value_names_its_setting(name, value):
    with pytest.raises(ConfigError) as raised:
        load({name: value})
    assert name in [problem[0] for problem in raised.value.problems]
    assert f"{name}: " in str(raised.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as raised:
        load({"DLP_MODE": "x", "DLP_MAX_REMEDIATIONS": "many"})
    assert {p[0] for p in raised.value.problems} == {"DLP_MODE", "DLP_MAX_REMEDIATIONS"}


@pytest.mark.parametrize(("name", "value", "output"), [
    ("DLP_TEAMS_WEBHOOK_URL", "http://prod.westeurope.logic.azure.com/workflows/x?sig=TOPSECRET", "teams"),
    ("DLP_TEAMS_WEBHOOK_URL", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/teams/)", "teams"),
    ("DLP_TEAMS_WEBHOOK_URL", "@Microsoft.KeyVault(VaultName=kv;SecretName=teams)", "teams"),
    ("DLP_LOGS_STREAM", "AcrDlpFindings", "logAnalytics"), ("DLP_LOGS_RULE_ID", "dcr-nothex", "logAnalytics"),
    ("DLP_EMAIL_TO", "not-an-address", "email"), ("DLP_EMAIL_TO", " , ", "email"),
    ("DLP_EMAIL_SENDER", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s/)", "email"),
    ("DLP_RULE_DOCS_URL", "ftp://docs.example/rules/", None),
])
def test_a_bad_output_setting_turns_off_that_output_only_and_is_named(name, value, output):
    working = {"DLP_LOGS_ENDPOINT": "https://dce.westeurope-1.ingest.monitor.azure.com",
               "DLP_LOGS_RULE_ID": "dcr-" + "0" * 32, "DLP_TEAMS_WEBHOOK_URL": "https://teams.example/hook?sig=x",
               "DLP_EMAIL_ENDPOINT": "https://acs.communication.azure.com", "DLP_EMAIL_SENDER": "dlp@contoso.com",
               "DLP_EMAIL_TO": "secops@contoso.com", "DLP_RULE_DOCS_URL": "https://docs.example/rules/",
               "DLP_MODE": "enforce"}
    settings = load({**working, name: value})
    assert settings.mode == "enforce"                           # enforcement untouched
    assert name in {setting for setting, _ in settings.degraded}
    assert value not in str(settings.degraded) and "TOPSECRET" not in repr(settings)
    expected = {"logAnalytics": True, "teams": True, "email": True, "storage": False, "deadLetterReplay": False,
                "registryLogs": False}
    if output:
        expected[output] = False
    assert settings.outputs() == expected
    assert (settings.rule_docs_url == "") == (name == "DLP_RULE_DOCS_URL")


def test_an_output_configured_in_part_is_off_and_names_what_is_missing():
    settings = load({"DLP_LOGS_ENDPOINT": "https://dcr.example.ingest.monitor.azure.com"})
    assert settings.degraded[0][0] == "DLP_LOGS_RULE_ID" and not settings.logs_enabled
    settings = load({"DLP_EMAIL_ENDPOINT": "https://acs.communication.azure.com"})
    assert {p[0] for p in settings.degraded} == {"DLP_EMAIL_SENDER", "DLP_EMAIL_TO"} and not settings.email_enabled


def test_a_set_but_empty_scope_list_is_an_error_not_everywhere():
    with pytest.raises(ConfigError) as raised:
        load({"DLP_SCOPES": " , "})
    assert raised.value.problems == (("DLP_SCOPES", "is set but lists nothing; remove the setting, or list at least "
                                                    "one ID"),)
    assert load({"DLP_SCOPES": ""}).scopes == ()            # unset (or empty) still means every scope


def test_scopes_and_exemptions_are_parsed_case_insensitively_with_dates():
    settings = load({"DLP_SCOPES": f" {SUB.upper()}/resourceGroups/RG-App/ , {SUB}",
                     "DLP_EXEMPTIONS": f"{SUB}/resourceGroups/rg-lab@2026-12-31,{SUB}/resourceGroups/rg-app/providers/"
                                       "Microsoft.ContainerRegistry/registries/acrlegacy01"})
    assert settings.scopes == (f"{SUB}/resourcegroups/rg-app".lower(), SUB)
    assert [(e.scope.rsplit("/", 1)[-1], e.until) for e in settings.exemptions] == [
        ("rg-lab", date(2026, 12, 31)), ("acrlegacy01", None)]


def test_development_storage_is_expanded_for_the_storage_sdks():
    settings = load({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert settings.storage_connection_string == DEVELOPMENT_STORAGE and settings.storage_configured


def test_sovereign_cloud_token_scope_follows_the_endpoint():
    assert load({"DLP_ARM_ENDPOINT": "https://management.usgovcloudapi.net/"}).arm_scope == \
        "https://management.usgovcloudapi.net/.default"


@pytest.mark.parametrize("name", ["ab", "-dead", "dead--letters", "Dead", "dead_letters", "a" * 64, "dead letters",
                                  "http://st.blob.core.windows.net/dl", "https://st.blob.core.windows.net/dl?sv=1&sig=x",
                                  "https://st.blob.core.windows.net/", "https://st.blob.core.windows.net/a/b",
                                  "https://st.blob.core.windows.net/Dead"])
def test_a_dead_letter_container_azure_would_refuse_turns_replay_off_and_names_the_setting(name):
    settings = load({"DLP_DEADLETTER_CONTAINER": name, "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                     "DLP_MODE": "enforce"})
    assert [setting for setting, _ in settings.degraded] == ["DLP_DEADLETTER_CONTAINER"]
    assert not settings.deadletter_enabled and settings.mode == "enforce"     # enforcement goes on


def test_dead_letter_replay_needs_the_container_and_the_apps_blob_endpoint():
    assert not load({"DLP_DEADLETTER_CONTAINER": "eventgrid-deadletters"}).deadletter_enabled
    assert load({"DLP_DEADLETTER_CONTAINER": "eventgrid-deadletters",
                 "AzureWebJobsStorage__blobServiceUri": "https://st.blob.core.windows.net"}).deadletter_enabled
    assert not load({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).deadletter_enabled


def test_a_dead_letter_container_url_names_its_own_account():
    settings = load({"DLP_DEADLETTER_CONTAINER": "https://stdlq1.blob.core.windows.net/eventgrid-deadletters"})
    assert settings.deadletter_container == "eventgrid-deadletters"
    assert settings.deadletter_account_url == "https://stdlq1.blob.core.windows.net"
    assert settings.deadletter_enabled          # no AzureWebJobsStorage needed: the managed identity reads it


def test_the_dead_letter_client_points_at_the_named_account_with_the_identity():
    from dlp.responder.deadletter import DeadLetterContainer

    class Credential:                      # a TokenCredential: never asked for a token here (no request is made)
        def get_token(self, *scopes, **kwargs):
            raise AssertionError("no request expected")

    credential = Credential()
    url = load({"DLP_DEADLETTER_CONTAINER": "https://stdlq1.blob.core.windows.net/eventgrid-deadletters",
                "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    container = DeadLetterContainer.from_settings(url, credential)
    assert container._client.url == "https://stdlq1.blob.core.windows.net/eventgrid-deadletters"
    assert container._client.credential is credential
    local = DeadLetterContainer.from_settings(load({"DLP_DEADLETTER_CONTAINER": "deadletters",
                                                    "AzureWebJobsStorage": "UseDevelopmentStorage=true"}), credential)
    assert local._client.url == "http://127.0.0.1:10000/devstoreaccount1/deadletters"


@pytest.mark.parametrize("schedule", [
    "0 0 */6 * * *", "0 */5 * * * *", "0 30 9 * Jan Mon", "0 0 9-17 * * MON-FRI", "5 0 0 1,15 * *",
    "0 0 0 * * 0", "59 59 23 31 12 6", "0 0 1-23/2 * * *",
])
def test_real_ncrontab_schedules_load(schedule):
    assert load({"DLP_SWEEP_SCHEDULE": schedule}).sweep_schedule == schedule


@pytest.mark.parametrize(("schedule", "why"), [
    ("0 0 */6 * *", "6 fields"),                 # 5-field cron: the Functions host would read it differently
    ("0 0 */6 * * * *", "6 fields"),
    ("60 0 * * * *", "second field: values must be between 0 and 59"),
    ("0 60 * * * *", "minute field"), ("0 0 24 * * *", "hour field"), ("0 0 0 0 * *", "day field"),
    ("0 0 0 32 * *", "day field"), ("0 0 0 * 13 *", "month field"), ("0 0 0 * * 7", "day-of-week field"),
    ("0 0 */0 * * *", "step must be between 1 and 24"), ("0 0 17-9 * * *", "runs backwards"),
    ("0 0 0 L * *", "day field"), ("0 0 0 ? * *", "day field"), ("0 0 0 * FOO *", "month field"),
    ("00:05:00", "6 fields"),                    # TimeSpan schedules run only on dedicated plans, not Flex
    ("0 0 ,1 * * *", "hour field"), ("", "6 fields"),
])
def test_a_schedule_that_is_not_ncrontab_is_refused_with_the_field_named(schedule, why):
    with pytest.raises(ConfigError) as raised:
        load({"DLP_SWEEP_SCHEDULE": schedule})
    assert "DLP_SWEEP_SCHEDULE: " in str(raised.value) and why in str(raised.value)


def test_time_budget_bound_is_what_event_grid_leaves():
    assert load({"DLP_TIME_BUDGET_S": "22"}).time_budget_s == 22.0
    with pytest.raises(ConfigError, match="DLP_TIME_BUDGET_S: must be between 2 and 22"):
        load({"DLP_TIME_BUDGET_S": "23"})


@pytest.mark.parametrize("name, value", [
    ("DLP_TEAMS_WEBHOOK_URL", "https://[::1/x"), ("DLP_TEAMS_WEBHOOK_URL", "https://teams.example:notaport/x?sig=s"),
    ("DLP_EMAIL_ENDPOINT", "https://[acs/"), ("DLP_LOGS_ENDPOINT", "https://dce:99999999/"),
    ("DLP_RULE_DOCS_URL", "https://[::1/rules/"), ("DLP_DEADLETTER_CONTAINER", "https://[::1/dl"),
])
def test_a_url_the_sdks_cannot_parse_turns_off_its_output_not_enforcement(name, value):
    """Passing a regex is not enough: `urlsplit` (used by the SDKs and the webhook redaction) raises on these, which
    would fail every invocation at the first use instead of naming the setting."""
    settings = load({name: value, "DLP_MODE": "enforce", "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert name in {setting for setting, _ in settings.degraded} and settings.mode == "enforce"


def test_an_exemption_whose_date_expanded_to_nothing_is_an_error_not_forever():
    with pytest.raises(ConfigError, match=r"DLP_EXEMPTIONS: .*without a date"):
        load({"DLP_EXEMPTIONS": f"{SUB}/resourceGroups/rg@"})
