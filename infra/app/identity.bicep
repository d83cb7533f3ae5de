// The responder's user-assigned managed identity: the one principal that reads and writes registries,
// writes findings, sends alerts and reaches the app's storage. Everything it may do is granted explicitly.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
