// The app's storage: host state (identity-based AzureWebJobsStorage), the deployment package container,
// the durable-retry queue (and the poison queue the host moves failed messages to), the breaker/alert-state and
// outbox tables. Shared keys are off: every caller uses Entra ID. privateOnly: public network access disabled,
// reachable through the private endpoints of infra/app/private-endpoints.bicep only.
// The host's own containers are created here so that the app's blob role can be scoped to named containers.
param name string
param location string
param tags object = {}
param deploymentContainerName string
@description('Queue read by the durable-retry function (dlp.settings.RETRY_QUEUE).')
param retryQueueName string
@description('Tables of dlp.settings: STATE_TABLE and OUTBOX_TABLE.')
param tableNames array
@description('vnetEnabled: no public network access; only private endpoints reach the account.')
param privateOnly bool

// Functions host: azure-webjobs-hosts (timer schedule monitor, singleton and listener leases) and
// azure-webjobs-secrets (host and function keys, blob secret storage by default).
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

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
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateOnly ? 'Deny' : 'Allow'
      bypass: privateOnly ? 'None' : 'AzureServices'
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

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in hostContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource retryQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in [retryQueueName, '${retryQueueName}-poison']: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
@description('Every container the app reads and writes: the deployment package and the host\'s.')
output appContainerNames array = concat([deploymentContainerName], hostContainerNames)
