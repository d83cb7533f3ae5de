"""The azd hooks of `azd down` (predown, postdown), run against stand-in commands; and the hooks' twins and files.

The PowerShell twins cannot run here (no pwsh): test_hooks_have_powershell_twins_that_say_the_same checks that they
carry the same steps as the shell hooks the other tests run.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.hooks_support import (
    B_TOPIC,
    GUIDS,
    HOOKS,
    OURS,
    OWN_TOPIC,
    REUSED,
    ROOT,
    SUB_A,
    SUB_B,
    rule,
    run_hook,
)

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")


# ---------------------------------------------------------------------------------------------------------------
# predown / postdown
# ---------------------------------------------------------------------------------------------------------------
OUTPUTS = {
    "RESPONDER_MONITORED_SUBSCRIPTIONS": f"{SUB_A},{SUB_B}",
    "RESPONDER_ROLE_GUID": GUIDS[0],
    "RESPONDER_CUSTOM_ROLE_GUIDS": ",".join(GUIDS),
    "RESPONDER_REGISTRY_LOGS_ROLE": "",
    "RESPONDER_POLICY_ASSIGNMENT": "acr-dlp-exports-disabled-tok12345",
    "EVENTGRID_SYSTEM_TOPIC_IDS": f"{OWN_TOPIC},{B_TOPIC}",
    "EVENTGRID_REUSED_TOPIC_IDS": "",
    "EVENTGRID_EVENTS_RESOURCE_GROUP": "rg-acr-dlp-dlp-events",
    "EVENTGRID_SUBSCRIPTION_NAME": OURS,
    "EVENTGRID_DIAGNOSTIC_SETTING_NAME": OURS,
}


def down_env(**env: str) -> dict[str, str]:
    return {"AZURE_ENV_NAME": "acr-dlp", "AZURE_SUBSCRIPTION_ID": SUB_A, **env}


def subscriptions_on(topic: str, names: list[str]) -> dict:
    group, name = topic.split("/")[4], topic.split("/")[8]
    return rule(rf"^eventgrid system-topic event-subscription list .*--resource-group {group} --system-topic-name {name} ",
                "".join(n + "\n" for n in names))


def test_predown_refuses_to_delete_a_topic_another_environment_uses(tmp_path):
    rules = [subscriptions_on(OWN_TOPIC, [OURS.upper(), "acr-dlp-staging99"]), subscriptions_on(B_TOPIC, [OURS])]
    run = run_hook(tmp_path, "predown.sh", rules, down_env(**OUTPUTS))
    assert run.code != 0
    assert f"{OWN_TOPIC}: acr-dlp-staging99" in run.stderr and B_TOPIC not in run.stderr
    assert "ACR_DLP_FORCE_DOWN=true azd down" in run.stderr
    assert run.azd == []   # nothing recorded: azd down stops here


def test_predown_records_what_postdown_needs(tmp_path):
    rules = [subscriptions_on(OWN_TOPIC, [OURS]), subscriptions_on(B_TOPIC, [])]
    run = run_hook(tmp_path, "predown.sh", rules, down_env(**OUTPUTS))
    assert run.code == 0, run.stderr
    assert run.azd_set() == {f"ACR_DLP_DOWN_{name}": value for name, value in OUTPUTS.items()}


def test_predown_does_not_inspect_reused_topics_and_can_be_forced(tmp_path):
    outputs = {**OUTPUTS, "EVENTGRID_SYSTEM_TOPIC_IDS": f"{OWN_TOPIC},{REUSED}", "EVENTGRID_REUSED_TOPIC_IDS": REUSED}
    rules = [subscriptions_on(OWN_TOPIC, [OURS, "other"])]
    run = run_hook(tmp_path, "predown.sh", rules, down_env(ACR_DLP_FORCE_DOWN="TRUE", **outputs))
    assert run.code == 0, run.stderr
    assert "ACR_DLP_FORCE_DOWN=true" in run.stderr and f"{OWN_TOPIC}: other" in run.stderr
    assert not run.called("defender-topic")
    assert run.azd_set()["ACR_DLP_DOWN_EVENTGRID_REUSED_TOPIC_IDS"] == REUSED


def test_predown_without_outputs_keeps_an_earlier_record(tmp_path):
    run = run_hook(tmp_path, "predown.sh", [], down_env())
    assert run.code == 0 and run.azd == [] and run.calls == []


def recorded(**outputs: str) -> dict[str, str]:
    """The environment postdown sees after `azd down`: main.bicep's outputs gone, predown's record left."""
    return down_env(**{f"ACR_DLP_DOWN_{k}": v for k, v in {**OUTPUTS, **outputs}.items()})


def postdown_rules(group_tag: str = "acr-dlp", on_b_topic: list[str] | None = None) -> list[dict]:
    return [
        subscriptions_on(B_TOPIC, on_b_topic or []),
        rule(rf"^group exists --subscription {SUB_B} --name rg-acr-dlp-dlp-events", "true\n"),
        rule(rf"^group show --subscription {SUB_B} --name rg-acr-dlp-dlp-events", group_tag + "\n"),
        rule(r"^group delete "),
        rule(r"^policy assignment delete "),
        rule(r"^eventgrid system-topic event-subscription delete "),
        rule(r"^monitor diagnostic-settings delete "),
        rule(rf"^role assignment list --subscription (\S+) --role {GUIDS[0]} ", "/ra/responder\n"),
        rule(rf"^role assignment list --subscription {SUB_A} --role {GUIDS[1]} ", "/ra/lister\n"),
        rule(r"^role assignment list ", ""),
        rule(r"^role assignment delete "),
        rule(r"^role definition delete "),
    ]


def test_postdown_removes_what_azd_down_leaves_from_what_predown_recorded(tmp_path):
    run = run_hook(tmp_path, "postdown.sh", postdown_rules(), recorded(EVENTGRID_REUSED_TOPIC_IDS=REUSED))
    assert run.code == 0, run.stderr
    # our event subscription and diagnostic setting off the reused topic, nothing else there
    unsubscribed = run.called(r"^eventgrid system-topic event-subscription delete ")
    assert len(unsubscribed) == 1 and run.option(unsubscribed[0], "--system-topic-name") == "defender-topic"
    assert run.option(unsubscribed[0], "--name") == OURS
    diagnostics = run.called(r"^monitor diagnostic-settings delete ")
    assert [(run.option(c, "--name"), run.option(c, "--resource")) for c in diagnostics] == [(OURS, REUSED)]
    # the group bootstrap.bicep made in the other subscription; azd down deleted the own subscription's
    deleted = run.called(r"^group delete ")
    assert [(run.option(c, "--subscription"), run.option(c, "--name")) for c in deleted] == [(SUB_B, "rg-acr-dlp-dlp-events")]
    assert len(run.called(r"^policy assignment delete ")) == 2
    # every custom role: its assignments, then the definition; the responder role's in every monitored subscription
    assert {run.option(c, "--subscription") for c in run.called(rf"^role assignment list .*--role {GUIDS[0]} ")} == {SUB_A, SUB_B}
    assert {run.option(c, "--subscription") for c in run.called(rf"^role assignment list .*--role {GUIDS[1]} ")} == {SUB_A}
    assert [c[c.index("--ids") + 1] for c in run.called(r"^role assignment delete ")] == [
        "/ra/responder", "/ra/responder", "/ra/lister"]
    definitions = run.called(r"^role definition delete ")
    assert [run.option(c, "--name") for c in definitions] == GUIDS
    assert run.index(r"^role assignment delete ") < run.index(r"^role definition delete ")


def test_postdown_removes_the_registry_logs_role_in_the_workspace_subscription(tmp_path):
    """The registry-logs reader is assignable (and assigned) where the workspace is, maybe another subscription."""
    logs_guid, logs_sub = "44444444-4444-4444-4444-444444444444", "cccccccc-0000-4000-8000-00000000000c"
    run = run_hook(tmp_path, "postdown.sh", postdown_rules(),
                   recorded(RESPONDER_REGISTRY_LOGS_ROLE=f"{logs_guid}@{logs_sub}"))
    assert run.code == 0, run.stderr
    assert {run.option(c, "--subscription") for c in run.called(rf"^role assignment list .*--role {logs_guid} ")} == {
        logs_sub}
    (deleted,) = [c for c in run.called(r"^role definition delete ") if run.option(c, "--name") == logs_guid]
    assert run.option(deleted, "--scope") == f"/subscriptions/{logs_sub}"


def test_postdown_keeps_a_group_whose_topic_another_environment_uses(tmp_path):
    run = run_hook(tmp_path, "postdown.sh", postdown_rules(on_b_topic=[OURS, "acr-dlp-prod42"]), recorded())
    assert run.code == 0, run.stderr
    assert not run.called(r"^group delete ")
    assert "also serves acr-dlp-prod42" in run.stderr
    unsubscribed = run.called(r"^eventgrid system-topic event-subscription delete ")
    assert [run.option(c, "--system-topic-name") for c in unsubscribed] == ["evgst-dlp-tok123"]


def test_postdown_keeps_a_group_another_environment_tagged(tmp_path):
    run = run_hook(tmp_path, "postdown.sh", postdown_rules(group_tag="someone-else"), recorded())
    assert run.code == 0
    assert not run.called(r"^group delete ") and "not tagged azd-env-name=acr-dlp" in run.stderr


def test_postdown_says_so_when_nothing_was_recorded(tmp_path):
    run = run_hook(tmp_path, "postdown.sh", [], down_env())
    assert run.code == 0 and run.calls == []
    assert "nothing recorded by the predown hook" in run.stderr


def test_predown_records_exactly_what_postdown_reads():
    predown = (HOOKS / "predown.sh").read_text()
    names = set(re.search(r"^for name in (.*?); do$", predown, re.MULTILINE | re.DOTALL).group(1).replace("\\", " ").split())
    read = set(re.findall(r"\brecorded ([A-Z_]+)", (HOOKS / "postdown.sh").read_text()))
    assert names == read == set(OUTPUTS)



# ---------------------------------------------------------------------------------------------------------------
# Both shells, both line endings
# ---------------------------------------------------------------------------------------------------------------
TWINS = {
    "preprovision": ["Microsoft.App", "--wait", "az login --tenant", "AZURE_TENANT_ID", "infra/bootstrap.bicep",
                     "customRoleGuids", "RoleDefinitionDoesNotExist", "DISCOVERED_SYSTEM_TOPIC_IDS", "VNET_ENABLED",
                     "tags['azd-env-name']", "list-flexconsumption-locations"],
    "predown": ["ACR_DLP_FORCE_DOWN", "ACR_DLP_DOWN_", "EVENTGRID_REUSED_TOPIC_IDS", "event-subscription list"],
    "postdown": ["ACR_DLP_DOWN_", "diagnostic-settings delete", "role assignment list", "role definition delete",
                 "azd-env-name", "also serves"],
    "postdeploy": ["infra/eventgrid.bicep", "HOST_STORAGE_ACCESS blob-data-owner", "get-access-token", "x-functions-key",
                   "Bearer", "AZURE_FUNCTION_APP_AUTH_PRINCIPALS", "AZURE_FUNCTION_APP_AUTH_APPLICATIONS", "403",
                   "eventSubscriptionName=", "diagnosticSettingName=", "workspaceId=", "eventsResourceGroupName="],
}


@pytest.mark.parametrize("hook", sorted(TWINS))
def test_hooks_have_powershell_twins_that_say_the_same(hook):
    sh, ps1 = (HOOKS / f"{hook}.sh").read_text(), (HOOKS / f"{hook}.ps1").read_text()
    for fragment in TWINS[hook]:
        assert fragment in sh and fragment in ps1, f"{hook}: {fragment!r}"
    yaml = (ROOT / "azure.yaml").read_text()
    assert f"run: ./infra/hooks/{hook}.sh" in yaml and f"run: ./infra/hooks/{hook}.ps1" in yaml


def test_powershell_preprovision_falls_back_to_the_deployment_subscription_on_a_blank_list():
    ps1 = (HOOKS / "preprovision.ps1").read_text()
    assert "Split-List $env:MONITORED_SUBSCRIPTION_IDS" in ps1
    assert "if ($subscriptions.Count -eq 0) { $subscriptions = @($own) }" in ps1
    common = (HOOKS / "common.ps1").read_text()
    assert "Where-Object { $_ }" in common.split("function Split-List")[1].splitlines()[0]


def test_powershell_deployment_names_fit_64_characters_and_name_the_location():
    common = (HOOKS / "common.ps1").read_text()
    assert '"acr-dlp-$stage-$("$env:AZURE_LOCATION".ToLowerInvariant())-$suffix"' in common
    assert "if ($name.Length -gt 64) { $name = $name.Substring(0, 64) }" in common
    assert "(Get-DeploymentName 'eventgrid' $env:RESPONDER_RESOURCE_TOKEN)" in (HOOKS / "postdeploy.ps1").read_text()


def test_shell_hooks_keep_lf_line_endings_on_every_checkout():
    attributes = subprocess.run(["git", "check-attr", "eol", "--", *(str(p.relative_to(ROOT)) for p in HOOKS.glob("*.sh"))],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert attributes.count(": eol: lf") == len(list(HOOKS.glob("*.sh"))) >= 5, attributes
    for script in HOOKS.glob("*.sh"):
        assert b"\r" not in script.read_bytes(), script.name


@pytest.mark.parametrize("script", sorted(HOOKS.glob("*.sh")), ids=lambda p: p.name)
def test_shell_hooks_parse(script):
    subprocess.run(["sh", "-n", str(script)], check=True)



def test_powershell_predown_records_exactly_what_powershell_postdown_reads():
    predown = (HOOKS / "predown.ps1").read_text()
    names = set(re.findall(r"'([A-Z_]+)'", re.search(r"^foreach \(\$name in (.*?)\) \{$", predown,
                                                     re.MULTILINE | re.DOTALL).group(1)))
    read = set(re.findall(r"Get-Recorded '([A-Z_]+)'", (HOOKS / "postdown.ps1").read_text()))
    assert names == read == set(OUTPUTS)
