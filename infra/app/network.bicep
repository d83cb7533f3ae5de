// vnetEnabled: the VNet the Function App is integrated into, the subnet of the private endpoints, and the private
// DNS zones that make the storage names resolve to those endpoints inside it.
param name string
param location string
param tags object = {}
@description('Address space, a /23 or larger: a /24 for the app (the size of Microsoft\'s Flex Consumption samples) and a /24 for the private endpoints.')
param addressPrefix string

// Flex Consumption integrates through a subnet delegated to Microsoft.App/environments (Azure-Samples Flex
// templates do the same); the private endpoints get their own subnet.
var appSubnetPrefix = cidrSubnet(addressPrefix, 24, 0)
var privateEndpointSubnetPrefix = cidrSubnet(addressPrefix, 24, 1)
var storageSuffix = environment().suffixes.storage
// No Key Vault zone: Flex Consumption cannot resolve Key Vault references against a network-restricted vault
// (see keyvault.bicep), so the vault keeps its public endpoint.
var zones = {
  blob: 'privatelink.blob.${storageSuffix}'
  queue: 'privatelink.queue.${storageSuffix}'
  table: 'privatelink.table.${storageSuffix}'
}
var zoneList = items(zones)

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          // The app calls ARM, Resource Graph, the logs-ingestion endpoint, ACS and Teams over the internet.
          defaultOutboundAccess: true
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource dnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for zone in zoneList: {
  name: zone.value
  location: 'global'
  tags: tags
}]

resource dnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zone, i) in zoneList: {
  parent: dnsZones[i]
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output id string = vnet.id
output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'app')
output privateEndpointSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'private-endpoints')
@description('Private DNS zone ID per private-link group (blob, queue, table).')
output dnsZoneIds object = toObject(zoneList, zone => zone.key, zone => resourceId('Microsoft.Network/privateDnsZones', zone.value))
