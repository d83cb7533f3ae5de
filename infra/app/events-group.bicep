// The responder's resource group in a monitored subscription other than the deployment's: it holds the system topic
// (when none existed), the guardrail alerts and the delivery alerts there. Created by infra/bootstrap.bicep (see why
// there), tagged with the environment so that infra/hooks/postdown.* deletes only its own.
targetScope = 'subscription'

param name string
param location string
param tags object

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: name
  location: location
  tags: tags
}
