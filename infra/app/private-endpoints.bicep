// vnetEnabled: private endpoints of the app's storage (blob, queue, table) and the dead-letter account (blob, for a
// dead-letter replay from inside the VNet), each registered in its private DNS zone. None for the Key Vault: see
// keyvault.bicep.
param location string
param tags object = {}
param namePrefix string
param subnetId string
param storageAccountId string
param deadLetterStorageAccountId string
@description('Private DNS zone ID per group: blob, queue, table.')
param dnsZoneIds object

var endpoints = [
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
]

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
