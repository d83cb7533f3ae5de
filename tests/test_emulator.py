"""The emulator answers like Azure: proven by driving the REAL SDK clients over HTTPS against it."""

from __future__ import annotations

import gzip
import json
import threading
import time

import pytest
import requests
from azure.communication.email import EmailClient
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import (
    ExportPolicy,
    Policies,
    RegistryUpdateParameters,
)
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions
from azure.monitor.ingestion import LogsIngestionClient

from dlp.emulator import LocalAzure, arm_error, make_registry
from dlp.emulator.certs import get_certs
from dlp.emulator.teams import TeamsEmulator, card_problems

SUB = "00000000-0000-0000-0000-0000000000a1"
SUB2 = "00000000-0000-0000-0000-0000000000b2"
FAST = 0.01  # LRO polling interval for tests


# --- helpers ----------------------------------------------------------------------------------------


def acr_client(azure: LocalAzure, credential=None) -> ContainerRegistryManagementClient:
    return ContainerRegistryManagementClient(credential or azure.credential(), SUB, base_url=azure.arm.url,
                                             credential_scopes=[azure.arm.url + "/.default"])


def registry_path(rg: str, name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"


def bearer(azure: LocalAzure, resource: str = "https://management.azure.com") -> dict[str, str]:
    return {"Authorization": "Bearer " + azure.tokens.mint(resource).value}


# --- identity --------------------------------------------------------------------------------------


def test_managed_identity_credential_gets_tokens_from_emulated_app_service(azure_env: LocalAzure):
    credential = ManagedIdentityCredential()
    token = credential.get_token("https://management.azure.com/.default")
    again = credential.get_token("https://management.azure.com/.default")
    assert token.token == again.token and token.expires_on > time.time() + 3600
    assert azure_env.identity.token_requests == 1          # msal caches per resource
    record = azure_env.identity.log.last()
    assert record.query == {"api-version": "2019-08-01", "resource": "https://management.azure.com"}
    assert record.headers["x-identity-header"] == azure_env.identity.header_secret
    # the ARM emulator accepts it
    reply = requests.get(azure_env.arm.url + f"/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/registries",
                         params={"api-version": "2025-11-01"}, headers={"Authorization": f"Bearer {token.token}"})
    assert reply.status_code == 200 and reply.json() == {"value": []}


def test_default_credential_uses_managed_identity_with_user_assigned_client_id(azure_env: LocalAzure, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    azure_env.arm.create(SUB, "rg1", "acr1")
    registry = acr_client(azure_env, credential).registries.get("rg1", "acr1")
    assert registry.name == "acr1"
    record = azure_env.identity.log.last()
    assert record.query["client_id"] == "11111111-2222-3333-4444-555555555555"
    assert record.query["resource"] == azure_env.arm.url      # the scope follows DLP_ARM_ENDPOINT


def test_identity_endpoint_refuses_a_wrong_header(azure_env: LocalAzure):
    reply = requests.get(azure_env.identity.endpoint, params={"api-version": "2019-08-01", "resource": "x"},
                         headers={"X-IDENTITY-HEADER": "wrong"})
    assert reply.status_code == 401


def test_arm_requires_a_bearer_token_for_its_audience(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    url = azure_env.arm.url + registry_path("rg1", "acr1")
    reply = requests.get(url, params={"api-version": "2025-11-01"})
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "AuthenticationFailed"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
    wrong = requests.get(url, params={"api-version": "2025-11-01"}, headers=bearer(azure_env, "https://monitor.azure.com"))
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    with pytest.raises(ClientAuthenticationError):
        ContainerRegistryManagementClient(azure_env.credential(), SUB, base_url=azure_env.arm.url,
                                          credential_scopes=["https://monitor.azure.com/.default"]
                                          ).registries.get("rg1", "acr1")


# --- ARM: reads --------------------------------------------------------------------------------------


def test_get_returns_full_arm_json_and_costs_exactly_one_request(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1", export="disabled", public="Disabled", tags={"team": "a"})
    registry = acr_client(azure_env).registries.get("rg1", "acr1")
    assert azure_env.arm.log.count() == 1 and azure_env.arm.log.count(service="arm", method="GET") == 1
    assert registry.public_network_access == "Disabled"
    assert registry.policies.export_policy.status == "disabled"
    assert registry.sku.name == "Premium" and registry.tags == {"team": "a"}
    assert registry.login_server == "acr1.azurecr.io"
    pe = registry.private_endpoint_connections[0]
    assert pe.private_link_service_connection_state.status == "Approved"
    assert registry.network_rule_set.default_action == "Allow"


def test_paths_match_without_case_and_404s_are_arm_shaped(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "RG1", "acr1")
    path = registry_path("rg1", "ACR1").replace("resourceGroups", "resourcegroups")
    reply = requests.get(azure_env.arm.url + path, params={"api-version": "2025-11-01"}, headers=bearer(azure_env))
    assert reply.status_code == 200 and reply.json()["name"] == "acr1"
    client = acr_client(azure_env)
    with pytest.raises(ResourceNotFoundError) as missing:
        client.registries.get("rg1", "gone")
    assert missing.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as no_group:
        client.registries.get("nogroup", "acr1")
    assert no_group.value.error.code == "ResourceGroupNotFound"


def test_old_api_versions_do_not_show_the_export_policy(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    url = azure_env.arm.url + registry_path("rg1", "acr1")
    old = requests.get(url, params={"api-version": "2019-05-01"}, headers=bearer(azure_env)).json()
    assert "exportPolicy" not in old["properties"]["policies"]
    bogus = requests.get(url, params={"api-version": "2099-01-01"}, headers=bearer(azure_env))
    assert bogus.status_code == 400 and bogus.json()["error"]["code"] == "NoRegisteredProviderFound"


def test_list_registries_pages_with_next_link(azure_env: LocalAzure):
    for i in range(7):
        azure_env.arm.create(SUB, "rg1" if i < 5 else "rg2", f"acr{i}")
    azure_env.arm.create(SUB2, "rg1", "other")
    azure_env.arm.page_size = 3
    client = acr_client(azure_env)
    assert sorted(r.name for r in client.registries.list()) == [f"acr{i}" for i in range(7)]
    assert azure_env.arm.log.count(method="GET") == 3
    assert sorted(r.name for r in client.registries.list_by_resource_group("rg2")) == ["acr5", "acr6"]


def test_export_pipelines_and_private_endpoints_through_send_request(azure_env: LocalAzure):
    azure_env.arm.add(make_registry(SUB, "rg1", "acr1", pipelines=["toblob"],
                                    private_endpoints=[("pe1", "Approved"), ("pe2", "Pending")]))
    client = acr_client(azure_env)
    base = azure_env.arm.url + registry_path("rg1", "acr1")
    pipelines = client._client.send_request(HttpRequest("GET", f"{base}/exportPipelines?api-version=2025-06-01-preview"))
    assert pipelines.status_code == 200
    [pipeline] = pipelines.json()["value"]
    assert pipeline["name"] == "toblob" and pipeline["type"] == "Microsoft.ContainerRegistry/registries/exportPipelines"
    stable = client.send_request(HttpRequest("GET", f"{base}/exportPipelines?api-version=2025-11-01"))
    assert stable.status_code == 400 and stable.json()["error"]["code"] == "NoRegisteredProviderFound"
    connections = client.send_request(HttpRequest("GET", f"{base}/privateEndpointConnections?api-version=2025-11-01"))
    statuses = [c["properties"]["privateLinkServiceConnectionState"]["status"] for c in connections.json()["value"]]
    assert statuses == ["Approved", "Pending"]


# --- ARM: writes --------------------------------------------------------------------------------------


def test_begin_update_sync_answers_200_with_the_updated_registry(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    client = acr_client(azure_env)
    poller = client.registries.begin_update(
        "rg1", "acr1", RegistryUpdateParameters(public_network_access="Disabled",
                                                policies=Policies(export_policy=ExportPolicy(status="disabled"))),
        polling_interval=FAST)
    result = poller.result()
    assert result.public_network_access == "Disabled" and result.policies.export_policy.status == "disabled"
    assert result.provisioning_state == "Succeeded"
    assert azure_env.arm.log.count(method="PATCH", status=200) == 1 and azure_env.arm.log.count() == 1
    assert json.loads(azure_env.arm.log.last(method="PATCH").body) == {
        "properties": {"policies": {"exportPolicy": {"status": "disabled"}}, "publicNetworkAccess": "Disabled"}}
    stored = azure_env.arm.get(registry_path("rg1", "acr1"))
    assert stored["properties"]["policies"]["retentionPolicy"]["days"] == 7      # merged, not replaced


def test_begin_update_async_polls_the_operation_then_reads_the_registry(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    azure_env.arm.set_lro(mode="async", polls=2)
    result = acr_client(azure_env).registries.begin_update(
        "rg1", "acr1", {"properties": {"publicNetworkAccess": "Disabled"}}, polling_interval=FAST).result()
    assert result.public_network_access == "Disabled" and result.provisioning_state == "Succeeded"
    log = azure_env.arm.log
    assert log.count(method="PATCH", status=201) == 1
    assert log.count(service="arm-op") == 3                  # InProgress, InProgress, Succeeded
    assert "operationStatuses" in log.filter(service="arm-op")[0].path
    assert log.count(service="arm", method="GET") == 1        # the final GET of the PATCHed URL


def test_async_registry_reads_updating_until_the_operation_completes(azure_env: LocalAzure):
    reg = azure_env.arm.create(SUB, "rg1", "acr1")
    azure_env.arm.set_lro(reg["id"], mode="async", polls=5)
    client = acr_client(azure_env)
    client.registries.begin_update("rg1", "acr1", {"properties": {"publicNetworkAccess": "Disabled"}}, polling=False)
    assert client.registries.get("rg1", "acr1").provisioning_state == "Updating"
    assert azure_env.arm.complete_operations() == 1
    assert client.registries.get("rg1", "acr1").provisioning_state == "Succeeded"
    other = azure_env.arm.create(SUB, "rg1", "acr2")           # the override was for acr1 only
    client.registries.begin_update("rg1", "acr2", {"tags": {"a": "b"}}, polling_interval=FAST).result()
    assert azure_env.arm.get(other["id"])["tags"] == {"a": "b"}
    assert azure_env.arm.log.count(method="PATCH", path_contains="acr2", status=200) == 1


def test_location_header_of_an_async_patch_can_be_polled_too(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    azure_env.arm.set_lro(mode="async", polls=1)
    url = azure_env.arm.url + registry_path("rg1", "acr1")
    accepted = requests.patch(url, params={"api-version": "2025-11-01"}, headers=bearer(azure_env),
                              json={"properties": {"publicNetworkAccess": "Disabled"}})
    assert accepted.status_code == 201 and accepted.json()["properties"]["provisioningState"] == "Updating"
    assert "/operationStatuses/" in accepted.headers["Azure-AsyncOperation"]
    location = accepted.headers["Location"]
    assert requests.get(location, headers=bearer(azure_env)).status_code == 202
    done = requests.get(location, headers=bearer(azure_env))
    assert done.status_code == 200 and done.json()["properties"]["provisioningState"] == "Succeeded"
    assert azure_env.arm.log.count(service="arm-op") == 2


def test_retry_after_on_the_operation_overrides_the_polling_interval(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    azure_env.arm.set_lro(mode="async", polls=1, retry_after=1)
    started = time.monotonic()
    acr_client(azure_env).registries.begin_update("rg1", "acr1", {"tags": {}}, polling_interval=FAST).result()
    # azure-core polls once right after the 201 (no wait), then waits Retry-After, not polling_interval
    assert time.monotonic() - started >= 0.9
    assert azure_env.arm.log.count(service="arm-op") == 2


def test_failed_operation_raises_and_restores_the_registry(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    azure_env.arm.set_lro(mode="async", polls=0, outcome="Failed")
    with pytest.raises(HttpResponseError):
        acr_client(azure_env).registries.begin_update(
            "rg1", "acr1", {"properties": {"publicNetworkAccess": "Disabled"}}, polling_interval=FAST).result()
    stored = azure_env.arm.get(registry_path("rg1", "acr1"))
    assert stored["properties"]["publicNetworkAccess"] == "Enabled"
    assert stored["properties"]["provisioningState"] == "Failed"


@pytest.mark.parametrize(("seed", "patch", "code", "message"), [
    ({"sku": "Basic", "private_endpoints": []}, {"publicNetworkAccess": "Disabled"},
     "DisablingPublicNetworkAccessNotSupported", "Disabling public network access is not supported for the SKU Basic"),
    ({"public": "Disabled", "export": "disabled"}, {"publicNetworkAccess": "Enabled"},
     "BadRequest", "Enabling public network access is not supported because the registry 'acr1' has exports disabled"),
    ({}, {"policies": {"exportPolicy": {"status": "disabled"}}}, "BadRequest", "public network access enabled"),
    ({"public": "Disabled", "pipelines": ["p1"]}, {"policies": {"exportPolicy": {"status": "disabled"}}},
     "BadRequest", "export pipelines"),
])
def test_patch_validation_errors_look_like_acr(azure_env: LocalAzure, seed, patch, code, message):
    azure_env.arm.add(make_registry(SUB, "rg1", "acr1", **seed))
    with pytest.raises(HttpResponseError) as refused:
        acr_client(azure_env).registries.begin_update("rg1", "acr1", {"properties": patch}, polling_interval=FAST)
    assert refused.value.status_code == 400
    assert refused.value.error.code == code and message in refused.value.error.message
    assert azure_env.arm.log.count(method="PATCH") == 1       # 400 without Retry-After: not retried


def test_lock_down_order_is_accepted_in_one_request_and_values_are_canonicalised(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    acr_client(azure_env).registries.begin_update(
        "rg1", "acr1", {"Properties": {"PublicNetworkAccess": "disabled",
                                       "policies": {"exportPolicy": {"status": "Disabled"}}}},
        polling_interval=FAST).result()
    props = azure_env.arm.get(registry_path("rg1", "acr1"))["properties"]
    assert props["publicNetworkAccess"] == "Disabled" and props["policies"]["exportPolicy"]["status"] == "disabled"
    assert "PublicNetworkAccess" not in props


# --- faults, latency, outages ------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_by_azure_core_even_for_patch(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    fault = azure_env.arm.faults.add(method="PATCH", path=r"/registries/acr1$", status=429, headers={"Retry-After": "0"},
                                     body=arm_error("TooManyRequests", "slow down"))
    acr_client(azure_env).registries.begin_update("rg1", "acr1", {"tags": {"x": "y"}}, polling_interval=FAST).result()
    assert fault.hits == 1 and len(azure_env.arm.faults) == 0
    assert [r.status for r in azure_env.arm.log.filter(method="PATCH")] == [429, 200]


def test_faults_are_consumed_in_order_and_times_none_is_forever(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    azure_env.arm.faults.add(method="GET", status=403, body=arm_error("AuthorizationFailed", "no"), times=None)
    client = acr_client(azure_env)
    for _ in range(2):
        with pytest.raises(HttpResponseError) as denied:
            client.registries.get("rg1", "acr1")
        assert denied.value.error.code == "AuthorizationFailed"
    azure_env.arm.faults.clear()
    assert client.registries.get("rg1", "acr1").name == "acr1"


def test_hang_fault_times_out_the_client_and_close_fault_drops_the_connection(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    client = acr_client(azure_env)
    azure_env.arm.faults.add(method="GET", mode="hang")
    started = time.monotonic()
    with pytest.raises(ServiceResponseError):
        client.registries.get("rg1", "acr1", read_timeout=0.3, retry_total=0)
    assert time.monotonic() - started < 2
    azure_env.arm.faults.add(method="GET", mode="close")
    with pytest.raises(ServiceResponseError):
        client.registries.get("rg1", "acr1", retry_total=0)
    assert [r.status for r in azure_env.arm.log] == [0, 0]
    assert client.registries.get("rg1", "acr1").name == "acr1"


def test_stop_refuses_connections_without_waiting_for_hung_requests_and_start_reuses_the_port():
    with TeamsEmulator() as teams:
        teams.faults.add(mode="hang")
        outcome: list[object] = []
        worker = threading.Thread(target=lambda: outcome.append(_post_quietly(teams.webhook_url())))
        worker.start()
        time.sleep(0.2)
        started = time.monotonic()
        teams.stop()
        assert time.monotonic() - started < 1.5
        worker.join(5)
        assert outcome and isinstance(outcome[0], Exception)
        port = teams.port
        with pytest.raises(requests.ConnectionError):
            requests.post(teams.webhook_url(), json={}, verify=get_certs().ca_path, timeout=2)
        teams.start()
        assert teams.port == port


def _post_quietly(url: str) -> object:
    try:
        return requests.post(url, json={}, verify=get_certs().ca_path, timeout=10)
    except requests.RequestException as exc:
        return exc


def test_stopped_arm_gives_connection_refused_then_serves_again(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    client = acr_client(azure_env)
    assert client.registries.get("rg1", "acr1").name == "acr1"       # a pooled keep-alive connection now exists
    azure_env.arm.stop()
    with pytest.raises(ServiceRequestError):
        client.registries.get("rg1", "acr1", retry_total=0)
    azure_env.arm.start()
    assert client.registries.get("rg1", "acr1").name == "acr1"


def test_latency_and_keep_alive(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    client = acr_client(azure_env)
    client.registries.get("rg1", "acr1")
    started = time.monotonic()
    for _ in range(20):
        client.registries.get("rg1", "acr1")
    assert time.monotonic() - started < 0.6                  # no 40 ms Nagle stall per response
    azure_env.arm.latency = 0.2
    started = time.monotonic()
    client.registries.get("rg1", "acr1")
    assert time.monotonic() - started >= 0.2


# --- Resource Graph ------------------------------------------------------------------------------------


def test_resource_graph_pages_2500_registries_with_skip_token(azure_env: LocalAzure):
    for i in range(2500):
        azure_env.arm.create(SUB if i % 2 else SUB2, f"rg{i % 3}", f"acr{i:04d}")
    client = ResourceGraphClient(azure_env.credential(), base_url=azure_env.arm.url)
    query = "resources | where type =~ 'microsoft.containerregistry/registries' | project id, name, properties"
    rows, token = [], None
    while True:
        page = client.resources(QueryRequest(subscriptions=[SUB, SUB2], query=query,
                                             options=QueryRequestOptions(skip_token=token, result_format="objectArray")))
        assert page.total_records == 2500
        rows.extend(page.data)
        token = page.skip_token
        if not token:
            break
    assert len(rows) == 2500 and len({r["id"] for r in rows}) == 2500
    assert azure_env.arm.log.count(service="graph") == 3 and azure_env.arm.log.count(service="arm") == 0
    assert rows[0]["type"] == "microsoft.containerregistry/registries"
    assert {"resourceGroup", "subscriptionId", "location", "sku", "tags", "properties"} <= set(rows[0])
    filtered = client.resources(QueryRequest(
        subscriptions=[SUB], query=query + " | where resourceGroup =~ 'RG1'", options=QueryRequestOptions(top=10)))
    assert filtered.total_records == sum(1 for i in range(2500) if i % 2 and i % 3 == 1)
    assert filtered.count == 10 and filtered.skip_token
    assert {r["resourceGroup"] for r in filtered.data} == {"rg1"}


def test_resource_graph_table_format_and_throttling(azure_env: LocalAzure):
    azure_env.arm.create(SUB, "rg1", "acr1")
    client = ResourceGraphClient(azure_env.credential(), base_url=azure_env.arm.url)
    request = QueryRequest(subscriptions=[SUB], query="resources | where type =~ 'microsoft.containerregistry/registries'",
                           options=QueryRequestOptions(result_format="table"))
    table = client.resources(request).data
    assert table["rows"][0][[c["name"] for c in table["columns"]].index("name")] == "acr1"
    assert client.resources(QueryRequest(subscriptions=[SUB], query="resources | where type =~ 'microsoft.web/sites'")
                            ).total_records == 0
    azure_env.arm.graph.quota = 1
    client.resources(request)
    with pytest.raises(HttpResponseError) as throttled:
        client.resources(request, retry_total=0)
    assert throttled.value.status_code == 429 and throttled.value.response.headers["Retry-After"]


def test_resource_graph_sweeps_10000_registries_quickly(azure_env: LocalAzure):
    for i in range(10_000):
        azure_env.arm.create(SUB, f"rg{i % 20}", f"acr{i:05d}")
    client = ResourceGraphClient(azure_env.credential(), base_url=azure_env.arm.url)
    started, seen, token = time.monotonic(), 0, None
    while True:
        page = client.resources(QueryRequest(subscriptions=[SUB], query="resources | where type =~ "
                                             "'Microsoft.ContainerRegistry/registries'",
                                             options=QueryRequestOptions(skip_token=token)))
        seen += page.count
        token = page.skip_token
        if not token:
            break
    assert seen == 10_000 and azure_env.arm.log.count(service="graph") == 10
    assert time.monotonic() - started < 8


# --- Logs Ingestion --------------------------------------------------------------------------------------


def test_logs_ingestion_multi_chunk_upload_with_a_failed_second_chunk(azure_env: LocalAzure):
    client = LogsIngestionClient(azure_env.logs.url, azure_env.credential())
    logs = [{"TimeGenerated": "2026-01-01T00:00:00Z", "RegistryId": f"r{i}", "Pad": "x" * 1000} for i in range(2500)]
    azure_env.logs.faults.add(method="POST", status=400, body=arm_error("InvalidContent", "bad chunk"), skip=1)
    failed: list = []
    client.upload(rule_id=azure_env.rule_id, stream_name=azure_env.stream, logs=logs, on_error=failed.append)
    posts = azure_env.logs.log.filter(method="POST")
    assert [p.status for p in posts] == [204, 400, 204]
    assert all(p.headers["content-encoding"] == "gzip" and p.query["api-version"] == "2023-01-01" for p in posts)
    assert len(failed) == 1
    second_chunk = json.loads(gzip.decompress(posts[1].body))
    assert failed[0].failed_logs == second_chunk and failed[0].error.status_code == 400
    stored = azure_env.logs.rows(azure_env.rule_id, azure_env.stream)
    assert len(stored) + len(second_chunk) == 2500
    assert [r["RegistryId"] for r in stored] == [r["RegistryId"] for r in logs if r not in second_chunk]


def test_logs_ingestion_rejects_unknown_rules(azure_env: LocalAzure):
    client = LogsIngestionClient(azure_env.logs.url, azure_env.credential())
    with pytest.raises(HttpResponseError) as unknown:
        client.upload(rule_id="dcr-" + "0" * 32, stream_name=azure_env.stream, logs=[{"a": 1}])
    assert unknown.value.status_code == 404


# --- Teams Workflows --------------------------------------------------------------------------------------


CARD = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "drift"}],
                    "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": "https://example.com"}]}}]}


def test_teams_webhook_accepts_with_202_and_throttles_with_retry_after(azure_env: LocalAzure):
    url = azure_env.env()["DLP_TEAMS_WEBHOOK_URL"]
    reply = requests.post(url, json=CARD, timeout=5)
    assert reply.status_code == 202 and reply.content == b""
    assert azure_env.teams.messages == [CARD] and card_problems(CARD) == []
    azure_env.teams.faults.add(method="POST", status=429, headers={"Retry-After": "7"})
    throttled = requests.post(url, json=CARD, timeout=5)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert len(azure_env.teams.messages) == 1
    assert requests.post(url.replace("sig=", "sig=x"), json=CARD, timeout=5).status_code == 401
    too_new = json.loads(json.dumps(CARD))
    too_new["attachments"][0]["content"]["version"] = "1.6"
    assert card_problems(too_new) == ["attachments[0] card version '1.6' is not <= 1.5"]


# --- ACS Email ------------------------------------------------------------------------------------------------


MAIL = {"senderAddress": "DoNotReply@dlp-emulator.azurecomm.net", "recipients": {"to": [{"address": "a@example.com"}]},
        "content": {"subject": "drift", "plainText": "acr1 drifted"}}


def test_email_begin_send_polls_until_succeeded_and_deduplicates_by_operation_id(azure_env: LocalAzure):
    client = EmailClient(azure_env.email.url, azure_env.credential())
    azure_env.email.polls = 2
    result = client.begin_send(MAIL, polling_interval=FAST, operation_id="op-1").result()
    assert result["status"] == "Succeeded" and result["id"] == "op-1"
    log = azure_env.email.log
    assert log.count(service="email", method="POST") == 1 and log.count(service="email-op") == 3
    send = log.last(method="POST")
    assert send.query["api-version"] == "2025-09-01" and send.headers["operation-id"] == "op-1"
    client.begin_send(MAIL, polling_interval=FAST, operation_id="op-1").result()     # a retried send
    assert len(azure_env.email.sent) == 1 and azure_env.email.sent[0]["operationId"] == "op-1"
    client.begin_send(MAIL, polling_interval=FAST).result()                          # no id: a new one
    assert len(azure_env.email.sent) == 2


def test_email_token_scope_and_validation(azure_env: LocalAzure):
    credential = ManagedIdentityCredential()
    client = EmailClient(azure_env.email.url, credential)
    client.begin_send(MAIL, polling_interval=FAST).result()
    assert azure_env.identity.log.last().query["resource"] == "https://communication.azure.com/"
    with pytest.raises(HttpResponseError) as invalid:
        client.begin_send({**MAIL, "recipients": {"to": []}}, polling_interval=FAST)
    assert invalid.value.status_code == 400
    azure_env.email.faults.add(method="POST", status=429, headers={"Retry-After": "0"})
    client.begin_send(MAIL, polling_interval=FAST, operation_id="op-2").result()
    assert [r.status for r in azure_env.email.log.filter(method="POST")][-2:] == [429, 202]


# --- LocalAzure -------------------------------------------------------------------------------------------------


def test_environ_applies_and_restores(local_azure: LocalAzure):
    environ = {"AZURE_CLIENT_SECRET": "s", "DLP_MODE": "enforce"}
    with local_azure.environ(environ=environ) as applied:
        assert "AZURE_CLIENT_SECRET" not in environ and environ["IDENTITY_ENDPOINT"] == applied["IDENTITY_ENDPOINT"]
    assert environ == {"AZURE_CLIENT_SECRET": "s", "DLP_MODE": "enforce"}


def test_env_matches_the_settings_the_app_reads(azure_env: LocalAzure):
    from dlp import settings

    loaded = settings.load(azure_env.env())
    assert loaded.arm_endpoint == azure_env.arm.url and loaded.logs_enabled and loaded.teams_enabled
    assert loaded.email_enabled and loaded.logs_rule_id.startswith("dcr-")


# --- Azurite fixture (real Azurite from npm) ------------------------------------------------------------------


def test_azurite_fixture_serves_tables_and_queues(azurite: str):
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    table = TableServiceClient.from_connection_string(azurite).create_table_if_not_exists("emulatorcheck")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": 1})
    assert table.get_entity("p", "r")["value"] == 1
    queue = QueueClient.from_connection_string(azurite, "emulator-check")
    queue.create_queue()
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]
