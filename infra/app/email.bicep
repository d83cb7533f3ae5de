// Optional: Azure Communication Services email with an Azure-managed domain (a quick start: 5 mails/min, 10/hour;
// connect a custom domain for production), and the send permission for the responder's identity on the ACS resource.
// Local (access-key) authentication is off (disableLocalAuth, from api-version 2025-05-01): the app sends with its
// Entra ID identity only, so the keys that `listKeys` would return can send nothing.
param communicationServiceName string
param emailServiceName string
param tags object = {}
@description('Where ACS stores its data at rest, e.g. Europe or United States.')
param dataLocation string
param principalId string
@description('GUID of the role to grant on the ACS resource: the custom "email sender" role of infra/bootstrap.bicep, or the built-in role EMAIL_SENDER_ROLE_ID names.')
param senderRoleGuid string

resource emailService 'Microsoft.Communication/emailServices@2025-05-01' = {
  name: emailServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

resource managedDomain 'Microsoft.Communication/emailServices/domains@2025-05-01' = {
  parent: emailService
  name: 'AzureManagedDomain'
  location: 'global'
  tags: tags
  properties: {
    domainManagement: 'AzureManaged'
    userEngagementTracking: 'Disabled'
  }
}

resource communicationService 'Microsoft.Communication/communicationServices@2025-05-01' = {
  name: communicationServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
    disableLocalAuth: true
    linkedDomains: [
      managedDomain.id
    ]
  }
}

resource emailSenderAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(communicationService.id, principalId, senderRoleGuid)
  scope: communicationService
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', senderRoleGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output endpoint string = 'https://${communicationService.properties.hostName}'
output senderAddress string = 'DoNotReply@${managedDomain.properties.mailFromSenderDomain}'
