// Optional: a Key Vault holding the Teams Workflows webhook URL (it carries a `sig` secret), so the app setting
// DLP_TEAMS_WEBHOOK_URL is only a Key Vault reference. The identity may read that one secret, nothing else.
param name string
param location string
param tags object = {}
param principalId string
@secure()
param teamsWebhookUrl string

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
    // Public even with vnetEnabled: Flex Consumption cannot resolve Key Vault references against a network-restricted
    // vault, "even when the function app has Virtual Network integration enabled" (Flex Consumption plan page,
    // Considerations). Access is Entra ID + RBAC: only the responder's identity may read, and only this one secret.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
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

output id string = vault.id
output name string = vault.name
@description('Versionless secret URI: a rotated secret is picked up without redeploying.')
output teamsWebhookSecretUri string = teamsWebhookSecret.properties.secretUri
