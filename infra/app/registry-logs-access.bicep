// Read access for the responder to the registries' resource logs (issue 25): the least that can query them.
// A custom role at the workspace with `workspaces/read` and `workspaces/query/read` (run a query) plus the read
// actions of exactly the two registry tables (`workspaces/query/<table>/read`), assigned on the workspace only.
// Microsoft documents these per-table actions as the table-level access of Log Analytics ("Manage table-level read
// access", the custom-role method); without them `query/read` reads no table. Log Analytics Reader would read every
// table of the workspace (and more): not needed.
param workspaceName string
param principalId string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource registryLogsReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(workspace.id, 'acr-dlp-registry-logs-reader')
  properties: {
    roleName: 'ACR DLP registry logs reader (${workspaceName})'
    description: 'Query the ContainerRegistryRepositoryEvents and ContainerRegistryLoginEvents tables of this workspace, and no other table.'
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
      resourceGroup().id
    ]
  }
}

resource registryLogsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, registryLogsReader.id)
  scope: workspace
  properties: {
    roleDefinitionId: registryLogsReader.id
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'ACR DLP responder: what was pulled while a registry was open (exposure impact).'
  }
}

@description('The workspace ID (a GUID) the query API takes: DLP_REGISTRY_LOGS_WORKSPACE.')
output customerId string = workspace.properties.customerId
