"""The azd hooks that provision and deploy (preprovision, postdeploy), run against stand-in commands.

See tests/hooks_support.py for the stand-ins; tests/test_infra_teardown.py covers predown and postdown, and checks
that the PowerShell twins (which cannot run here) carry the same steps.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.hooks_support import (
    GUIDS,
    OTHER_TENANT,
    OURS,
    OWN_TOPIC,
    ROOT,
    SUB_A,
    SUB_B,
    TENANT,
    Run,
    rule,
    run_hook,
)

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")


# ---------------------------------------------------------------------------------------------------------------
# preprovision
# ---------------------------------------------------------------------------------------------------------------
def preprovision_rules(topics: str = "", provider: str = "Registered", role_reads: int = 3,
                       tenants: dict[str, str] | None = None, signed_in: str = TENANT) -> list[dict]:
    tenants = tenants or {SUB_A: TENANT, SUB_B: TENANT}
    rules = [rule(r"^account show --query tenantId", signed_in + "\n")]
    rules += [rule(rf"^account show --subscription {sub} ", tenant + "\n") for sub, tenant in tenants.items()]
    rules += [
        rule(r"^functionapp list-flexconsumption-locations", "eastus\ngermanywestcentral\nswedencentral\nwesteurope\n"),
        rule(r"^provider show --namespace Microsoft.App", provider + "\n"),
        rule(r"^provider register --namespace Microsoft.App"),
        rule(r"^cloud show", "https://management.azure.com/\n"),
        rule(r"^rest --method post", topics),
        rule(r"^deployment sub create .*bootstrap", ",".join(GUIDS) + "\n"),
    ]
    for guid in GUIDS:
        rules.append(rule(rf"^role definition list --name {guid} ", guid + "\n", times=role_reads * 2))
    rules.append(rule(r"^role definition list ", ""))
    return rules


def preprovision_env(**env: str) -> dict[str, str]:
    return {"AZURE_ENV_NAME": "acr-dlp", "AZURE_SUBSCRIPTION_ID": SUB_A.upper(), "AZURE_LOCATION": "swedencentral",
            **env}


def resource_graph_body(run: Run) -> dict:
    call = run.called(r"^rest --method post")[0]
    return json.loads(run.option(call, "--body"))


def test_preprovision_queries_every_monitored_subscription_and_stores_the_topics(tmp_path):
    topic_a = f"/subscriptions/{SUB_A}/resourceGroups/defender/providers/Microsoft.EventGrid/systemTopics/t1"
    topic_b = f"/subscriptions/{SUB_B}/resourceGroups/ops/providers/Microsoft.EventGrid/systemTopics/t2"
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(f"{topic_a}\n{topic_b}\n"),
                   preprovision_env(MONITORED_SUBSCRIPTION_IDS=f"{SUB_A.upper()}, {SUB_B},{SUB_B}"))
    assert run.code == 0, run.stderr
    call = run.called(r"^rest --method post")[0]
    assert run.option(call, "--url") == (
        "https://management.azure.com/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01")
    body = resource_graph_body(run)
    assert body["subscriptions"] == [SUB_A, SUB_B]
    assert "tostring(tags['azd-env-name']) != 'acr-dlp'" in body["query"]
    assert "=~ 'Microsoft.Resources.Subscriptions'" in body["query"]
    assert run.azd_set()["DISCOVERED_SYSTEM_TOPIC_IDS"] == f"{topic_a},{topic_b}"


@pytest.mark.parametrize("monitored", [None, "", " , ,"])
def test_preprovision_with_no_monitored_list_or_a_blank_one_watches_the_deployment_subscription(tmp_path, monitored):
    """main.bicep filters blanks and falls back to its own subscription: the hook (sh and ps1) must agree."""
    env = preprovision_env() if monitored is None else preprovision_env(MONITORED_SUBSCRIPTION_IDS=monitored)
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(), env)
    assert run.code == 0, run.stderr
    assert resource_graph_body(run)["subscriptions"] == [SUB_A]
    assert run.azd_set()["DISCOVERED_SYSTEM_TOPIC_IDS"] == ""
    assert "a new system topic is created" in run.stdout
    bootstrap = run.called(r"^deployment sub create")[0]
    assert f"monitoredSubscriptionIds={SUB_A}" in bootstrap


@pytest.mark.parametrize(("env", "message"), [
    ({"AZURE_ENV_NAME": "x' or 1==1 or 'y"}, "AZURE_ENV_NAME"),                # would break out of the KQL string
    ({"MONITORED_SUBSCRIPTION_IDS": f'{SUB_A},x"]}}'}, "is not a subscription ID"),  # would break the JSON body
    ({"AZURE_SUBSCRIPTION_ID": "../../x"}, "is not a subscription ID"),
    ({"AZURE_LOCATION": ""}, "azd env set AZURE_LOCATION"),
])
def test_preprovision_refuses_hostile_or_missing_input_before_any_call(tmp_path, env, message):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(), preprovision_env(**env))
    assert run.code != 0 and message in run.stderr
    assert run.calls == [] and run.azd == []


def test_preprovision_refuses_a_region_without_flex_consumption_before_querying(tmp_path):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(), preprovision_env(AZURE_LOCATION="westindia"))
    assert run.code != 0 and "does not offer Flex Consumption" in run.stderr
    assert not run.called(r"^rest ") and run.azd == []


@pytest.mark.parametrize(("signed_in", "tenants", "env", "message"), [
    # az signed in to another tenant: Resource Graph would answer for that tenant only, silently
    (OTHER_TENANT, None, {}, f"az login --tenant {TENANT}"),
    # a monitored subscription az does not know (another tenant, no access)
    (TENANT, {SUB_A: TENANT}, {"MONITORED_SUBSCRIPTION_IDS": f"{SUB_A},{SUB_B}"}, f"does not know subscription {SUB_B}"),
    # subscriptions of two tenants
    (TENANT, {SUB_A: TENANT, SUB_B: OTHER_TENANT}, {"MONITORED_SUBSCRIPTION_IDS": f"{SUB_A},{SUB_B}"},
     f"subscription {SUB_B} belongs to tenant {OTHER_TENANT}"),
    # the tenant azd deployed to before (AZURE_TENANT_ID, an output of main.bicep) is not the subscription's
    (TENANT, None, {"AZURE_TENANT_ID": OTHER_TENANT}, f"belongs to tenant {TENANT}, not {OTHER_TENANT}"),
])
def test_preprovision_trusts_resource_graph_only_when_az_is_signed_in_to_the_target_tenant(
        tmp_path, signed_in, tenants, env, message):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(signed_in=signed_in, tenants=tenants),
                   preprovision_env(**env))
    assert run.code != 0 and message in run.stderr, run.stderr
    assert not run.called(r"^rest ") and not run.called(r"^deployment ") and run.azd == []


def test_preprovision_accepts_the_tenant_in_any_case(tmp_path):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(signed_in=TENANT.upper()),
                   preprovision_env(AZURE_TENANT_ID=TENANT.upper()))
    assert run.code == 0, run.stderr


@pytest.mark.parametrize("state", ["NotRegistered", "Unregistered", ""])
def test_preprovision_registers_microsoft_app_for_vnet_integration(tmp_path, state):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(provider=state), preprovision_env())
    assert run.code == 0, run.stderr
    register = run.called(r"^provider register --namespace Microsoft.App")
    assert len(register) == 1 and "--wait" in register[0] and run.option(register[0], "--subscription") == SUB_A
    assert run.index(r"^provider register") < run.index(r"^deployment sub create")


def test_preprovision_stops_with_the_command_when_microsoft_app_cannot_be_registered(tmp_path):
    rules = [rule(r"^provider register", code=1, err="AuthorizationFailed\n"), *preprovision_rules(provider="NotRegistered")]
    run = run_hook(tmp_path, "preprovision.sh", rules, preprovision_env())
    assert run.code != 0
    assert f"az provider register --namespace Microsoft.App --subscription {SUB_A}" in run.stderr
    assert "VNET_ENABLED false" in run.stderr
    assert not run.called(r"^deployment ")


@pytest.mark.parametrize(("env", "state", "registers"), [
    ({"VNET_ENABLED": "False"}, "NotRegistered", False),   # no VNet integration: not needed
    ({}, "Registered", False),
    ({"VNET_ENABLED": "true"}, "NotRegistered", True),
])
def test_preprovision_leaves_microsoft_app_alone_when_not_needed(tmp_path, env, state, registers):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(provider=state), preprovision_env(**env))
    assert run.code == 0, run.stderr
    assert bool(run.called(r"^provider register")) is registers


def test_preprovision_deploys_the_bootstrap_stage_and_waits_for_every_role_definition(tmp_path):
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(role_reads=3),
                   preprovision_env(MONITORED_SUBSCRIPTION_IDS=f"{SUB_A},{SUB_B}"))
    assert run.code == 0, run.stderr
    bootstrap = run.called(r"^deployment sub create")
    assert len(bootstrap) == 1
    call = bootstrap[0]
    assert run.option(call, "--template-file") == "infra/bootstrap.bicep"
    assert run.option(call, "--subscription") == SUB_A and run.option(call, "--location") == "swedencentral"
    assert run.option(call, "--name") == "acr-dlp-bootstrap-swedencentral-acr-dlp"
    assert {"environmentName=acr-dlp", "location=swedencentral", f"monitoredSubscriptionIds={SUB_A},{SUB_B}"} <= set(call)
    # after the tenant check and the topic discovery, before main.bicep
    assert run.index(r"^account show --query tenantId") < run.index(r"^rest ") < run.index(r"^deployment sub create")
    # three reads in a row per definition where it is assigned: the responder role in both subscriptions
    reads = [(c[4], c[6]) for c in run.called(r"^role definition list --name")]
    assert reads.count((GUIDS[0], f"/subscriptions/{SUB_A}")) == 3
    assert reads.count((GUIDS[0], f"/subscriptions/{SUB_B}")) == 3
    assert reads.count((GUIDS[1], f"/subscriptions/{SUB_A}")) == 3 and (GUIDS[1], f"/subscriptions/{SUB_B}") not in reads
    assert "Role definitions in place" in run.stdout


def test_preprovision_waits_while_a_role_definition_has_not_replicated_then_warns(tmp_path):
    # the second definition never reads back: 40 tries, sleeping between them, then a warning, and provisioning goes on
    rules = [rule(rf"^role definition list --name {GUIDS[1]} ", ""), *preprovision_rules()]
    run = run_hook(tmp_path, "preprovision.sh", rules, preprovision_env())
    assert run.code == 0, run.stderr
    assert len(run.called(rf"^role definition list --name {GUIDS[1]} ")) == 40
    assert f"role definition {GUIDS[1]} does not read back" in run.stderr and "RoleDefinitionDoesNotExist" in run.stderr
    sleeps = (run.fake_dir / "sleeps").read_text().split()
    assert len(sleeps) >= 39 and set(sleeps) == {"5"}


def test_preprovision_counts_only_consecutive_reads(tmp_path):
    """A read that misses (another replica) starts the count again."""
    rules = [rule(rf"^role definition list --name {GUIDS[2]} ", GUIDS[2], times=2),
             rule(rf"^role definition list --name {GUIDS[2]} ", "", times=1), *preprovision_rules()]
    run = run_hook(tmp_path, "preprovision.sh", rules, preprovision_env())
    assert run.code == 0, run.stderr
    assert len(run.called(rf"^role definition list --name {GUIDS[2]} ")) == 6   # 2 hits, 1 miss, 3 hits


def test_preprovision_stops_when_the_bootstrap_stage_fails(tmp_path):
    rules = [rule(r"^deployment sub create", code=1, err="AuthorizationFailed\n"), *preprovision_rules()]
    run = run_hook(tmp_path, "preprovision.sh", rules, preprovision_env())
    assert run.code != 0 and "infra/bootstrap.bicep failed" in run.stderr
    assert not run.called(r"^role definition ")


def test_deployment_names_fit_64_characters_and_name_the_location(tmp_path):
    long_env = "e" * 64
    run = run_hook(tmp_path, "preprovision.sh", preprovision_rules(),
                   preprovision_env(AZURE_ENV_NAME=long_env, AZURE_LOCATION="germanywestcentral"))
    assert run.code == 0, run.stderr
    name = run.option(run.called(r"^deployment sub create")[0], "--name")
    assert len(name) == 64 and name.startswith("acr-dlp-bootstrap-germanywestcentral-eee")



# ---------------------------------------------------------------------------------------------------------------
# postdeploy
# ---------------------------------------------------------------------------------------------------------------
APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ME = "9a2c1c59-0000-0000-0000-00000000beef"


def jwt(**claims: str) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part({'aud': 'api://x', 'amr': ['pwd', 'mfa'], **claims})}.c2ln"


def postdeploy_env(**env: str) -> dict[str, str]:
    return {"AZURE_ENV_NAME": "acr-dlp", "AZURE_SUBSCRIPTION_ID": SUB_A, "AZURE_LOCATION": "swedencentral",
            "AZURE_RESOURCE_GROUP": "rg-acr-dlp", "AZURE_FUNCTION_APP_NAME": "func-dlp-tok123",
            "EVENTGRID_SYSTEM_TOPIC_IDS": OWN_TOPIC, "EVENTGRID_DEADLETTER_STORAGE_ACCOUNT": "stdlqtok123",
            "EVENTGRID_DEADLETTER_CONTAINER": "eventgrid-deadletters", "EVENTGRID_SUBSCRIPTION_NAME": OURS,
            "EVENTGRID_DIAGNOSTIC_SETTING_NAME": OURS, "EVENTGRID_EVENTS_RESOURCE_GROUP": "rg-acr-dlp-dlp-events",
            "ALERT_NAME_PREFIX": "acr-dlp-tok123-", "RESPONDER_RESOURCE_TOKEN": "tok123",
            "LOG_ANALYTICS_WORKSPACE_ID": f"/subscriptions/{SUB_A}/resourceGroups/rg-acr-dlp/providers/"
                                          "Microsoft.OperationalInsights/workspaces/log-dlp-tok123", **env}


def easy_auth_env(**env: str) -> dict[str, str]:
    return postdeploy_env(AZURE_FUNCTION_APP_AUTH="entra-id", AZURE_FUNCTION_APP_URL="https://func-dlp-tok123.azurewebsites.net",
                          AZURE_FUNCTION_APP_AUTH_CLIENT_ID="5f1e0000-0000-0000-0000-0000000000a1", **env)


def postdeploy_rules(token: str | None = None) -> list[dict]:
    return [
        rule(r"^functionapp function show ", "on_registry_event\n"),
        rule(r"^deployment sub create "),
        rule(r"^functionapp keys list ", "s3cr3t-key\n"),
        rule(r"^account get-access-token ", (token + "\n") if token else "", code=0 if token else 1,
             err="" if token else "AADSTS65001: consent required\n"),
    ]


def run_postdeploy(tmp_path: Path, env: dict[str, str], rules: list[dict], anonymous: str = "401",
                   with_token: str = "400") -> Run:
    return run_hook(tmp_path, "postdeploy.sh", rules, env,
                    files={"status-anonymous": anonymous, "status-token": with_token})


def test_postdeploy_says_which_storage_access_the_host_had_and_what_az_answered(tmp_path):
    rules = [rule(r"^functionapp function show ", code=3,
                  err="ERROR: Encountered an error (ServiceUnavailable) from host runtime.\n")]
    run = run_postdeploy(tmp_path, postdeploy_env(), rules)
    assert run.code != 0
    assert len(run.called(r"^functionapp function show ")) == 30
    assert "Encountered an error (ServiceUnavailable) from host runtime" in run.stderr
    assert "least-privilege storage roles" in run.stderr
    assert "azd env set HOST_STORAGE_ACCESS blob-data-owner && azd provision" in run.stderr
    assert not run.called(r"^deployment ")
    fallback = run_postdeploy(tmp_path / "owner", postdeploy_env(RESPONDER_HOST_STORAGE_ACCESS="blob-data-owner"), rules)
    assert fallback.code != 0 and "storage permissions are not the cause" in fallback.stderr
    assert "HOST_STORAGE_ACCESS blob-data-owner &&" not in fallback.stderr


def test_postdeploy_deploys_the_second_stage_with_every_parameter_it_needs(tmp_path):
    run = run_postdeploy(tmp_path, postdeploy_env(AZURE_LOCATION="germanywestcentral"), postdeploy_rules())
    assert run.code == 0, run.stderr
    call = run.called(r"^deployment sub create ")[0]
    assert run.option(call, "--template-file") == "infra/eventgrid.bicep"
    name = run.option(call, "--name")
    assert name == "acr-dlp-eventgrid-germanywestcentral-tok123" and len(name) <= 64
    stage_two = (ROOT / "infra" / "eventgrid.bicep").read_text()
    required = set(re.findall(r"^param (\w+) \w+$", stage_two, re.MULTILINE))
    given = {arg.split("=", 1)[0] for arg in call if re.match(r"^\w+=", arg)}
    assert required <= given, sorted(required - given)
    assert f"eventSubscriptionName={OURS}" in call and f"diagnosticSettingName={OURS}" in call
    assert "eventsResourceGroupName=rg-acr-dlp-dlp-events" in call


@pytest.mark.parametrize(("status", "ok"), [("401", True), ("400", False), ("200", False), ("000", False)])
def test_postdeploy_trusts_easy_auth_only_when_a_keyed_tokenless_call_gets_401(tmp_path, status, ok):
    run = run_postdeploy(tmp_path, easy_auth_env(AZURE_FUNCTION_APP_AUTH_PRINCIPALS=ME), postdeploy_rules(), anonymous=status)
    assert (run.code == 0) is ok, run.stderr
    configs = (run.fake_dir / "curl-configs").read_text()
    # the key travels on stdin (not on the command line) and the first call carries no bearer token
    assert configs.startswith('header = "x-functions-key: s3cr3t-key"\n')
    args = (run.fake_dir / "curl-args").read_text()
    assert "s3cr3t-key" not in args and "Authorization" not in args
    assert args.splitlines()[0].rstrip().endswith("https://func-dlp-tok123.azurewebsites.net/api/recheck")
    if not ok:
        assert f"got HTTP {status}, not 401" in run.stderr


@pytest.mark.parametrize(("lists", "with_token", "ok", "says"), [
    ({"AZURE_FUNCTION_APP_AUTH_PRINCIPALS": f"other, {ME.upper()}"}, "400", True, "accepts an allowed token"),
    ({"AZURE_FUNCTION_APP_AUTH_APPLICATIONS": APP_ID}, "400", True, "accepts an allowed token"),
    ({"AZURE_FUNCTION_APP_AUTH_PRINCIPALS": ME, "AZURE_FUNCTION_APP_AUTH_APPLICATIONS": APP_ID}, "403", False,
     "is on the allowed lists but POST /api/recheck got HTTP 403"),
    # both lists must hold (App Service ANDs them): the right principal from another application is refused
    ({"AZURE_FUNCTION_APP_AUTH_PRINCIPALS": ME, "AZURE_FUNCTION_APP_AUTH_APPLICATIONS": "another-app"}, "403", True,
     "refuses a token outside the allowed lists (HTTP 403)"),
    ({"AZURE_FUNCTION_APP_AUTH_PRINCIPALS": "someone-else"}, "403", True, "acceptance of an allowed token was not shown"),
    ({"AZURE_FUNCTION_APP_AUTH_PRINCIPALS": "someone-else"}, "400", False, "got HTTP 400, not 403"),
])
def test_postdeploy_checks_the_authorization_policy_with_the_deployers_own_token(tmp_path, lists, with_token, ok, says):
    token = jwt(oid=ME, appid=APP_ID)
    run = run_postdeploy(tmp_path, easy_auth_env(**lists), postdeploy_rules(token), with_token=with_token)
    assert (run.code == 0) is ok, run.stderr
    assert says in run.stdout + run.stderr
    audience = run.called(r"^account get-access-token ")[0]
    assert run.option(audience, "--scope") == "api://5f1e0000-0000-0000-0000-0000000000a1/user_impersonation"   # the one recipe
    configs = (run.fake_dir / "curl-configs").read_text()
    assert f'header = "Authorization: Bearer {token}"' in configs
    assert token not in (run.fake_dir / "curl-args").read_text() and token not in run.stdout + run.stderr


def test_postdeploy_reads_azp_when_the_token_has_no_appid(tmp_path):
    run = run_postdeploy(tmp_path, easy_auth_env(AZURE_FUNCTION_APP_AUTH_APPLICATIONS=APP_ID),
                         postdeploy_rules(jwt(oid=ME, azp=APP_ID)))
    assert run.code == 0 and "accepts an allowed token" in run.stdout, run.stderr


def test_postdeploy_warns_when_it_cannot_get_a_token_to_show_acceptance(tmp_path):
    run = run_postdeploy(tmp_path, easy_auth_env(AZURE_FUNCTION_APP_AUTH_PRINCIPALS=ME), postdeploy_rules())
    assert run.code == 0, run.stderr
    assert "whether an allowed token is accepted was not checked" in run.stderr
    assert len((run.fake_dir / "curl-args").read_text().splitlines()) == 1


