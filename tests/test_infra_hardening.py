"""infra/ for a first `azd up` in a governed tenant, a second environment beside the first, and hardening (issue 26).

Static checks of the Bicep files and the docs, with the reader of tests/test_infra.py; what the hooks do is run in
tests/test_infra_hooks.py. Each test names the failure a real tenant would see without it.
"""

from __future__ import annotations

import json
import re

from tests.test_infra import (
    APP,
    BICEP_FILES,
    INFRA,
    MAIN,
    RESOURCES,
    ROOT,
    block,
    mask,
    param_decorators,
    read,
    strings_in,
)

BOOTSTRAP = INFRA / "bootstrap.bicep"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def var_line(text: str, name: str) -> str:
    match = re.search(rf"^var {name} = (.*)$", text, re.MULTILINE)
    assert match, f"var {name} not found"
    return match.group(1)


def resources_of(type_name: str) -> list[tuple[str, str, dict]]:
    return [(file, symbol, body) for file, symbol, t, _v, existing, body in RESOURCES if t == type_name and not existing]


# ---------------------------------------------------------------------------------------------------------------
# Role definitions: created a stage earlier, named for the environment and its subscription
# ---------------------------------------------------------------------------------------------------------------
def test_role_definitions_are_created_only_by_the_bootstrap_stage():
    """Assigned in the deployment that creates them, they fail first runs with RoleDefinitionDoesNotExist."""
    defined = {(file, symbol) for file, symbol, _body in resources_of("Microsoft.Authorization/roleDefinitions")}
    assert defined == {("bootstrap.bicep", "responderRole"), ("bootstrap.bicep", "hostStorageListerRole"),
                       ("bootstrap.bicep", "emailSenderRole"), ("bootstrap.bicep", "registryLogsReaderRole")}
    yaml = read(ROOT / "azure.yaml")
    assert re.search(r"^  preprovision:$", yaml, re.MULTILINE)   # runs before azd provisions main.bicep


def test_role_names_carry_the_resource_token_not_the_resource_group():
    """Role names are unique in the tenant: `(<rg>)` collided across subscriptions (RoleDefinitionWithSameNameExists)."""
    bootstrap = read(BOOTSTRAP)
    assert var_line(bootstrap, "roleNameSuffix") == "'(${environmentName}-${resourceToken})'"
    assert var_line(bootstrap, "resourceToken") == "toLower(uniqueString(subscription().id, environmentName, location))"
    for _file, symbol, body in resources_of("Microsoft.Authorization/roleDefinitions"):
        role_name = body["properties"]["roleName"].text
        assert role_name.startswith("'ACR DLP ") and role_name.endswith(" ${roleNameSuffix}'"), symbol
    assert "resourceGroup()" not in mask(bootstrap, strings=False)


def test_main_and_bootstrap_compute_the_same_names():
    """main.bicep assigns what bootstrap.bicep defines and deploys into the groups it made: one expression each."""
    main, bootstrap = read(MAIN), read(BOOTSTRAP)
    for name in ("resourceToken", "ownSubscriptionId", "eventsResourceGroupName", "requestedSubscriptions",
                 "monitoredSubscriptions", "responderRoleGuid", "hostStorageListerRoleGuid", "emailSenderRoleGuid",
                 "registryLogsReaderRoleGuid"):
        assert var_line(main, name) == var_line(bootstrap, name), name
    assert block(main, r"^var tags = ") == block(bootstrap, r"^var tags = ")
    assert "abbreviations.json" in var_line(bootstrap, "abbrs")
    # the hooks take the first GUID of either list for the responder role
    assert ("output customRoleGuids string = join(concat([responderRole.name, hostStorageListerRole.name, "
            "emailSenderRole.name], registryLogsEnabled ? [registryLogsReaderRoleGuid] : []), ',')") in bootstrap
    assert "roleDefinitionGuid: registryLogsReaderRoleGuid" in block(main, r"^module registryLogsAccess ")
    assert ("output RESPONDER_CUSTOM_ROLE_GUIDS string = join([responderRoleGuid, hostStorageListerRoleGuid, "
            "emailSenderRoleGuid], ',')") in main
    for symbol, guid in (("responderRole", "responderRoleGuid"), ("hostStorageListerRole", "hostStorageListerRoleGuid"),
                         ("emailSenderRole", "emailSenderRoleGuid")):
        assert re.search(rf"^\s+name: {guid}$", block(bootstrap, rf"^resource {symbol} "), re.MULTILINE), symbol


def test_main_assigns_the_bootstrap_roles_by_their_guids():
    main = read(MAIN)
    assert "hostStorageListerRoleGuid: hostStorageListerRoleGuid" in block(main, r"^module rbac ")
    assert "senderRoleGuid: !empty(emailSenderRoleId) ? emailSenderRoleId : emailSenderRoleGuid" in block(main, r"^module email ")
    access = block(main, r"^module subscriptionAccess ")
    assert "responderRoleId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', responderRoleGuid)" in access
    email = read(APP / "email.bicep")
    assert "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', senderRoleGuid)" in email


def test_responder_role_is_assignable_in_every_monitored_subscription():
    role = block(read(BOOTSTRAP), r"^resource responderRole ")
    assert "assignableScopes: map(union([ownSubscriptionId], monitoredSubscriptions), s => '/subscriptions/${s}')" in role


def test_guardrail_alerts_watch_the_role_under_both_of_its_ids():
    """In a monitored subscription the assignment names the role under that subscription's ID, not the definer's."""
    module = block(read(APP / "subscription-access.bicep"), r"^module guardrailAlerts ")
    assert ("responderRoleIds: union([responderRoleId], [subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
            "responderRoleGuid)])") in module
    alerts = read(APP / "guardrail-alerts.bicep")
    assert "resourceIds: concat([roleAssignmentId], responderRoleIds)" in block(alerts, r"^var guardrails = ")


# ---------------------------------------------------------------------------------------------------------------
# azd down: groups in other subscriptions are not main.bicep's
# ---------------------------------------------------------------------------------------------------------------
def test_no_resource_group_in_another_subscription_is_created_by_main_bicep():
    """azd down deletes main.bicep's groups by name in AZURE_SUBSCRIPTION_ID: a group it made elsewhere would be
    looked up in the wrong subscription. bootstrap.bicep makes them; postdown deletes them."""
    groups = resources_of("Microsoft.Resources/resourceGroups")
    assert {(file, symbol) for file, symbol, _ in groups} == {("main.bicep", "rg"), ("app/events-group.bicep", "group")}
    users = [p for p in BICEP_FILES if "'app/events-group.bicep'" in read(p)]
    assert users == [BOOTSTRAP]
    module = block(read(BOOTSTRAP), r"^module eventsGroups ")
    assert "for s in otherSubscriptions:" in module and "scope: subscription(s)" in module
    assert var_line(read(BOOTSTRAP), "otherSubscriptions") == "filter(monitoredSubscriptions, s => s != ownSubscriptionId)"
    assert "tags: tags" in module


# ---------------------------------------------------------------------------------------------------------------
# Log alerts and the DCR against a table created seconds earlier; the heartbeat on day one
# ---------------------------------------------------------------------------------------------------------------
def test_log_alerts_skip_query_validation_and_wait_for_the_table():
    rules = resources_of("Microsoft.Insights/scheduledQueryRules")
    assert len(rules) >= 2
    for file, symbol, body in rules:
        assert body["properties"]["skipQueryValidation"].text == "true", f"{file}:{symbol}"
    monitoring = read(APP / "monitoring.bicep")
    for symbol in ("dcr", "heartbeatAlert"):
        assert re.search(r"dependsOn: \[\s+findingsTable\s+\]", block(monitoring, rf"^resource {symbol} ")), symbol


def test_heartbeat_is_armed_one_heartbeat_after_the_deployment():
    """The first sweep runs at the next schedule boundary: a stand-in row keeps the alert quiet until then."""
    monitoring = read(APP / "monitoring.bicep")
    assert "param deployedAt string = utcNow('u')" in monitoring
    assert var_line(monitoring, "heartbeatArmedAt") == "dateTimeAdd(deployedAt, 'PT${heartbeatHours}H', 'yyyy-MM-ddTHH:mm:ssZ')"
    query = var_line(monitoring, "heartbeatQuery")
    assert query == ("'union (${findingsTableName} | where Trigger == \"sweep\" | project TimeGenerated), "
                     "(print TimeGenerated = now() | where TimeGenerated < datetime(${heartbeatArmedAt}))'")
    alert = block(monitoring, r"^resource heartbeatAlert ")
    assert "query: heartbeatQuery" in alert and "operator: 'LessThan'" in alert and "threshold: 1" in alert
    assert "overrideQueryTimeRange: 'PT${heartbeatHours}H'" in alert
    assert "heartbeatHours: 2 * sweepIntervalHours" in block(read(MAIN), r"^module monitoring ")


# ---------------------------------------------------------------------------------------------------------------
# A second environment beside the first
# ---------------------------------------------------------------------------------------------------------------
def test_event_subscription_and_topic_diagnostic_setting_are_named_per_environment():
    main = read(MAIN)
    assert var_line(main, "eventSubscriptionName") == "'acr-dlp-${resourceToken}'"
    assert var_line(main, "topicDiagnosticSettingName") == "'acr-dlp-${resourceToken}'"
    assert "output EVENTGRID_DIAGNOSTIC_SETTING_NAME string = topicDiagnosticSettingName" in main
    # the fixed name of old is gone from the event subscription and from the hooks that delete it
    for path in [*BICEP_FILES, *(INFRA / "hooks").iterdir()]:
        text = re.sub(r"guid\([^\n]*?'\)", "", read(path).replace("workload: 'acr-dlp-responder'", ""))
        text = text.replace("'acr-dlp-responder-do-not-delete'", "")
        assert "acr-dlp-responder" not in text, path.name
    subscription = read(APP / "event-subscription.bicep")
    assert "name: eventSubscriptionName" in block(subscription, r"^resource eventSubscription ")


def test_delivery_alerts_count_only_our_event_subscription_and_live_in_our_groups():
    """A shared topic's metrics count every subscriber; its owner's group is not ours to fill."""
    assert "Microsoft.Insights/metricAlerts" not in read(APP / "event-subscription.bicep")
    alerts = read(APP / "topic-delivery-alerts.bicep")
    dimensions = block(alerts, r"dimensions: ")
    assert "name: 'EventSubscriptionName'" in dimensions and "operator: 'Include'" in dimensions
    assert "values: union([eventSubscriptionName], [toUpper(eventSubscriptionName)])" in dimensions
    assert set(strings_in(block(alerts, r"^var deliveryAlerts = "))) >= {"DeadLetteredCount", "DroppedEventCount"}
    stage_two = read(INFRA / "eventgrid.bicep")
    module = block(stage_two, r"^module deliveryAlerts ")
    assert ("scope: resourceGroup(topic.subscriptionId, toLower(topic.subscriptionId) == ownSubscriptionId ? "
            "appResourceGroupName : eventsResourceGroupName)") in module
    assert "topic.resourceGroupName" not in module


def test_topic_delivery_failures_go_to_the_workspace():
    subscription = read(APP / "event-subscription.bicep")
    setting = block(subscription, r"^resource deliveryFailures ")
    assert "scope: topic" in setting and "category: 'DeliveryFailures'" in setting and "workspaceId: workspaceId" in setting
    assert "name: diagnosticSettingName" in setting


# ---------------------------------------------------------------------------------------------------------------
# Governed tenants: NSGs, the hub's private DNS zones
# ---------------------------------------------------------------------------------------------------------------
def test_every_subnet_has_a_network_security_group():
    network = read(APP / "network.bicep")
    subnets = block(block(network, r"^resource vnet "), r"subnets: ")
    assert subnets.count("networkSecurityGroup: {") == subnets.count("addressPrefix:") == 2
    assert "id: subnetSecurityGroups[0].id" in subnets and "id: subnetSecurityGroups[1].id" in subnets
    assert "[for subnet in ['app', 'private-endpoints']:" in network


def test_existing_private_dns_zones_replace_new_ones():
    main, network = read(MAIN), read(APP / "network.bicep")
    assert var_line(main, "existingDnsZoneIds") == "filter(map(split(privateDnsZoneIds, ','), id => trim(id)), id => !empty(id))"
    assert "existingDnsZoneIds: existingDnsZoneIds" in block(main, r"^module network ")
    assert var_line(network, "createZones") == "empty(existingDnsZoneIds)"
    assert "[for zone in zoneList: if (createZones)" in network and "[for (zone, i) in zoneList: if (createZones)" in network
    output = re.search(r"^output dnsZoneIds object = (.*)$", network, re.MULTILINE).group(1)
    assert "existingZoneIdByName[zone.value]" in output
    assert "string(int('PRIVATE_DNS_ZONE_IDS (privateDnsZoneIds) names no ${zone.value} zone'))" in output
    assert var_line(network, "existingZoneIdByName") == "toObject(existingDnsZoneIds, id => toLower(last(split(id, '/'))))"
    # the VNet can resolve through the hub's resolver
    assert "dnsServers: dnsServers" in block(network, r"dhcpOptions: ")
    assert "dnsServers: dnsServers" in block(main, r"^module network ")


def test_key_vault_zone_follows_the_cloud():
    network = read(APP / "network.bicep")
    assert var_line(network, "keyVaultZoneName") == (
        "'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'")
    # what that gives in the public cloud
    assert "privatelink" + ".vault.azure.net".replace(".vault.", ".vaultcore.") == "privatelink.vaultcore.azure.net"


# ---------------------------------------------------------------------------------------------------------------
# Hardening
# ---------------------------------------------------------------------------------------------------------------
def test_communication_services_refuses_access_keys():
    [(_file, _symbol, body)] = resources_of("Microsoft.Communication/communicationServices")
    assert body["properties"]["disableLocalAuth"].text == "true"
    versions = {v for _f, _s, t, v, _e, _b in RESOURCES if t.startswith("Microsoft.Communication/")}
    assert versions == {"2025-05-01"}   # the first GA api-version with disableLocalAuth


def test_workspace_requires_workspace_permissions():
    [(_file, _symbol, body)] = resources_of("Microsoft.OperationalInsights/workspaces")
    assert body["properties"]["features"]["enableLogAccessUsingOnlyResourcePermissions"].text == "false"
    security = read(ROOT / "docs" / "security.md")
    assert "Require workspace permissions" in security and "resource-context access" not in security


def test_diagnostic_settings_send_what_matters_to_the_workspace():
    settings = {(file, body["properties"].get("logs").__repr__()) for file, _s, body in
                resources_of("Microsoft.Insights/diagnosticSettings")}
    files = {file for file, _ in settings}
    assert files == {"app/keyvault.bicep", "app/dead-letter-storage.bicep", "app/event-subscription.bicep", "app/api.bicep"}
    for file, _symbol, body in resources_of("Microsoft.Insights/diagnosticSettings"):
        assert body["properties"]["workspaceId"].text == "workspaceId", file
    assert "category: 'AuditEvent'" in block(read(APP / "keyvault.bicep"), r"^resource auditLog ")
    dead_letters = block(read(APP / "dead-letter-storage.bicep"), r"^resource blobLog ")
    assert "scope: blobService" in dead_letters and "['StorageRead', 'StorageWrite', 'StorageDelete']" in dead_letters
    assert "categoryGroup: 'allLogs'" in block(read(APP / "api.bicep"), r"^resource platformLogs ")
    main = read(MAIN)
    for module in ("keyVault", "deadLetterStorage", "api"):
        assert "workspaceId: monitoring.outputs.workspaceId" in block(main, rf"^module {module} "), module


def test_easy_auth_admits_only_the_allowed_applications_and_principals():
    api = read(APP / "api.bicep")
    policy = block(block(api, r"^resource authSettings "), r"defaultAuthorizationPolicy: ")
    assert "allowedApplications: authAllowedApplications" in policy
    assert "identities: authAllowedPrincipals" in block(policy, r"allowedPrincipals: ")
    main = read(MAIN)
    api_module = block(main, r"^module api ")
    assert "authAllowedApplications: authApplications" in api_module
    principals = re.search(r"^\s+authAllowedPrincipals: (.*)$", api_module, re.MULTILINE).group(1)
    # Easy Auth with neither list would admit the whole tenant; more than 500 characters of IDs App Service refuses
    assert principals.startswith("!authEnabled || (authRestricted && authPrincipalsFit) ? authPrincipals : array(int(")
    assert "neither AUTH_ALLOWED_PRINCIPALS nor AUTH_ALLOWED_APPLICATIONS" in principals and "500 characters" in principals
    assert var_line(main, "authRestricted") == "!empty(authApplications) || !empty(authPrincipals)"
    assert var_line(main, "authPrincipalsFit") == "length(join(authPrincipals, '')) <= 500"
    for output in ("AZURE_FUNCTION_APP_AUTH_CLIENT_ID", "AZURE_FUNCTION_APP_AUTH_APPLICATIONS",
                   "AZURE_FUNCTION_APP_AUTH_PRINCIPALS"):
        assert re.search(rf"^output {output} string = ", main, re.MULTILINE), output


def test_host_storage_access_falls_back_only_when_asked():
    main = read(MAIN)
    assert param_decorators(main, "hostStorageAccess")["allowed"] == ["least-privilege", "blob-data-owner"]
    assert re.search(r"^param hostStorageAccess string = 'least-privilege'$", main, re.MULTILINE)
    parameters = json.loads(read(INFRA / "main.parameters.json"))["parameters"]
    assert parameters["hostStorageAccess"]["value"] == "${HOST_STORAGE_ACCESS=least-privilege}"
    assert "output RESPONDER_HOST_STORAGE_ACCESS string = hostStorageAccess" in main


# ---------------------------------------------------------------------------------------------------------------
# azd, the docs
# ---------------------------------------------------------------------------------------------------------------
def test_azure_yaml_requires_an_azd_that_resolves_key_vault_references():
    """`azd env set-secret` stores akvs://...; azd resolves it for @secure() parameters from 1.13.0 on."""
    yaml = read(ROOT / "azure.yaml")
    assert re.search(r'^requiredVersions:\n  azd: ">= 1\.13\.0"$', yaml, re.MULTILINE)
    assert re.search(r"^@secure\(\)\n@description\([^\n]*\)\nparam teamsWebhookUrl string", read(MAIN), re.MULTILINE)
    assert "azd env set-secret DLP_TEAMS_WEBHOOK_URL" in read(DEPLOY_DOC)


def test_docs_list_every_azd_variable_the_parameters_file_reads():
    deploy = read(DEPLOY_DOC)
    table = deploy[deploy.index("## Parameters"):]
    table = table[:table.index("\n## ", 5)]
    for name in re.findall(r"\$\{(\w+?)(?:=[^}]*)?\}", read(INFRA / "main.parameters.json")):
        if name in ("AZURE_ENV_NAME", "AZURE_LOCATION", "DISCOVERED_SYSTEM_TOPIC_IDS"):
            continue   # asked by azd / set by the preprovision hook
        assert f"`{name}`" in table, f"docs/deploy.md Parameters lacks {name}"


def test_docs_state_the_python_version_infra_deploys():
    version = re.search(r"runtime: \{\s*name: 'python'\s*version: '(3\.\d+)'", read(APP / "api.bicep")).group(1)
    deploy = read(DEPLOY_DOC)
    mentioned = set(re.findall(r"Python (3\.\d+)", deploy))
    assert mentioned == {version}, mentioned


def test_docs_quote_the_current_key_vault_text_for_flex_consumption():
    deploy = " ".join(read(DEPLOY_DOC).split())
    assert "When running in a Flex Consumption plan, this routing is done automatically" in deploy
    assert "can't currently" not in deploy   # the preview-era limitation no longer stands on Microsoft's pages


def test_docs_explain_each_first_run_and_teardown_step():
    deploy = read(DEPLOY_DOC)
    for phrase in ("Microsoft.App", "RoleDefinitionDoesNotExist", "RoleDefinitionWithSameNameExists", "InvalidOutputTable",
                   "skipQueryValidation", "HOST_STORAGE_ACCESS", "ACR_DLP_FORCE_DOWN", "PRIVATE_DNS_ZONE_IDS",
                   "AUTH_ALLOWED_PRINCIPALS", "azd env set-secret", "predown", "bootstrap.bicep"):
        assert phrase in deploy, phrase
