// The responder: a Python 3.11 Function App on Flex Consumption (FC1, Linux) running as the user-assigned identity.
// Flex takes its runtime and package location from functionAppConfig, so FUNCTIONS_WORKER_RUNTIME and
// WEBSITE_RUN_FROM_PACKAGE are not set. Its app settings come in whole from main.bicep (one place to read them).
param name string
param location string
param tags object = {}
param planName string
@description('azd service name (azure.yaml) this app hosts.')
param serviceName string
param identityId string
param storageBlobEndpoint string
param deploymentContainerName string
@description('Every app setting of the Function App, built in main.bicep.')
param appSettings object
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references (DLP_TEAMS_WEBHOOK_URL) resolve with the user-assigned identity, not a system one.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource appSettingsConfig 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: appSettings
}

// No publishing passwords: deployments go through Entra ID (azd uses the deployer's token), so who may deploy
// is decided by RBAC on the app and on the deployment container only.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
