// Per monitored subscription: the assignment of the responder's custom role, the optional "exports disabled" policy,
// the Event Grid system topic that raises resource write/delete events for the whole subscription (unless one exists),
// and the activity-log alerts that watch those guardrails. The role definition and, outside the deployment
// subscription, the resource group come from infra/bootstrap.bicep (an earlier stage: see why there).
targetScope = 'subscription'

param principalId string
@description('GUID of the responder custom role (defined once by infra/bootstrap.bicep, assignable in every monitored subscription).')
param responderRoleGuid string
@description('Resource ID of that role definition in the deployment subscription (the alerts watch changes to it).')
param responderRoleId string
param assignExportPolicy bool
@allowed([
  'Audit'
  'Deny'
])
param exportPolicyEffect string
param policyAssignmentName string
param tags object = {}
@description('Existing resource group that holds the system topic (when created) and the guardrail alerts: the responder\'s own group in the deployment subscription, the one infra/bootstrap.bicep created elsewhere.')
param eventsResourceGroupName string
@description('Resource ID of an existing Microsoft.Resources.Subscriptions system topic for this subscription (only one may exist). Empty: create one.')
param reusedSystemTopicId string
param systemTopicName string
@description('Resource ID of this subscription\'s system topic, reused or created (computed by main.bicep from names).')
param systemTopicId string
@description('Name of the event subscription infra/eventgrid.bicep creates on that topic.')
param eventSubscriptionName string
@description('Action group of the alerts on the responder. Empty: alerts only show in the portal.')
param actionGroupId string
param alertNamePrefix string

// Built-in "Container registries should have exports disabled" (Audit/Deny only: no Modify exists for exports).
var exportsDisabledPolicy = '524b0254-c285-4903-bee6-bb8126cde579'

resource responderAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, responderRoleGuid)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', responderRoleGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'ACR DLP responder: read registries, revert export policy and public network access.'
  }
}

resource exportsDisabled 'Microsoft.Authorization/policyAssignments@2024-04-01' = if (assignExportPolicy) {
  name: policyAssignmentName
  properties: {
    displayName: 'Container registries should have exports disabled (ACR DLP responder)'
    description: 'Refuses registries with exports or public network access enabled up front; the responder catches what exemptions or other paths let through.'
    policyDefinitionId: tenantResourceId('Microsoft.Authorization/policyDefinitions', exportsDisabledPolicy)
    enforcementMode: 'Default'
    parameters: {
      effect: {
        value: exportPolicyEffect
      }
    }
  }
}

module systemTopic 'system-topic.bicep' = if (empty(reusedSystemTopicId)) {
  name: 'dlp-system-topic-${uniqueString(subscription().id, systemTopicName)}'
  scope: resourceGroup(eventsResourceGroupName)
  params: {
    name: systemTopicName
    tags: tags
  }
}

module guardrailAlerts 'guardrail-alerts.bicep' = {
  name: 'dlp-guardrails-${uniqueString(subscription().id, systemTopicName)}'
  scope: resourceGroup(eventsResourceGroupName)
  params: {
    tags: tags
    alertNamePrefix: alertNamePrefix
    actionGroupId: actionGroupId
    roleAssignmentId: responderAccess.id
    // Both names of the one custom role: the deployment subscription's, and this subscription's (how the
    // assignment here refers to it). containsAny "compares" the event's value with each (whole value or substring
    // is not documented), so each full form is listed.
    responderRoleIds: union([responderRoleId], [subscriptionResourceId('Microsoft.Authorization/roleDefinitions', responderRoleGuid)])
    systemTopicId: systemTopicId
    eventSubscriptionId: '${systemTopicId}/eventSubscriptions/${eventSubscriptionName}'
  }
}

output systemTopicId string = systemTopicId
output policyAssignmentId string = assignExportPolicy ? exportsDisabled.id : ''
