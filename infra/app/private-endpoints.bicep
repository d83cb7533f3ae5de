// vnetEnabled: private endpoints of the app's storage (blob, queue, table), the dead-letter account (blob, for a
// dead-letter replay from inside the VNet) and, with Teams alerts, the Key Vault (the platform resolves the
// DLP_TEAMS_WEBHOOK_URL reference through it: see keyvault.bicep), each registered in its private DNS zone (created
// by network.bicep, or the landing zone's own).
param location string
param tags object = {}
param namePrefix string
param subnetId string
param storageAccountId string
param deadLetterStorageAccountId string
@description('A Key Vault is deployed (Teams alerts) and gets an endpoint.')
param keyVaultEndpoint bool
param keyVaultId string
@description('Private DNS zone ID per group: blob, queue, table and, with a Key Vault, vault.')
param dnsZoneIds object

var endpoints = concat([
  {
    name: '${namePrefix}-st-blob'
    target: storageAccountId
    group: 'blob'
  }
  {
    name: '${namePrefix}-st-queue'
    target: storageAccountId
    group: 'queue'
  }
  {
    name: '${namePrefix}-st-table'
    target: storageAccountId
    group: 'table'
  }
  {
    name: '${namePrefix}-dlq-blob'
    target: deadLetterStorageAccountId
    group: 'blob'
  }
], keyVaultEndpoint ? [
  {
    name: '${namePrefix}-kv-vault'
    target: keyVaultId
    group: 'vault'
  }
] : [])

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: endpoint.name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [
            endpoint.group
          ]
        }
      }
    ]
  }
}]

resource dnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoint[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.group
        properties: {
          privateDnsZoneId: dnsZoneIds[endpoint.group]
        }
      }
    ]
  }
}]
