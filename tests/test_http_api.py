"""POST /api/recheck and GET /api/health through the real Functions handlers (function_app), over HTTPS
to the ARM + Resource Graph emulator, with Azurite for the app's storage (breaker, leases, durable retry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import azure.functions as func
import pytest

import function_app
from dlp import __version__, runtime
from dlp.emulator import registry_id
from dlp.triggers import http_api

SUB = "11111111-2222-3333-4444-555555555555"
OTHER_SUB = "99999999-8888-7777-6666-555555555555"
REG = registry_id(SUB, "rg-app", "acrprod01")
COMPLIANT = {"export": "disabled", "public": "Disabled", "dataEndpointEnabled": True, "networkRuleBypassOptions": "None"}
EVALUATE_KEYS = {"registryId", "name", "sku", "source", "compliant", "findings"}
REPO = Path(__file__).resolve().parents[1]
ALERT_SETTINGS = ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO")


@pytest.fixture
def app(azurite_env, monkeypatch):
    """The function app as deployed: settings from the environment, services built on first use.
    Alert channels are off (their tests live with them); Log Analytics records every re-check."""
    for name in ALERT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}")
    monkeypatch.setenv("DLP_MODE", "audit")
    runtime.reset()
    yield azurite_env
    runtime.reset()


@pytest.fixture
def arm(local_azure):
    return local_azure.arm


def post(body, params=None, headers=None):
    """Call the recheck function exactly as the host does; returns (status, JSON body, raw text)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = func.HttpRequest(method="POST", url="https://app.azurewebsites.net/api/recheck", params=params or {},
                               headers=headers or {}, body=raw)
    response = function_app.recheck.build().get_user_function()(request)
    text = response.get_body().decode()
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(text), text


def get_health():
    request = func.HttpRequest(method="GET", url="https://app.azurewebsites.net/api/health", body=b"")
    response = function_app.health.build().get_user_function()(request)
    return response.status_code, json.loads(response.get_body().decode()), response.get_body().decode()


def arm_calls(arm):
    return arm.log.count(service="arm") + arm.log.count(service="graph") + arm.log.count(service="arm-op")


def recorded(local_azure, trigger="http"):
    return [row for row in local_azure.logs.rows() if row.get("Trigger") == trigger]


# --- 200 ------------------------------------------------------------------------------------------

def test_registry_recheck_answers_the_evaluate_shape_plus_remediation_and_is_recorded(app, arm, local_azure):
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    status, body, _ = post({"registryId": REG}, headers={"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com",
                                                         "X-Forwarded-For": "203.0.113.9:5123"})
    assert status == 200
    [evaluation] = body["evaluations"]
    assert EVALUATE_KEYS | {"remediation"} == set(evaluation)
    assert evaluation["registryId"] == REG and evaluation["compliant"] is True and evaluation["source"] == "arm"
    assert evaluation["remediation"] == {"action": "none", "reason": "", "detail": "", "changes": []}
    assert arm.log.count(service="arm", method="GET") == 1         # a compliant registry costs one GET
    assert arm.log.count(service="graph") == 0
    rows = recorded(local_azure)
    assert rows and {r["Caller"] for r in rows} == {"alice@contoso.com"}
    assert {r["RegistryId"] for r in rows} == {REG} and {r["Action"] for r in rows} == {"none"}


def test_caller_falls_back_to_the_principal_id_and_control_characters_are_dropped(app, arm, local_azure):
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    assert post({"registryId": REG}, headers={"X-MS-CLIENT-PRINCIPAL-ID": "0000-oid\r\nX-Evil: 1"})[0] == 200
    assert {r["Caller"] for r in recorded(local_azure)} == {"object:0000-oid X-Evil: 1"}


def test_scope_recheck_lists_through_resource_graph_and_reads_only_what_needs_a_write(app, arm, local_azure):
    arm.create(SUB, "rg-app", "acrgood01", **COMPLIANT)
    arm.create(SUB, "rg-app", "acrgood02", **COMPLIANT)
    arm.create(SUB, "rg-app", "acrdrift01", export="enabled", public="Enabled")
    arm.create(SUB, "rg-other", "acrelse01", export="enabled", public="Enabled")
    status, body, _ = post({"scope": f"/subscriptions/{SUB}/resourceGroups/rg-app"})
    assert status == 200
    by_name = {e["name"]: e for e in body["evaluations"]}
    assert set(by_name) == {"acrgood01", "acrgood02", "acrdrift01"}
    assert by_name["acrgood01"]["source"] == "resourcegraph" and by_name["acrgood01"]["compliant"] is True
    assert by_name["acrdrift01"]["remediation"]["action"] == "would-remediate"
    assert arm.log.count(service="graph") == 1
    registry_gets = [r for r in arm.log.filter(service="arm", method="GET") if "exportpipelines" not in r.path.lower()]
    assert [r.path.rsplit("/", 1)[-1] for r in registry_gets] == ["acrdrift01"]
    assert len(recorded(local_azure)) >= 3


# --- remediate: audit vs enforce -----------------------------------------------------------------------

def test_remediate_in_audit_mode_reports_the_plan_and_writes_nothing(app, arm):
    arm.create(SUB, "rg-app", "acrprod01", export="enabled", public="Enabled")
    status, body, _ = post({"registryId": REG}, params={"remediate": "true"})
    assert status == 200
    remediation = body["evaluations"][0]["remediation"]
    assert remediation["action"] == "would-remediate" and remediation["reason"] == "audit-mode"
    assert {c["property"] for c in remediation["changes"]} == {"publicNetworkAccess", "policies.exportPolicy.status"}
    assert arm.log.count(service="arm", method="PATCH") == 0
    assert arm.get(REG)["properties"]["publicNetworkAccess"] == "Enabled"


def test_enforce_mode_without_remediate_only_reports_and_says_how_to_apply(app, arm, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    arm.create(SUB, "rg-app", "acrprod01", export="enabled", public="Enabled")
    status, body, _ = post({"registryId": REG})
    remediation = body["evaluations"][0]["remediation"]
    assert status == 200 and remediation["action"] == "would-remediate"
    assert "remediate=true" in remediation["detail"]
    assert arm.log.count(service="arm", method="PATCH") == 0


def test_remediate_in_enforce_mode_writes_one_minimal_patch(app, arm, monkeypatch, local_azure):
    monkeypatch.setenv("DLP_MODE", "enforce")
    arm.create(SUB, "rg-app", "acrprod01", export="enabled", public="Enabled")
    status, body, _ = post({"registryId": REG}, params={"remediate": "true"},
                           headers={"X-MS-CLIENT-PRINCIPAL-NAME": "oncall@contoso.com"})
    assert status == 200
    assert body["evaluations"][0]["remediation"]["action"] == "remediated"
    [patch] = arm.log.filter(service="arm", method="PATCH")
    assert patch.json() == {"properties": {"publicNetworkAccess": "Disabled",
                                           "policies": {"exportPolicy": {"status": "disabled"}}}}
    props = arm.get(REG)["properties"]
    assert props["publicNetworkAccess"] == "Disabled" and props["policies"]["exportPolicy"]["status"] == "disabled"
    rows = recorded(local_azure)
    assert {r["Action"] for r in rows} == {"remediated"} and {r["Mode"] for r in rows} == {"enforce"}
    assert {r["Caller"] for r in rows} == {"oncall@contoso.com"}


# --- 400 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "code", "words"), [
    (b"registryId=/subscriptions/x", "InvalidJson", "JSON object"),
    (b"\xff\xfe\x00", "InvalidJson", "JSON object"),
    (b"[1, 2]", "InvalidJson", "JSON object"),
    (b"\"" + REG.encode() + b"\"", "InvalidJson", "JSON object"),
    (b"{}", "InvalidBody", "exactly one"),
    (json.dumps({"registryId": REG, "scope": f"/subscriptions/{SUB}"}).encode(), "InvalidBody", "exactly one"),
    (json.dumps({"registryID": REG}).encode(), "UnknownField", "registryID"),
    (json.dumps({"registryId": 42}).encode(), "InvalidRegistryId", "must be a string"),
    (json.dumps({"registryId": REG + "/"}).encode(), "InvalidRegistryId", "not a container registry ID"),
    (json.dumps({"registryId": REG + "\n"}).encode(), "InvalidRegistryId", "not a container registry ID"),
    (json.dumps({"registryId": " " + REG}).encode(), "InvalidRegistryId", "not a container registry ID"),
    (json.dumps({"registryId": REG + "/replications/westeurope"}).encode(), "InvalidRegistryId", "registry ID"),
    (json.dumps({"registryId": REG.replace("ContainerRegistry", "Storage")}).encode(), "InvalidRegistryId", "ID"),
    (json.dumps({"registryId": REG.replace("acrprod01", "acr")}).encode(), "InvalidRegistryId", "ID"),
    (json.dumps({"registryId": "/subscriptions/" + "a" * 5000}).encode(), "BodyTooLarge", "4096 bytes"),
    (json.dumps({"scope": "/subscriptions/not-a-guid"}).encode(), "InvalidScope", "subscription or resource-group"),
    (json.dumps({"scope": f"/subscriptions/{SUB}/"}).encode(), "InvalidScope", "subscription or resource-group"),
    (json.dumps({"scope": f"/subscriptions/{SUB}\n"}).encode(), "InvalidScope", "subscription or resource-group"),
    (json.dumps({"scope": REG}).encode(), "InvalidScope", "send a registry ID as registryId"),
    (b"[" * 2000 + b"]" * 2000, "InvalidJson", "JSON object"),
])
def test_bad_bodies_answer_400_with_a_code_and_a_message_and_call_nothing(app, arm, body, code, words):
    status, answer, text = post(body)
    assert status == 400
    assert answer["error"]["code"] == code and words in answer["error"]["message"]
    assert "Traceback" not in text
    assert arm_calls(arm) == 0


def test_a_bad_remediate_value_is_400(app, arm):
    status, answer, _ = post({"registryId": REG}, params={"remediate": "yes please"})
    assert (status, answer["error"]["code"]) == (400, "InvalidParameter")
    assert "remediate must be true or false" in answer["error"]["message"]
    assert arm_calls(arm) == 0


# --- 403 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"registryId": registry_id(OTHER_SUB, "rg-app", "acrprod01")},
    {"scope": f"/subscriptions/{OTHER_SUB}"},
    {"scope": f"/subscriptions/{OTHER_SUB}/resourceGroups/rg-app"},
])
def test_outside_dlp_scopes_is_refused_before_any_azure_call(app, arm, body):
    arm.create(OTHER_SUB, "rg-app", "acrprod01", export="enabled", public="Enabled")
    status, answer, _ = post(body, params={"remediate": "true"})
    assert status == 403 and answer["error"]["code"] == "OutOfScope"
    assert "outside DLP_SCOPES" in answer["error"]["message"]
    assert arm_calls(arm) == 0


def test_a_subscription_wider_than_a_resource_group_scope_is_refused(app, arm, monkeypatch):
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/rg-app")
    status, answer, _ = post({"scope": f"/subscriptions/{SUB}"})
    assert status == 403 and answer["error"]["code"] == "OutOfScope"
    assert post({"registryId": registry_id(SUB, "rg-other", "acrprod01")})[0] == 403
    assert arm_calls(arm) == 0


# --- 404 -------------------------------------------------------------------------------------------

def test_a_registry_that_does_not_exist_is_404_and_recorded_as_gone(app, arm, local_azure):
    status, answer, _ = post({"registryId": REG})
    assert status == 404 and answer["error"]["code"] == "RegistryNotFound"
    assert "does not exist" in answer["error"]["message"] and REG in answer["error"]["message"]
    assert answer["evaluations"][0]["remediation"]["action"] == "gone"
    assert {r["Action"] for r in recorded(local_azure)} == {"gone"}


# --- 502 -------------------------------------------------------------------------------------------

def test_arm_refusing_the_read_is_502_with_its_error_code(app, arm, local_azure):
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    arm.faults.add(method="GET", path="registries/acrprod01$", status=403, service="arm",
                   body={"error": {"code": "AuthorizationFailed", "message": "The client does not have authorization "
                                                                             "to perform action 'read'."}})
    status, answer, _ = post({"registryId": REG})
    assert status == 502 and answer["error"]["code"] == "AuthorizationFailed"
    assert "ARM failed for 1 of 1 registry" in answer["error"]["message"]
    assert "does not have authorization" in answer["error"]["message"]
    assert answer["evaluations"][0]["remediation"]["action"] == "error"
    assert {r["Action"] for r in recorded(local_azure)} == {"error"}


def test_a_persistent_arm_outage_is_502_within_the_budget_and_handed_to_the_durable_retry(app, arm, monkeypatch):
    import base64
    import time

    from azure.storage.queue import QueueClient

    monkeypatch.setenv("DLP_TIME_BUDGET_S", "3")
    runtime.services().retry.base_delay_s = 0          # the retry message becomes visible at once
    queue = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], "dlp-retry")
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    arm.faults.add(method="GET", path="registries/acrprod01$", status=503, times=None, service="arm")
    started = time.monotonic()
    status, answer, _ = post({"registryId": REG})
    assert time.monotonic() - started < 3.5
    assert status == 502
    assert answer["evaluations"][0]["remediation"]["action"] == "deferred"
    messages = [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]
    queue.clear_messages()
    assert any(m.get("registryId") == REG and m["context"]["trigger"] == "http" for m in messages)


def test_arm_down_and_the_durable_retry_down_is_503(app, arm, monkeypatch):
    from azure.storage.queue import QueueClient

    from dlp.azure.retryqueue import RetryQueue

    monkeypatch.setenv("DLP_TIME_BUDGET_S", "3")
    services = runtime.services()
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;" \
           "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    services.retry = RetryQueue(QueueClient.from_connection_string(dead, "dlp-retry", retry_total=0,
                                                                   connection_timeout=1))
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    arm.faults.add(method="GET", path="registries/acrprod01$", status=503, times=None, service="arm")
    status, answer, text = post({"registryId": REG})
    assert status == 503 and answer["error"]["code"] == "RetryUnavailable"
    assert "durable retry could not take the work" in answer["error"]["message"] and "Traceback" not in text


def test_resource_graph_failing_a_scope_recheck_is_502(app, arm):
    arm.faults.add(method="POST", path="resourcegraph", status=403, service="graph",
                   body={"error": {"code": "AuthorizationFailed", "message": "no read on the subscription"}})
    status, answer, _ = post({"scope": f"/subscriptions/{SUB}"})
    assert status == 502 and answer["error"]["code"] == "AuthorizationFailed"
    assert "Resource Graph could not list the registries" in answer["error"]["message"]


# --- configuration errors and health -----------------------------------------------------------------

def test_recheck_with_bad_settings_is_503_naming_the_setting(app, arm, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "yolo")
    status, answer, _ = post({"registryId": REG})
    assert status == 503 and answer["error"]["code"] == "ConfigurationError"
    assert "DLP_MODE" in answer["error"]["message"]
    assert arm_calls(arm) == 0


def test_health_reports_version_mode_and_which_outputs_are_configured_never_their_values(app, local_azure,
                                                                                         monkeypatch):
    for name, value in local_azure.env().items():
        if name in ALERT_SETTINGS:
            monkeypatch.setenv(name, value)
    status, body, text = get_health()
    assert status == 200
    assert body["status"] == "ok" and body["version"] == __version__ and body["mode"] == "audit"
    assert body["outputs"] == {"logAnalytics": True, "teams": True, "email": True, "storage": True,
                               "deadLetterReplay": False, "registryLogs": False}
    assert body["configurationError"] is None
    for secret in (os.environ["DLP_TEAMS_WEBHOOK_URL"], os.environ["AzureWebJobsStorage"], os.environ["DLP_LOGS_ENDPOINT"]):
        assert secret not in text


def test_health_reports_a_configuration_error_instead_of_crashing(app, monkeypatch):
    monkeypatch.setenv("DLP_TEAMS_WEBHOOK_URL", "http://prod-00.westeurope.logic.azure.com/workflows/x?sig=TOPSECRET")
    monkeypatch.setenv("DLP_SCOPES", "/subscriptions/oops")
    status, body, text = get_health()
    assert status == 503 and body["status"] == "misconfigured" and body["mode"] == "audit"
    settings = {p["setting"] for p in body["configurationError"]["problems"]}
    assert settings == {"DLP_SCOPES"}                       # what decides enforcement fails loudly ...
    assert [p["setting"] for p in body["problems"]] == ["DLP_TEAMS_WEBHOOK_URL"]     # ... the rest is listed too
    assert "TOPSECRET" not in text


def test_importing_the_function_app_never_raises_on_bad_settings():
    env = dict(os.environ, DLP_MODE="nonsense", DLP_SCOPES="garbage", DLP_SWEEP_SCHEDULE="every day",
               PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", "import function_app; print(len(function_app.app.get_functions()))"],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 5


def test_the_routes_use_function_keys_and_the_right_methods():
    bindings = {f.get_function_name(): f.get_bindings() for f in function_app.app.get_functions()}
    for name, route, method in (("recheck", "recheck", "POST"), ("health", "health", "GET")):
        trigger = next(b for b in bindings[name] if b.type == "httpTrigger")
        assert trigger.route == route and [str(m).split(".")[-1].upper() for m in trigger.methods] == [method]
        assert str(trigger.auth_level).split(".")[-1].upper() == "FUNCTION"
    timer = next(b for b in bindings["sweep"] if b.type == "timerTrigger")
    assert timer.schedule == "%DLP_SWEEP_SCHEDULE%"


# --- the caller's IP: the platform's, never the caller's own text -----------------------------------------


def test_the_recorded_ip_is_what_the_front_end_saw_not_what_the_client_wrote(app, arm, local_azure):
    """A client writes any X-Forwarded-For it likes; the App Service front end appends the address it saw and sets
    `client-ip` (overwriting a client's). The first entry, the client's own, is never recorded."""
    arm.create(SUB, "rg-app", "acrprod01", **COMPLIANT)
    forged = "198.51.100.66"
    status, _, _ = post({"registryId": REG}, headers={"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com",
                                                     "X-Forwarded-For": f"{forged}, 203.0.113.9:5123",
                                                     "client-ip": "203.0.113.9:5123"})
    assert status == 200
    rows = recorded(local_azure)
    assert rows and {r["CallerIpAddress"] for r in rows} == {"203.0.113.9"}
    assert forged not in json.dumps(rows)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"client-ip": "203.0.113.9:5123", "X-Forwarded-For": "198.51.100.66"}, "203.0.113.9"),
    ({"X-Forwarded-For": "198.51.100.66, 10.0.0.5, 203.0.113.9:49828"}, "203.0.113.9"),      # no client-ip: the last
    ({"client-ip": "[2001:db8::7]:443"}, "2001:db8::7"),
    ({"X-Forwarded-For": "2001:db8::9"}, "2001:db8::9"),
    ({"client-ip": "not-an-ip\r\nX-Evil: 1"}, ""),
    ({"X-Forwarded-For": "203.0.113.9, <script>"}, ""),                 # the last entry is not an address
    ({}, ""),
])
def test_platform_ip_reads_client_ip_then_the_last_forwarded_entry(headers, expected):
    assert http_api.platform_ip(headers) == expected
