// Read access for the responder to the registries' resource logs (issue 25): the custom role "ACR DLP registry
// logs reader" (infra/bootstrap.bicep creates it, and says what it holds and why), assigned on the workspace only.
param workspaceName string
param principalId string
@description('The role definition infra/bootstrap.bicep created (its GUID).')
param roleDefinitionGuid string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource registryLogsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, roleDefinitionGuid)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId(split(workspace.id, '/')[2], 'Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'ACR DLP responder: what was pulled while a registry was open (exposure impact).'
  }
}

@description('The workspace ID (a GUID) the query API takes: DLP_REGISTRY_LOGS_WORKSPACE.')
output customerId string = workspace.properties.customerId
