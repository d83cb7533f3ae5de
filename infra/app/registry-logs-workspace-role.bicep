// The registry-logs policy's identity may link diagnostic settings to the workspace (as the portal's
// `assignPermissions` does): Log Analytics Contributor on the workspace only.
param workspaceName string
param principalId string
param roleDefinitionGuid string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource linker 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, roleDefinitionGuid)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'ACR DLP registry-logs policy: diagnostic settings may send to this workspace.'
  }
}
