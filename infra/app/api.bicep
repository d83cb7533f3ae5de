// The responder: a Python 3.11 Function App on Flex Consumption (FC1, Linux) running as the user-assigned identity,
// optionally integrated into a VNet and behind App Service authentication (Entra ID).
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
@description('vnetEnabled: the subnet (delegated to Microsoft.App/environments) the app is integrated into. Empty: none.')
param subnetId string
@description('Entra ID app (client) ID for App Service authentication. Empty: no Easy Auth.')
param authClientId string
param authTenantId string
@description('Client IDs whose tokens Easy Auth accepts (appid/azp claim). Empty: any application.')
param authAllowedApplications array
@description('Object IDs (oid claim) Easy Auth accepts. Empty: any principal. main.bicep refuses both empty.')
param authAllowedPrincipals array
@description('Log Analytics workspace receiving the app\'s platform logs (function execution, App Service authentication).')
param workspaceId string

// The Event Grid trigger's webhook (Event Grid authenticates with the system key, it cannot get an Entra ID token
// for our app) and the health probe stay reachable without a token; everything else needs one.
var unauthenticatedPaths = [
  '/runtime/webhooks/eventgrid'
  '/runtime/webhooks/EventGrid'
  '/api/health'
]

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
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
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

// Entra ID in front of the app (App Service authentication, "Easy Auth"): tokens for authClientId are validated by
// the platform, which then sets X-MS-CLIENT-PRINCIPAL-NAME / -ID (and strips them from client requests); the
// platform also sets WEBSITE_AUTH_ENABLED=True, which the app checks before trusting those headers.
// No client secret: the app only validates bearer tokens, it never signs users in interactively.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: unauthenticatedPaths
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
          // Not every principal of the tenant: the token must come from an allowed application AND name an allowed
          // principal (an empty list is no restriction); anything else gets 403 from the platform.
          defaultAuthorizationPolicy: {
            allowedApplications: authAllowedApplications
            allowedPrincipals: {
              identities: authAllowedPrincipals
            }
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
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

// Every log category the app offers (FunctionAppLogs, and AppServiceAuthenticationLogs with Easy Auth: who was
// refused) to the project's workspace; a category group, so that a category Flex Consumption lacks is no error.
resource platformLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'acr-dlp-logs'
  scope: functionApp
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
