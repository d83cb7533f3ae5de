// Optional: Azure Communication Services email with an Azure-managed domain (a quick start: 5 mails/min, 10/hour;
// connect a custom domain for production), and the send permission for the responder's identity on the ACS resource.
param communicationServiceName string
param emailServiceName string
param tags object = {}
@description('Where ACS stores its data at rest, e.g. Europe or United States.')
param dataLocation string
param principalId string
@description('Built-in role to grant instead of the least-privilege custom role, e.g. 09976791-48a7-449e-bb21-39d1a415f350 (Communication and Email Service Owner). Empty: the custom role.')
param senderRoleDefinitionId string

resource emailService 'Microsoft.Communication/emailServices@2023-04-01' = {
  name: emailServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

resource managedDomain 'Microsoft.Communication/emailServices/domains@2023-04-01' = {
  parent: emailService
  name: 'AzureManagedDomain'
  location: 'global'
  tags: tags
  properties: {
    domainManagement: 'AzureManaged'
    userEngagementTracking: 'Disabled'
  }
}

resource communicationService 'Microsoft.Communication/communicationServices@2023-04-01' = {
  name: communicationServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
    linkedDomains: [
      managedDomain.id
    ]
  }
}

// What Microsoft documents for sending mail with an Entra ID identity (ACS "SMTP authentication" quickstart and the
// SendEmailWithManagedIdentity sample): read/write on the Communication Services resource and write on email services.
// No ListKeys, no delete.
resource emailSenderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (empty(senderRoleDefinitionId)) {
  name: guid(resourceGroup().id, 'acr-dlp-email-sender')
  properties: {
    roleName: 'ACR DLP email sender (${resourceGroup().name})'
    description: 'Send email through Azure Communication Services with an Entra ID identity.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Communication/CommunicationServices/Read'
          'Microsoft.Communication/CommunicationServices/Write'
          'Microsoft.Communication/EmailServices/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

var senderRoleGuid = empty(senderRoleDefinitionId) ? emailSenderRole.name : senderRoleDefinitionId

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
