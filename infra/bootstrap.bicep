// First stage, deployed by infra/hooks/preprovision.* before infra/main.bicep (`azd provision`): what must exist,
// and have replicated, before main.bicep can use it.
// - The custom role definitions. A role definition is replicated with a delay: assigning it in the same deployment
//   that creates it fails on first runs with RoleDefinitionDoesNotExist (azure-cli #20727, pulumi-azure #840). The
//   hook deploys this file, waits until the definitions read back, and only then lets main.bicep assign them.
//   Their names carry the resource token (like the responder role always did): a role name is unique in the whole
//   tenant, so `(<resource group>)` collided when the same environment name was deployed in a second subscription
//   (RoleDefinitionWithSameNameExists).
// - The resource group that holds the system topic and the guardrail alerts in every monitored subscription other
//   than the deployment's. `azd down` deletes the groups main.bicep created, looked up by name in
//   AZURE_SUBSCRIPTION_ID only (azure-dev cli/azd/pkg/azapi/standard_deployments.go, createdResourceGroupsFromDeployment
//   and ListSubscriptionDeploymentResources): a group main.bicep created in another subscription would be looked
//   up in the wrong one. Created here, outside that deployment, they are removed by infra/hooks/postdown.* instead.
// infra/main.bicep computes the same names (tests/test_infra.py checks the expressions are identical).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment (AZURE_ENV_NAME).')
param environmentName string

@minLength(1)
@description('Region of the responder (AZURE_LOCATION): part of the resource token, and where the events groups live.')
param location string

@description('MONITORED_SUBSCRIPTION_IDS as main.bicep reads it. Empty: the deployment subscription.')
param monitoredSubscriptionIds string = ''

@description('REGISTRY_LOGS_WORKSPACE_ID as main.bicep reads it (registryLogsWorkspaceId). Set: the registry-logs reader role is created too.')
param registryLogsWorkspaceId string = ''

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'acr-dlp-responder'
}
var ownSubscriptionId = toLower(subscription().subscriptionId)
var eventsResourceGroupName = '${abbrs.resourcesResourceGroups}${environmentName}-dlp-events'
var requestedSubscriptions = filter(map(split(monitoredSubscriptionIds, ','), s => toLower(trim(s))), s => !empty(s))
var monitoredSubscriptions = empty(requestedSubscriptions) ? [ownSubscriptionId] : union(requestedSubscriptions, []) // union: no duplicates
var otherSubscriptions = filter(monitoredSubscriptions, s => s != ownSubscriptionId)

// Role definition names (GUIDs) and display names: main.bicep computes the same.
var responderRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-responder')
var hostStorageListerRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-host-storage-lister')
var emailSenderRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-email-sender')
var registryLogsReaderRoleGuid = guid(subscription().id, environmentName, 'acr-dlp-registry-logs-reader')
var registryLogsEnabled = !empty(registryLogsWorkspaceId)
var registryLogsSubscriptionId = registryLogsEnabled ? split(registryLogsWorkspaceId, '/')[2] : ownSubscriptionId
var roleNameSuffix = '(${environmentName}-${resourceToken})'

// The only permissions the responder's identity has on monitored subscriptions (docs/deploy.md says why each):
// read registries (ARM and Resource Graph), list export pipelines (the export-policy guard), PATCH a registry
// and follow the long-running operation. Private endpoint connections come embedded in the registry GET, so no
// privateEndpointConnections/read. No delete, no listCredentials, no tokens, no data plane.
var responderActions = [
  'Microsoft.ContainerRegistry/registries/read'
  'Microsoft.ContainerRegistry/registries/write'
  'Microsoft.ContainerRegistry/registries/exportPipelines/read'
  'Microsoft.ContainerRegistry/registries/operationStatuses/read'
  'Microsoft.ResourceGraph/resources/read'
]

resource responderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: responderRoleGuid
  properties: {
    roleName: 'ACR DLP responder ${roleNameSuffix}'
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

// The Functions host's account-level calls at start-up (ListContainers, GetBlobServiceProperties: the storage logs
// in azure-functions-host issue 11938), which container-scoped roles refuse. Actions, not data actions: no blob can be
// read or written with it. Assigned on the app's storage account only (infra/app/rbac.bicep), and only with
// HOST_STORAGE_ACCESS=least-privilege. Assignable in the deployment subscription: the responder's resource group
// does not exist yet when this stage first runs, and a definition grants nothing until it is assigned.
resource hostStorageListerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: hostStorageListerRoleGuid
  properties: {
    roleName: 'ACR DLP host storage lister ${roleNameSuffix}'
    description: 'List the containers and read the blob service properties of the ACR DLP responder\'s storage account; no blob data.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Storage/storageAccounts/blobServices/read'
          'Microsoft.Storage/storageAccounts/blobServices/containers/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

// What Microsoft documents for sending mail with an Entra ID identity (ACS "SMTP authentication" quickstart and the
// SendEmailWithManagedIdentity sample): read/write on the Communication Services resource and write on email services.
// No ListKeys, no delete. Assigned on the ACS resource only (infra/app/email.bicep), when email is on and
// EMAIL_SENDER_ROLE_ID does not name a built-in role instead.
resource emailSenderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: emailSenderRoleGuid
  properties: {
    roleName: 'ACR DLP email sender ${roleNameSuffix}'
    description: 'Send email through Azure Communication Services with an Entra ID identity.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Communication/CommunicationServices/Read'
          'Microsoft.Communication/CommunicationServices/Write'
          'Microsoft.Communication/EmailServices/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

// Exposure impact (issue 25): the least that can query the registries' resource logs. `workspaces/read` and
// `workspaces/query/read` (run a query) plus the read actions of exactly the two registry tables
// (`workspaces/query/<table>/read`): Microsoft documents these per-table actions as the table-level access of Log
// Analytics ("Manage table-level read access", the custom-role method); without them `query/read` reads no table.
// Log Analytics Reader would read every table of the workspace (and more). Assignable in the workspace's
// subscription (it may be another than this one); infra/app/registry-logs-access.bicep assigns it on the workspace.
resource registryLogsReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (registryLogsEnabled) {
  name: registryLogsReaderRoleGuid
  properties: {
    roleName: 'ACR DLP registry logs reader ${roleNameSuffix}'
    description: 'Query the ContainerRegistryRepositoryEvents and ContainerRegistryLoginEvents tables of a workspace, and no other table.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.OperationalInsights/workspaces/read'
          'Microsoft.OperationalInsights/workspaces/query/read'
          'Microsoft.OperationalInsights/workspaces/query/ContainerRegistryRepositoryEvents/read'
          'Microsoft.OperationalInsights/workspaces/query/ContainerRegistryLoginEvents/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      '/subscriptions/${registryLogsSubscriptionId}'
    ]
  }
}

module eventsGroups 'app/events-group.bicep' = [for s in otherSubscriptions: {
  name: 'dlp-events-group-${resourceToken}-${uniqueString(s)}'
  scope: subscription(s)
  params: {
    name: eventsResourceGroupName
    location: location
    tags: tags
  }
}]

@description('The custom role definitions (GUIDs), comma-separated, the registry-logs reader last when it exists: the hook waits until each reads back.')
output customRoleGuids string = join(concat([responderRole.name, hostStorageListerRole.name, emailSenderRole.name], registryLogsEnabled ? [registryLogsReaderRoleGuid] : []), ',')
output eventsResourceGroupName string = eventsResourceGroupName
