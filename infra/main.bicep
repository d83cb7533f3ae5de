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
@description('Region of the responder (one where Flex Consumption is available, e.g. eastus, westeurope, swedencentral).')
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

@description('Comma-separated resource IDs of existing Microsoft.Resources.Subscriptions system topics to reuse (only one per subscription may exist). Monitored subscriptions without one get a new topic.')
param existingSystemTopicIds string = ''

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
param dlpExemptTag string = ''

@description('DLP_ALLOW_LOCKOUT: allow disabling public network access on a registry with no approved private endpoint.')
param dlpAllowLockout bool = false

@description('DLP_MAX_REMEDIATIONS: revert-war breaker, remediations of one registry per hour before the responder stops writing to it.')
@minValue(1)
@maxValue(100)
param dlpMaxRemediations int = 3

@description('DLP_TIME_BUDGET_S: seconds an invocation may spend on Azure calls. Keep it under 30: Event Grid waits 30 s.')
@minValue(2)
@maxValue(600)
param dlpTimeBudgetSeconds int = 20

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

@description('DLP_SWEEP_SCHEDULE override (6-field NCRONTAB). Empty: every sweepIntervalHours hours. Keep sweepIntervalHours equal to its period, the heartbeat uses it.')
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
var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'acr-dlp-responder'
}
var serviceName = 'responder'
var functionAppName = '${abbrs.webSitesFunctions}dlp-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletters'
var alertNamePrefix = 'acr-dlp-${resourceToken}-'
var ownSubscriptionId = toLower(subscription().subscriptionId)
var eventsResourceGroupName = '${abbrs.resourcesResourceGroups}${environmentName}-dlp-events'

// Names the code fixes (dlp.settings): the retry queue the trigger binds, and the state and outbox tables.
var retryQueueName = 'dlp-retry'
var stateTableName = 'dlpstate'
var outboxTableName = 'dlpoutbox'

var requestedSubscriptions = filter(map(split(monitoredSubscriptionIds, ','), s => toLower(trim(s))), s => !empty(s))
var monitoredSubscriptions = empty(requestedSubscriptions) ? [ownSubscriptionId] : union(requestedSubscriptions, []) // union: no duplicates
var reusedTopicIds = filter(map(split(existingSystemTopicIds, ','), id => trim(id)), id => !empty(id))
var reusedTopicBySubscription = toObject(reusedTopicIds, id => toLower(split(id, '/')[2]))

var sweepSchedule = empty(dlpSweepSchedule) ? '0 0 */${sweepIntervalHours} * * *' : dlpSweepSchedule
var scopes = empty(dlpScopes) ? join(map(monitoredSubscriptions, s => '/subscriptions/${s}'), ',') : dlpScopes
var teamsEnabled = !empty(teamsWebhookUrl)
var emailEnabled = !empty(dlpEmailTo)

// The only permissions the responder's identity has on monitored subscriptions: read registries (ARM and
// Resource Graph), list export pipelines and private endpoint connections (guards), PATCH a registry and follow
// the long-running operation. No delete, no listCredentials, no tokens, no data plane.
var responderActions = [
  'Microsoft.ContainerRegistry/registries/read'
  'Microsoft.ContainerRegistry/registries/write'
  'Microsoft.ContainerRegistry/registries/exportPipelines/read'
  'Microsoft.ContainerRegistry/registries/privateEndpointConnections/read'
  'Microsoft.ContainerRegistry/registries/operationStatuses/read'
  'Microsoft.ResourceGraph/resources/read'
]

// ---------------------------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------------------------
resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

resource responderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'acr-dlp-responder')
  properties: {
    roleName: 'ACR DLP responder (${environmentName}-${resourceToken})'
    description: 'Read container registries and revert their export policy / public network access. Assigned to the ACR DLP responder only.'
    type: 'CustomRole'
    permissions: [
      {
        actions: responderActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: map(union([ownSubscriptionId], monitoredSubscriptions), s => '/subscriptions/${s}')
  }
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

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}dlp${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    retryQueueName: retryQueueName
    tableNames: [
      stateTableName
      outboxTableName
    ]
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

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    dcrName: monitoring.outputs.dcrName
  }
}

// The replay timer (dlp/deadletter.py) reads dead-letter blobs and moves them to processed/: read/write on
// that one container (the same role assignment shape as a system topic's, on the same container).
module deadLetterReplayAccess 'app/dead-letter-access.bicep' = {
  name: 'dead-letter-replay-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    containerName: storage.outputs.deadLetterContainerName
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
    senderRoleDefinitionId: emailSenderRoleId
  }
}

module subscriptionAccess 'app/subscription-access.bicep' = [for (s, i) in monitoredSubscriptions: {
  name: 'dlp-access-${resourceToken}-${i}'
  scope: subscription(s)
  params: {
    principalId: identity.outputs.principalId
    responderRoleGuid: responderRole.name
    assignExportPolicy: assignExportPolicy
    exportPolicyEffect: exportPolicyEffect
    policyAssignmentName: 'acr-dlp-exports-disabled-${take(resourceToken, 8)}'
    location: location
    tags: tags
    // The topic lives in the monitored subscription: the responder's own group there, a dedicated one elsewhere.
    eventsResourceGroupName: s == ownSubscriptionId ? rg.name : eventsResourceGroupName
    createEventsResourceGroup: s != ownSubscriptionId && !contains(reusedTopicBySubscription, s)
    reusedSystemTopicId: contains(reusedTopicBySubscription, s) ? reusedTopicBySubscription[s] : ''
    systemTopicName: '${abbrs.eventGridSystemTopics}dlp-${resourceToken}'
  }
}]

// Every app setting of the Function App, in one place. tests/test_infra.py checks these names against
// dlp.settings.SETTINGS (kinds app, secret, platform) both ways.
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
  DLP_ARM_ENDPOINT: environment().resourceManager
  DLP_SWEEP_SCHEDULE: sweepSchedule
  DLP_RULE_DOCS_URL: dlpRuleDocsUrl
  DLP_DEADLETTER_CONTAINER: storage.outputs.deadLetterContainerName
  // Findings (app): the DCR's own logs-ingestion endpoint, its immutable ID and the stream it declares
  DLP_LOGS_ENDPOINT: monitoring.outputs.logsIngestionEndpoint
  DLP_LOGS_RULE_ID: monitoring.outputs.dcrImmutableId
  DLP_LOGS_STREAM: monitoring.outputs.logsStream
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
  }
  dependsOn: [
    // The host starts with these: storage, telemetry and Key Vault access must already be granted.
    rbac
    keyVault
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
var systemTopicIds = [for i in range(0, length(monitoredSubscriptions)): subscriptionAccess[i].outputs.systemTopicId]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.defaultHostName}'
output RESPONDER_PRINCIPAL_ID string = identity.outputs.principalId
output RESPONDER_ROLE_GUID string = responderRole.name
output RESPONDER_MONITORED_SUBSCRIPTIONS string = join(monitoredSubscriptions, ',')
output RESPONDER_POLICY_ASSIGNMENT string = assignExportPolicy ? 'acr-dlp-exports-disabled-${take(resourceToken, 8)}' : ''
output EVENTGRID_SYSTEM_TOPIC_IDS string = join(systemTopicIds, ',')
output EVENTGRID_REUSED_TOPIC_IDS string = join(reusedTopicIds, ',')
output EVENTGRID_EVENTS_RESOURCE_GROUP string = eventsResourceGroupName
output EVENTGRID_DEADLETTER_STORAGE_ACCOUNT string = storage.outputs.name
output EVENTGRID_DEADLETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output ALERT_ACTION_GROUP_ID string = monitoring.outputs.actionGroupId
output ALERT_NAME_PREFIX string = alertNamePrefix
output LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.workspaceId
