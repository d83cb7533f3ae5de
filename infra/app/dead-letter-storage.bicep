// The Event Grid dead-letter account: one container, written by the system topics' own identities and read (then
// moved to processed/) by the responder's replay timer (infra/app/dead-letter-access.bicep grants each of them
// Storage Blob Data Contributor on the container only).
// A separate account because Event Grid reaches it as a trusted Microsoft service over the public endpoint: the
// firewall denies everyone else, and the app's own account can then keep public network access disabled.
param name string
param location string
param tags object = {}
param containerName string
@description('true (vnetEnabled): the firewall admits trusted Azure services only (Event Grid writes, the app reads through its private endpoint). false: any network, OAuth only (the app has no fixed outbound address).')
param privateOnly bool = true
@description('Log Analytics workspace receiving the blob service\'s read, write and delete log: who wrote, read or deleted a dead letter (a planted or removed dead letter is an attack on the replay).')
param workspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: privateOnly ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource blobLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'acr-dlp-audit'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [for category in ['StorageRead', 'StorageWrite', 'StorageDelete']: {
      category: category
      enabled: true
    }]
  }
}

output id string = storage.id
output name string = storage.name
output containerName string = container.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
