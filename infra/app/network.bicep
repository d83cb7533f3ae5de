// vnetEnabled: the VNet the Function App is integrated into, the subnet of the private endpoints (each subnet with a
// network security group: landing zones commonly deny subnets without one), and the private DNS zones that make the
// storage and Key Vault names resolve to those endpoints inside it, created here or, in a landing zone whose policy
// keeps privatelink zones in the hub, reused (existingDnsZoneIds).
param name string
param location string
param tags object = {}
@description('Address space, a /23 or larger: a /24 for the app (the size of Microsoft\'s Flex Consumption samples) and a /24 for the private endpoints.')
param addressPrefix string
@description('Resource IDs of existing private DNS zones to register the private endpoints in (one per zone below, matched by name). Empty: the zones are created and linked to this VNet.')
param existingDnsZoneIds array = []
@description('DNS servers of the VNet (e.g. a hub resolver that answers for the hub\'s zones). Empty: Azure-provided DNS.')
param dnsServers array = []
@description('A Key Vault is deployed (Teams alerts): its zone is needed too.')
param keyVaultZone bool

// Flex Consumption integrates through a subnet delegated to Microsoft.App/environments (Azure-Samples Flex
// templates do the same); the private endpoints get their own subnet.
var appSubnetPrefix = cidrSubnet(addressPrefix, 24, 0)
var privateEndpointSubnetPrefix = cidrSubnet(addressPrefix, 24, 1)
var storageSuffix = environment().suffixes.storage
// privatelink.vaultcore.azure.net in the public cloud (keyvaultDns is .vault.azure.net), and the same pattern in
// the sovereign clouds (privatelink.vaultcore.usgovcloudapi.net, privatelink.vaultcore.azure.cn).
var keyVaultZoneName = 'privatelink${replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')}'
var zones = union({
  blob: 'privatelink.blob.${storageSuffix}'
  queue: 'privatelink.queue.${storageSuffix}'
  table: 'privatelink.table.${storageSuffix}'
}, keyVaultZone ? {
  vault: keyVaultZoneName
} : {})
var zoneList = items(zones)
var createZones = empty(existingDnsZoneIds)
var existingZoneIdByName = toObject(existingDnsZoneIds, id => toLower(last(split(id, '/'))))

// No rule of our own: the default rules (VNet and load balancer in, everything else in denied, outbound allowed)
// are what the app needs; the groups exist so that policy is satisfied and operators can add rules.
resource subnetSecurityGroups 'Microsoft.Network/networkSecurityGroups@2024-05-01' = [for subnet in ['app', 'private-endpoints']: {
  name: '${name}-${subnet}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}]

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
    dhcpOptions: {
      dnsServers: dnsServers
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: subnetSecurityGroups[0].id
          }
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
          networkSecurityGroup: {
            id: subnetSecurityGroups[1].id
          }
          privateEndpointNetworkPolicies: 'Disabled'
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource dnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for zone in zoneList: if (createZones) {
  name: zone.value
  location: 'global'
  tags: tags
}]

resource dnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zone, i) in zoneList: if (createZones) {
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
// A zone missing from existingDnsZoneIds stops the deployment here with its name (int() of a sentence fails; ARM
// evaluates only the branch of if() it takes).
@description('Private DNS zone ID per private-link group (blob, queue, table and, with a Key Vault, vault).')
output dnsZoneIds object = toObject(zoneList, zone => zone.key, zone => createZones ? resourceId('Microsoft.Network/privateDnsZones', zone.value) : (contains(existingZoneIdByName, zone.value) ? existingZoneIdByName[zone.value] : string(int('PRIVATE_DNS_ZONE_IDS (privateDnsZoneIds) names no ${zone.value} zone'))))
