// Optional: a Key Vault holding the Teams Workflows webhook URL (it carries a `sig` secret), so the app setting
// DLP_TEAMS_WEBHOOK_URL is only a Key Vault reference. The identity may read that one secret, nothing else.
// privateOnly (vnetEnabled): public network access disabled, reached through its private endpoint
// (infra/app/private-endpoints.bicep) from the app's VNet integration. Microsoft's Key Vault references page
// ("Use Key Vault references as app settings", Access network-restricted vaults) now names Flex Consumption as the
// exception that needs no extra routing setting ("When running in a Flex Consumption plan, this routing is done
// automatically"), and the Flex Consumption plan page no longer lists Key Vault references among its limitations.
// The secret itself is written through ARM (the Microsoft.KeyVault resource provider), which the vault's firewall
// does not apply to, so `azd provision` works from outside the VNet.
param name string
param location string
param tags object = {}
param principalId string
@secure()
param teamsWebhookUrl string
@description('vnetEnabled: no public network access; only the private endpoint reaches the vault.')
param privateOnly bool
@description('Log Analytics workspace receiving the vault\'s AuditEvent log (who read or changed the secret).')
param workspaceId string

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // Purge protection stays off so that `azd down --purge` can remove the vault; the secret is a rotatable URL.
    // Access is Entra ID + RBAC: only the responder's identity may read, and only this one secret.
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateOnly ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource teamsWebhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'dlp-teams-webhook-url'
  properties: {
    value: teamsWebhookUrl
    contentType: 'text/uri'
  }
}

// Scoped to the one secret, not the vault.
resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(teamsWebhookSecret.id, principalId, keyVaultSecretsUser)
  scope: teamsWebhookSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'acr-dlp-audit'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
@description('Versionless secret URI: a rotated secret is picked up without redeploying.')
output teamsWebhookSecretUri string = teamsWebhookSecret.properties.secretUri
