// ACR DLP drift responder: `azd up` deploys everything except the Event Grid event subscriptions, which
// infra/hooks/postdeploy.* creates with infra/eventgrid.bicep once the function code (the endpoint) exists.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------------------------
// azd
// ---------------------------------------------------------------------------------------------------------------
@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags of every resource derive from it.')
param environmentName string

@minLength(1)
@description('Region of the responder: one that offers Flex Consumption (the list of Azure-Samples/functions-quickstart-python-http-azd; `az functionapp list-flexconsumption-locations` prints the current one).')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group of the responder. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

// ---------------------------------------------------------------------------------------------------------------
// What the responder watches and may change
// ---------------------------------------------------------------------------------------------------------------
@description('Comma-separated IDs of the subscriptions to monitor. Each gets the responder role, a system topic and (optionally) the policy. Empty: the deployment subscription.')
param monitoredSubscriptionIds string = ''

@description('Comma-separated resource IDs of existing Microsoft.Resources.Subscriptions system topics to reuse (only one per subscription may exist). Overrides what the preprovision hook discovered. Monitored subscriptions without one get a new topic.')
param existingSystemTopicIds string = ''

@description('Set by infra/hooks/preprovision.*: the existing subscription system topic of each monitored subscription, found with Resource Graph. Reused, never created twice.')
param discoveredSystemTopicIds string = ''

@description('DLP_MODE: audit reports what would be done; enforce reverts exportPolicy / publicNetworkAccess.')
@allowed([
  'audit'
  'enforce'
])
param dlpMode string = 'audit'

@description('DLP_SCOPES: comma-separated subscription or resource-group IDs the responder acts on. Empty: every monitored subscription.')
param dlpScopes string = ''

@description('DLP_EXEMPTIONS: comma-separated registry or resource-group IDs never remediated, each optionally @YYYY-MM-DD.')
param dlpExemptions string = ''

@description('DLP_EXEMPT_TAG: name of a registry tag that exempts it. Empty: tags never exempt (anyone who can drift a registry can tag it).')
@maxLength(512)
param dlpExemptTag string = ''

@description('DLP_ALLOW_LOCKOUT: allow disabling public network access on a registry with no approved private endpoint.')
param dlpAllowLockout bool = false

@description('DLP_MAX_REMEDIATIONS: revert-war breaker, remediations of one registry per hour before the responder stops writing to it.')
@minValue(1)
@maxValue(100)
param dlpMaxRemediations int = 3

@description('DLP_TIME_BUDGET_S: seconds an invocation may spend on Azure calls (Event Grid waits 30 s; the app refuses more than 22).')
@minValue(2)
@maxValue(22)
param dlpTimeBudgetSeconds int = 20

@description('DLP_ALERT_GROUP_WINDOW_S: seconds that group a burst of alerts by one caller into one digest per channel after its first alert (0: every alert at once).')
@minValue(0)
@maxValue(3600)
param dlpAlertGroupWindowSeconds int = 60

@description('DLP_ALERT_CAP_PER_REGISTRY: alerts of one registry per cap window before repeats are folded into a digest.')
@minValue(1)
@maxValue(1000)
param dlpAlertCapPerRegistry int = 3

@description('DLP_ALERT_CAP_PER_CALLER: alerts of one caller per cap window before repeats are folded into a digest.')
@minValue(1)
@maxValue(10000)
param dlpAlertCapPerCaller int = 20

@description('DLP_ALERT_CAP_WINDOW_MIN: minutes over which the alert caps count.')
@minValue(5)
@maxValue(1440)
param dlpAlertCapWindowMinutes int = 60

@description('Hours between scheduled sweeps (DLP_SWEEP_SCHEDULE). The heartbeat alert fires after twice this without a sweep.')
@allowed([
  1
  2
  3
  4
  6
  8
  12
  24
])
param sweepIntervalHours int = 6

@description('DLP_SWEEP_SCHEDULE override (6-field NCRONTAB: second minute hour day month day-of-week). Empty: every sweepIntervalHours hours. Keep sweepIntervalHours equal to its period, the heartbeat uses it. A value without 6 fields of 0-9 * , - / and names fails the deployment.')
@maxLength(120)
param dlpSweepSchedule string = ''

@description('DLP_RULE_DOCS_URL: base URL of docs/rules/ in your fork, used in alert links. Empty: Microsoft Learn pages.')
param dlpRuleDocsUrl string = ''

// ---------------------------------------------------------------------------------------------------------------
// Alerts (optional)
// ---------------------------------------------------------------------------------------------------------------
@secure()
@description('Teams Workflows webhook URL. Stored in a new Key Vault; DLP_TEAMS_WEBHOOK_URL becomes a Key Vault reference. Empty: no Teams alerts, no Key Vault.')
param teamsWebhookUrl string = ''

@description('DLP_EMAIL_TO: comma-separated recipients of drift alerts. Set: Azure Communication Services email with an Azure-managed domain is deployed. Empty: no email.')
param dlpEmailTo string = ''

@description('Data location of the Communication Services resources (when email is on).')
param emailDataLocation string = 'United States'

@description('Role to grant for sending email instead of the custom least-privilege role, e.g. 09976791-48a7-449e-bb21-39d1a415f350 (Communication and Email Service Owner). Empty: the custom role.')
param emailSenderRoleId string = ''

@description('Comma-separated addresses notified when the responder itself fails: function failures, dead-lettered or dropped events, missing sweeps.')
param operatorEmails string = ''

@description('Entra ID application (client) ID that App Service authentication (Easy Auth) validates tokens for: every request to the app then needs a token of that app, except the Event Grid webhook and /api/health. Empty: no Easy Auth (function keys only).')
param authClientId string = ''

@description('Tenant that issues those tokens. Empty: the deployment tenant.')
param authTenantId string = ''

@description('With authClientId: comma-separated client (application) IDs whose tokens are accepted (the token\'s appid/azp claim), e.g. 04b07795-8ddb-461a-bbee-02f9e1bf7b46 for the Azure CLI. Empty: any application. At least this or authAllowedPrincipals must be set, or the deployment fails: otherwise any principal of the tenant could call the app.')
param authAllowedApplications string = ''

@description('With authClientId: comma-separated object IDs (the token\'s oid claim) of the users or service principals allowed to call the app; App Service matches principals, not group membership. At most 500 characters in all (an App Service limit). Empty: any principal.')
param authAllowedPrincipals string = ''

// ---------------------------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------------------------
@description('Private layout: the Function App integrated into a new VNet (both subnets with a network security group), its storage and Key Vault reachable only through private endpoints with public network access disabled, private DNS zones created or reused (privateDnsZoneIds). false: public endpoints restricted by Entra ID only.')
param vnetEnabled bool = true

@description('Address space of that VNet (a /23 or larger: two /24 subnets are carved from it).')
param vnetAddressPrefix string = '10.42.0.0/23'

@description('Comma-separated resource IDs of existing private DNS zones (a landing zone\'s hub) for privatelink.blob, privatelink.queue, privatelink.table and, with Teams alerts, privatelink.vaultcore: the private endpoints register in them and no zone is created. Empty: the zones are created in the responder\'s group and linked to its VNet.')
param privateDnsZoneIds string = ''

@description('Comma-separated DNS server IP addresses of the VNet (e.g. the hub\'s DNS resolver, needed with privateDnsZoneIds when the hub zones are not linked to this VNet). Empty: Azure-provided DNS.')
param vnetDnsServers string = ''

@description('How the Functions host reaches its storage: least-privilege (Storage Blob Data Contributor on the three named containers plus a custom role that lists containers; docs/deploy.md says why it suffices) or blob-data-owner (Storage Blob Data Owner on the account, what Microsoft documents for identity-based AzureWebJobsStorage), the fallback if the host does not start.')
@allowed([
  'least-privilege'
  'blob-data-owner'
])
param hostStorageAccess string = 'least-privilege'

// ---------------------------------------------------------------------------------------------------------------
// Guard rails (optional)
// ---------------------------------------------------------------------------------------------------------------
@description('Assign the built-in policy "Container registries should have exports disabled" on every monitored subscription.')
param assignExportPolicy bool = false

@description('Effect of that policy: Deny refuses drift up front (and every registry with public network access, Basic and Standard included).')
@allowed([
  'Audit'
  'Deny'
])
param exportPolicyEffect string = 'Deny'

@description('Resource ID of the Log Analytics workspace that receives the registries\' resource logs (ContainerRegistryRepositoryEvents, ContainerRegistryLoginEvents). Set: exposure windows record what was pulled while a registry was open (DLP_REGISTRY_LOGS_WORKSPACE), and the app may query those two tables of it. Empty: pulls are recorded as unknown.')
param registryLogsWorkspaceId string = ''

@description('With registryLogsWorkspaceId: assign the built-in policy that deploys diagnostic settings sending every container registry\'s logs to that workspace, on every monitored subscription.')
param assignRegistryLogsPolicy bool = false

@description('Put a CanNotDelete lock on the responder resource group (remove it before azd down).')
param enableDeleteLock bool = false

// ---------------------------------------------------------------------------------------------------------------
// Sizing
// ---------------------------------------------------------------------------------------------------------------
@description('Days the workspace keeps findings and telemetry.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 90

@description('Flex Consumption scale-out limit; each instance re-reads registries through ARM, which throttles per principal.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---------------------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------------------
// Every variable below that feeds a loop, a condition or a resource name is computed from parameters and
// deployment functions only (Bicep BCP178/BCP182): none reads a module output or a resource property.
var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'acr-dlp-responder'
}
var serviceName = 'responder'
var resourceGroupNameResolved = !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
var functionAppName = '${abbrs.webSitesFunctions}dlp-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletters'
var alertNamePrefix = 'acr-dlp-${resourceToken}-'
var ownSubscriptionId = toLower(subscription().subscriptionId)
// Created by infra/bootstrap.bicep in every monitored subscription but this one (same expression there).
var eventsResourceGroupName = '${abbrs.resourcesResourceGroups}${environmentName}-dlp-events'
var systemTopicName = '${abbrs.eventGridSystemTopics}dlp-${resourceToken}'
var policyAssignmentName = 'acr-dlp-exports-disabled-${take(resourceToken, 8)}'
// The event subscription infra/eventgrid.bicep creates on every system topic (the guardrail alerts watch it). One
// per environment: a second environment watching the same subscription reuses the first one's topic (only one may
// exist per subscription) and must neither overwrite nor, on `azd down`, delete the first one's subscription.
var eventSubscriptionName = 'acr-dlp-${resourceToken}'
// The diagnostic setting infra/eventgrid.bicep puts on every system topic (DeliveryFailures to the workspace).
var topicDiagnosticSettingName = 'acr-dlp-${resourceToken}'

// The custom role definitions infra/bootstrap.bicep creates (same expressions there): main.bicep only assigns them.
var responderRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-responder')
var hostStorageListerRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-host-storage-lister')
var emailSenderRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-email-sender')
var registryLogsReaderRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-registry-logs-reader')

// Names the code fixes (dlp.settings): the retry queue the trigger binds, and the state and outbox tables.
var retryQueueName = 'dlp-retry'
var stateTableName = 'dlpstate'
var outboxTableName = 'dlpoutbox'

var registryLogsEnabled = !empty(registryLogsWorkspaceId)
var registryLogsWorkspace = split(registryLogsEnabled ? registryLogsWorkspaceId : '/subscriptions/x/resourceGroups/x/providers/x/x/x', '/')
var requestedSubscriptions = filter(map(split(monitoredSubscriptionIds, ','), s => toLower(trim(s))), s => !empty(s))
var monitoredSubscriptions = empty(requestedSubscriptions) ? [ownSubscriptionId] : union(requestedSubscriptions, []) // union: no duplicates
// Reused topics: what the preprovision hook discovered, overridden per subscription by what the user set.
var discoveredTopicIds = filter(map(split(discoveredSystemTopicIds, ','), id => trim(id)), id => !empty(id))
var explicitTopicIds = filter(map(split(existingSystemTopicIds, ','), id => trim(id)), id => !empty(id))
var reusedTopicBySubscription = union(toObject(discoveredTopicIds, id => toLower(split(id, '/')[2])), toObject(explicitTopicIds, id => toLower(split(id, '/')[2])))
// The topic of each monitored subscription, reused or the one subscription-access.bicep creates. Computed from
// names (not from module outputs) so that it may feed loops and outputs alike.
var systemTopicIds = [for s in monitoredSubscriptions: contains(reusedTopicBySubscription, s) ? reusedTopicBySubscription[s] : '/subscriptions/${s}/resourceGroups/${s == ownSubscriptionId ? resourceGroupNameResolved : eventsResourceGroupName}/providers/Microsoft.EventGrid/systemTopics/${systemTopicName}']
var reusedTopicIds = [for s in monitoredSubscriptions: contains(reusedTopicBySubscription, s) ? reusedTopicBySubscription[s] : '']

// DLP_SWEEP_SCHEDULE: Bicep has no pattern decorator, so the override is checked here as far as string functions
// go (6 fields of digits, names, * , - /); dlp.settings.ncrontab_problem checks the ranges when the app starts.
var sweepSchedule = empty(dlpSweepSchedule) ? '0 0 */${sweepIntervalHours} * * *' : trim(dlpSweepSchedule)
var sweepFields = filter(split(sweepSchedule, ' '), f => !empty(f))
// what is left of each field once digits and * , - / are blanked out: only month and day names may remain
var sweepFieldWords = flatten(map(sweepFields, f => filter(split(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(toUpper(f), '*', ' '), ',', ' '), '-', ' '), '/', ' '), '0', ' '), '1', ' '), '2', ' '), '3', ' '), '4', ' '), '5', ' '), '6', ' '), '7', ' '), '8', ' '), '9', ' '), ' '), word => !empty(word))))
var sweepNames = [
  'JAN'
  'FEB'
  'MAR'
  'APR'
  'MAY'
  'JUN'
  'JUL'
  'AUG'
  'SEP'
  'OCT'
  'NOV'
  'DEC'
  'SUN'
  'MON'
  'TUE'
  'WED'
  'THU'
  'FRI'
  'SAT'
]
var sweepScheduleLooksValid = length(sweepFields) == 6 && empty(filter(sweepFieldWords, word => !contains(sweepNames, word)))
var scopes = empty(dlpScopes) ? join(map(monitoredSubscriptions, s => '/subscriptions/${s}'), ',') : dlpScopes
var teamsEnabled = !empty(teamsWebhookUrl)
var emailEnabled = !empty(dlpEmailTo)
var authEnabled = !empty(authClientId)

// Easy Auth's built-in authorization policy (App Service "Use a built-in authorization policy"): a token must come
// from an allowed application AND name an allowed principal; an empty list is no restriction. Without either list
// any principal of the tenant could call the app, so Easy Auth without them does not deploy (the same int() trick
// as DLP_SWEEP_SCHEDULE: ARM evaluates only the branch of if() it takes).
var authApplications = filter(map(split(authAllowedApplications, ','), id => trim(id)), id => !empty(id))
var authPrincipals = filter(map(split(authAllowedPrincipals, ','), id => trim(id)), id => !empty(id))
var authRestricted = !empty(authApplications) || !empty(authPrincipals)
var authPrincipalsFit = length(join(authPrincipals, '')) <= 500

// Private DNS zones of a landing zone's hub instead of new ones (governed tenants often deny creating
// privatelink zones outside the hub).
var existingDnsZoneIds = filter(map(split(privateDnsZoneIds, ','), id => trim(id)), id => !empty(id))
var dnsServers = filter(map(split(vnetDnsServers, ','), ip => trim(ip)), ip => !empty(ip))

// ---------------------------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------------------------
resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupNameResolved
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}dlp-${resourceToken}'
    location: location
    tags: tags
  }
}

module network 'app/network.bicep' = if (vnetEnabled) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}dlp-${resourceToken}'
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    existingDnsZoneIds: existingDnsZoneIds
    dnsServers: dnsServers
    keyVaultZone: teamsEnabled
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}dlp${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    retryQueueName: retryQueueName
    tableNames: [
      stateTableName
      outboxTableName
    ]
    privateOnly: vnetEnabled
  }
}

// Dead letters get their own account: Event Grid writes them over the public endpoint as a trusted Microsoft
// service, which an account with public network access disabled (the app's, when vnetEnabled) would refuse.
module deadLetterStorage 'app/dead-letter-storage.bicep' = {
  name: 'dead-letter-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}dlq${resourceToken}'
    location: location
    tags: tags
    containerName: deadLetterContainerName
    privateOnly: vnetEnabled
    workspaceId: monitoring.outputs.workspaceId
  }
}

module privateEndpoints 'app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'private-endpoints'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: '${abbrs.networkPrivateEndpoints}dlp-${resourceToken}'
    subnetId: vnetEnabled ? network.outputs.privateEndpointSubnetId : ''
    storageAccountId: storage.outputs.id
    deadLetterStorageAccountId: deadLetterStorage.outputs.id
    keyVaultEndpoint: teamsEnabled
    keyVaultId: teamsEnabled ? keyVault.outputs.id : ''
    dnsZoneIds: vnetEnabled ? network.outputs.dnsZoneIds : {}
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: '${abbrs.operationalInsightsWorkspaces}dlp-${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}dlp-${resourceToken}'
    dcrName: '${abbrs.insightsDataCollectionRules}dlp-${resourceToken}'
    actionGroupName: '${abbrs.insightsActionGroups}dlp-${resourceToken}'
    alertNamePrefix: alertNamePrefix
    retentionInDays: logRetentionDays
    operatorEmails: operatorEmails
    heartbeatHours: 2 * sweepIntervalHours
  }
}

// Poison messages and undeliverable outbox items raise an alert (dlp/responder/delivery.py logs the counts).
module deliveryAlerts 'app/delivery-alerts.bicep' = {
  name: 'delivery-alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    alertNamePrefix: alertNamePrefix
    workspaceId: monitoring.outputs.workspaceId
    actionGroupId: monitoring.outputs.actionGroupId
  }
}

module queries 'app/queries.bicep' = {
  name: 'queries'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: monitoring.outputs.workspaceName
    workbookName: guid(rg.id, 'acr-dlp-responder-workbook')
  }
}

module exposureWorkbook 'app/exposure-workbook.bicep' = {
  name: 'exposure-workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: monitoring.outputs.workspaceName
    workbookName: guid(rg.id, 'acr-dlp-exposure-workbook')
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    blobContainerNames: storage.outputs.appContainerNames
    hostStorageAccess: hostStorageAccess
    hostStorageListerRoleGuid: hostStorageListerRoleGuid
    appInsightsName: monitoring.outputs.appInsightsName
    dcrName: monitoring.outputs.dcrName
  }
}

// The replay timer (dlp/responder/deadletter.py) reads dead-letter blobs and moves them to processed/: the app's identity
// gets read/write on the dead-letter container only (nothing else of that account).
module appDeadLetterAccessGrant 'app/dead-letter-access.bicep' = {
  name: 'app-dead-letter-access'
  scope: rg
  params: {
    storageAccountName: deadLetterStorage.outputs.name
    containerName: deadLetterContainerName
    principalId: identity.outputs.principalId
  }
}

module keyVault 'app/keyvault.bicep' = if (teamsEnabled) {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}dlp-${resourceToken}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    teamsWebhookUrl: teamsWebhookUrl
    privateOnly: vnetEnabled
    workspaceId: monitoring.outputs.workspaceId
  }
}

module email 'app/email.bicep' = if (emailEnabled) {
  name: 'email'
  scope: rg
  params: {
    communicationServiceName: '${abbrs.communicationCommunicationServices}dlp-${resourceToken}'
    emailServiceName: '${abbrs.communicationEmailServices}dlp-${resourceToken}'
    tags: tags
    dataLocation: emailDataLocation
    principalId: identity.outputs.principalId
    senderRoleGuid: !empty(emailSenderRoleId) ? emailSenderRoleId : emailSenderRoleGuid
  }
}

module subscriptionAccess 'app/subscription-access.bicep' = [for (s, i) in monitoredSubscriptions: {
  name: 'dlp-access-${resourceToken}-${i}'
  scope: subscription(s)
  params: {
    principalId: identity.outputs.principalId
    responderRoleGuid: responderRoleGuid
    // The role as the deployment subscription names it (its definition lives there); the guardrail alerts also
    // watch the ID each monitored subscription gives it.
    responderRoleId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', responderRoleGuid)
    assignExportPolicy: assignExportPolicy
    exportPolicyEffect: exportPolicyEffect
    policyAssignmentName: policyAssignmentName
    tags: tags
    // The topic lives in the monitored subscription: the responder's own group there, the one infra/bootstrap.bicep
    // created elsewhere (which also holds the guardrail alerts).
    eventsResourceGroupName: s == ownSubscriptionId ? rg.name : eventsResourceGroupName
    reusedSystemTopicId: reusedTopicIds[i]
    systemTopicName: systemTopicName
    systemTopicId: systemTopicIds[i]
    eventSubscriptionName: eventSubscriptionName
    actionGroupId: monitoring.outputs.actionGroupId
    alertNamePrefix: alertNamePrefix
  }
}]

// Exposure impact (issue 25): the responder may query the registry tables of the registry-logs workspace; optionally
// every registry of the monitored subscriptions is made to send its logs there.
module registryLogsAccess 'app/registry-logs-access.bicep' = if (registryLogsEnabled) {
  name: 'dlp-registry-logs-${resourceToken}'
  scope: resourceGroup(registryLogsWorkspace[2], registryLogsWorkspace[4])
  params: {
    workspaceName: last(registryLogsWorkspace)
    principalId: identity.outputs.principalId
    roleDefinitionGuid: registryLogsReaderRoleGuid
  }
}

module registryLogsPolicy 'app/registry-logs-policy.bicep' = [for (s, i) in monitoredSubscriptions: if (registryLogsEnabled && assignRegistryLogsPolicy) {
  name: 'dlp-registry-logs-policy-${resourceToken}-${i}'
  scope: subscription(s)
  params: {
    workspaceId: registryLogsWorkspaceId
    assignmentName: 'acr-dlp-registry-logs-${take(resourceToken, 8)}'
    location: location
  }
}]

// Every app setting of the Function App, in one place. tests/test_infra.py checks these names against
// dlp.settings.SETTINGS (kinds app, secret, platform) both ways, and the limits of the parameters that feed them.
var appSettings = {
  // Functions host and SDK (platform)
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  AZURE_CLIENT_ID: identity.outputs.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // Responder behaviour (app)
  DLP_MODE: dlpMode
  DLP_SCOPES: scopes
  DLP_EXEMPTIONS: dlpExemptions
  DLP_EXEMPT_TAG: dlpExemptTag
  DLP_ALLOW_LOCKOUT: dlpAllowLockout ? 'true' : 'false'
  DLP_MAX_REMEDIATIONS: string(dlpMaxRemediations)
  DLP_TIME_BUDGET_S: string(dlpTimeBudgetSeconds)
  DLP_ALERT_GROUP_WINDOW_S: string(dlpAlertGroupWindowSeconds)
  DLP_ALERT_CAP_PER_REGISTRY: string(dlpAlertCapPerRegistry)
  DLP_ALERT_CAP_PER_CALLER: string(dlpAlertCapPerCaller)
  DLP_ALERT_CAP_WINDOW_MIN: string(dlpAlertCapWindowMinutes)
  DLP_ARM_ENDPOINT: environment().resourceManager
  // A schedule that is not 6 NCRONTAB-looking fields stops the deployment here (int() of a sentence fails, and
  // ARM evaluates only the branch taken), with the setting's name in the error.
  DLP_SWEEP_SCHEDULE: sweepScheduleLooksValid ? sweepSchedule : string(int('DLP_SWEEP_SCHEDULE (dlpSweepSchedule) must be a 6-field NCRONTAB expression'))
  DLP_RULE_DOCS_URL: dlpRuleDocsUrl
  DLP_DEADLETTER_CONTAINER: '${deadLetterStorage.outputs.blobEndpoint}${deadLetterContainerName}'
  // Findings (app): the DCR's own logs-ingestion endpoint, its immutable ID and the stream it declares
  DLP_LOGS_ENDPOINT: monitoring.outputs.logsIngestionEndpoint
  DLP_LOGS_RULE_ID: monitoring.outputs.dcrImmutableId
  DLP_LOGS_STREAM: monitoring.outputs.logsStream
  // Exposure impact (app): the registry-logs workspace's ID and the query endpoint of this cloud
  DLP_REGISTRY_LOGS_WORKSPACE: registryLogsEnabled ? registryLogsAccess.outputs.customerId : ''
  // the Log Analytics query API of this cloud (learn.microsoft.com/azure/azure-monitor/logs/api/access-api)
  DLP_LOGS_QUERY_ENDPOINT: environment().name == 'AzureChinaCloud' ? 'https://api.loganalytics.azure.cn/v1' : (environment().name == 'AzureUSGovernment' ? 'https://api.loganalytics.us/v1' : 'https://api.loganalytics.io/v1')
  // Alerts: the Teams URL only as a Key Vault reference (secret); email through ACS with the identity (app)
  DLP_TEAMS_WEBHOOK_URL: teamsEnabled ? '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.teamsWebhookSecretUri})' : ''
  DLP_EMAIL_ENDPOINT: emailEnabled ? email.outputs.endpoint : ''
  DLP_EMAIL_SENDER: emailEnabled ? email.outputs.senderAddress : ''
  DLP_EMAIL_TO: dlpEmailTo
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    planName: '${abbrs.webServerFarms}dlp-${resourceToken}'
    serviceName: serviceName
    identityId: identity.outputs.id
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: appSettings
    maximumInstanceCount: maximumInstanceCount
    subnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    authClientId: authClientId
    authTenantId: !empty(authTenantId) ? authTenantId : tenant().tenantId
    authAllowedApplications: authApplications
    authAllowedPrincipals: !authEnabled || (authRestricted && authPrincipalsFit) ? authPrincipals : array(int(authRestricted ? 'AUTH_ALLOWED_PRINCIPALS (authAllowedPrincipals) holds more than 500 characters of object IDs, the App Service limit' : 'AUTH_CLIENT_ID is set but neither AUTH_ALLOWED_PRINCIPALS nor AUTH_ALLOWED_APPLICATIONS: any principal of the tenant could call the app'))
    workspaceId: monitoring.outputs.workspaceId
  }
  dependsOn: [
    // The host starts with these: storage, telemetry and Key Vault access (and the storage private endpoints) first.
    rbac
    keyVault
    privateEndpoints
  ]
}

module deleteLock 'app/lock.bicep' = if (enableDeleteLock) {
  name: 'lock'
  scope: rg
  dependsOn: [
    api
    subscriptionAccess
  ]
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs: azd stores them in the environment; the hooks read them.
// ---------------------------------------------------------------------------------------------------------------
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.defaultHostName}'
output AZURE_FUNCTION_APP_AUTH string = authEnabled ? 'entra-id' : 'function-keys'
output AZURE_FUNCTION_APP_AUTH_CLIENT_ID string = authClientId
output AZURE_FUNCTION_APP_AUTH_APPLICATIONS string = join(authApplications, ',')
output AZURE_FUNCTION_APP_AUTH_PRINCIPALS string = join(authPrincipals, ',')
output RESPONDER_PRINCIPAL_ID string = identity.outputs.principalId
output RESPONDER_RESOURCE_TOKEN string = resourceToken
output RESPONDER_ROLE_GUID string = responderRoleGuid
output RESPONDER_CUSTOM_ROLE_GUIDS string = join([responderRoleGuid, hostStorageListerRoleGuid, emailSenderRoleGuid], ',')
@description('The registry-logs reader role (infra/bootstrap.bicep) as <GUID>@<its subscription>, when registry logs are on: postdown deletes it there.')
output RESPONDER_REGISTRY_LOGS_ROLE string = registryLogsEnabled ? '${registryLogsReaderRoleGuid}@${registryLogsWorkspace[2]}' : ''
output RESPONDER_HOST_STORAGE_ACCESS string = hostStorageAccess
output RESPONDER_MONITORED_SUBSCRIPTIONS string = join(monitoredSubscriptions, ',')
output RESPONDER_POLICY_ASSIGNMENT string = assignExportPolicy ? policyAssignmentName : ''
output RESPONDER_VNET_ENABLED bool = vnetEnabled
output EVENTGRID_SYSTEM_TOPIC_IDS string = join(systemTopicIds, ',')
output EVENTGRID_REUSED_TOPIC_IDS string = join(filter(reusedTopicIds, id => !empty(id)), ',')
output EVENTGRID_EVENTS_RESOURCE_GROUP string = eventsResourceGroupName
output EVENTGRID_SUBSCRIPTION_NAME string = eventSubscriptionName
output EVENTGRID_DIAGNOSTIC_SETTING_NAME string = topicDiagnosticSettingName
output EVENTGRID_DEADLETTER_STORAGE_ACCOUNT string = deadLetterStorage.outputs.name
output EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainerName
output ALERT_ACTION_GROUP_ID string = monitoring.outputs.actionGroupId
output ALERT_NAME_PREFIX string = alertNamePrefix
output LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.workspaceId
