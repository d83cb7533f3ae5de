// Optional (assignRegistryLogsPolicy): every container registry of this subscription sends its resource logs to the
// registry-logs workspace. Azure's built-in policy "Enable logging by category group for Container registries
// (microsoft.containerregistry/registries) to Log Analytics" (56288eb2-4350-461d-9ece-2bb242269dce,
// built-in-policies/policyDefinitions/Monitoring/DS_LA_containerregistry-registries_DINE.json in Azure/azure-policy)
// deploys a diagnostic setting with the category group `audit` (ContainerRegistryLoginEvents and
// ContainerRegistryRepositoryEvents) where none points at the workspace. DeployIfNotExists needs a managed identity
// with the definition's role, Log Analytics Contributor (92aaf0da-9dab-42b6-94a3-d43ce8d16293), here and on the
// workspace; registries that exist before the assignment need a remediation task (docs/deploy.md).
targetScope = 'subscription'

param workspaceId string
param assignmentName string
param location string

var definitionId = '56288eb2-4350-461d-9ece-2bb242269dce'
var logAnalyticsContributor = '92aaf0da-9dab-42b6-94a3-d43ce8d16293'

resource registryLogs 'Microsoft.Authorization/policyAssignments@2024-04-01' = {
  name: assignmentName
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Container registries send their resource logs to the ACR DLP workspace'
    description: 'Pull and login events of every registry, for the ACR DLP responder\'s exposure impact (what was pulled while a registry was open).'
    policyDefinitionId: tenantResourceId('Microsoft.Authorization/policyDefinitions', definitionId)
    enforcementMode: 'Default'
    parameters: {
      effect: {
        value: 'DeployIfNotExists'
      }
      categoryGroup: {
        value: 'audit'
      }
      logAnalytics: {
        value: workspaceId
      }
    }
  }
}

resource deployer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, assignmentName, logAnalyticsContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsContributor)
    principalId: registryLogs.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'The registry-logs policy assignment deploys diagnostic settings on registries.'
  }
}

module onWorkspace 'registry-logs-workspace-role.bicep' = {
  name: 'dlp-registry-logs-ws-${uniqueString(subscription().id, assignmentName)}'
  scope: resourceGroup(split(workspaceId, '/')[2], split(workspaceId, '/')[4])
  params: {
    workspaceName: last(split(workspaceId, '/'))
    principalId: registryLogs.identity.principalId
    roleDefinitionGuid: logAnalyticsContributor
  }
}

output policyAssignmentId string = registryLogs.id
