// Data-plane roles of the responder's identity inside its own resource group, each on the narrowest resource:
// - hostStorageAccess least-privilege (default): Storage Blob Data Contributor on the named containers only
//   (deployment package, host leases, host keys), not the account: any other container stays out of reach;
//   blob-data-owner (the fallback): Storage Blob Data Owner on the account, what Microsoft documents for an
//   identity-based AzureWebJobsStorage ("covers the basic needs of Functions host storage");
// - either way, on the account, the custom role "host storage lister" (infra/bootstrap.bicep) that lists containers
//   and reads the blob service's properties, and nothing of their content: the Functions host makes those
//   account-level calls at start-up (ListContainers, GetBlobServiceProperties: the storage logs in
//   azure-functions-host issue 11938), which container-scoped roles refuse and Storage Blob Data Owner does not
//   grant either (blobServices/read is not among its actions);
// - Storage Queue Data Contributor and Storage Table Data Contributor on the account (the retry queue and its
//   poison queue; the state and outbox tables: all of the account's queues and tables are the app's);
// - Monitoring Metrics Publisher on Application Insights (local auth is off) and on the findings DCR (Logs
//   Ingestion API).
param principalId string
param storageAccountName string
@description('Containers the app reads and writes (storage.bicep output appContainerNames).')
param blobContainerNames array
@allowed([
  'least-privilege'
  'blob-data-owner'
])
param hostStorageAccess string
@description('GUID of the custom role "host storage lister" (defined by infra/bootstrap.bicep).')
param hostStorageListerRoleGuid string
param appInsightsName string
param dcrName string

var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}
var leastPrivilege = hostStorageAccess == 'least-privilege'
var accountRoles = concat([
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
], leastPrivilege ? [] : [
  roles.storageBlobDataOwner
])

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for name in blobContainerNames: {
  parent: blobService
  name: name
}]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' existing = {
  name: dcrName
}

resource containerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in blobContainerNames: if (leastPrivilege) {
  name: guid(containers[i].id, principalId, roles.storageBlobDataContributor)
  scope: containers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource containerListing 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, hostStorageListerRoleGuid)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', hostStorageListerRoleGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in accountRoles: {
  name: guid(storage.id, principalId, roleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource findingsIngestionAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dcr.id, principalId, roles.monitoringMetricsPublisher)
  scope: dcr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
