// Activity-log alerts on the responder's guardrails in one monitored subscription, routed to the responder's
// action group. Each fires on an administrative operation that would make the responder blind or powerless there:
// - its role assignment deleted, or its custom role changed or deleted;
// - the subscription's system topic or the responder's event subscription on it changed or deleted;
// - a policy exemption, policy assignment, deny assignment (deployment stacks create them), or lock written:
//   any of them can exempt a registry from the "exports disabled" policy or refuse the responder's PATCH.
// Writes right after `azd provision` / `azd deploy` are expected (the event subscription is re-deployed).
param tags object = {}
param alertNamePrefix string
@description('Action group to notify. Empty: the alerts only show in the portal.')
param actionGroupId string
param roleAssignmentId string
@description('The resource IDs of the responder\'s custom role that an activity-log event in this subscription may carry.')
param responderRoleIds array
param systemTopicId string
param eventSubscriptionId string

var subscriptionScope = subscription().id
var actionGroups = empty(actionGroupId) ? [] : [
  {
    actionGroupId: actionGroupId
  }
]

var guardrails = [
  {
    name: 'role-removed'
    description: 'The ACR DLP responder lost (or may lose) its permissions in this subscription: its role assignment was deleted or its custom role was changed. Drift here is no longer remediated.'
    operations: [
      'Microsoft.Authorization/roleAssignments/delete'
      'Microsoft.Authorization/roleDefinitions/write'
      'Microsoft.Authorization/roleDefinitions/delete'
    ]
    resourceIds: concat([roleAssignmentId], responderRoleIds)
  }
  {
    name: 'events-changed'
    description: 'The Event Grid system topic or the ACR DLP responder\'s event subscription in this subscription was changed or deleted: registry writes may no longer reach the responder (the sweep still runs).'
    operations: [
      'Microsoft.EventGrid/systemTopics/write'
      'Microsoft.EventGrid/systemTopics/delete'
      'Microsoft.EventGrid/systemTopics/eventSubscriptions/write'
      'Microsoft.EventGrid/systemTopics/eventSubscriptions/delete'
    ]
    resourceIds: [
      systemTopicId
      eventSubscriptionId
    ]
  }
]

// Exemptions, deny assignments, policy assignments and locks anywhere in the subscription (their resource IDs are
// not known in advance).
var blockers = [
  'Microsoft.Authorization/policyExemptions/write'
  'Microsoft.Authorization/policyAssignments/write'
  'Microsoft.Authorization/denyAssignments/write'
  'Microsoft.Authorization/locks/write'
  'Microsoft.Resources/deploymentStacks/write'
]

resource guardrailAlert 'Microsoft.Insights/activityLogAlerts@2020-10-01' = [for guardrail in guardrails: {
  name: '${alertNamePrefix}${guardrail.name}-${subscription().subscriptionId}'
  location: 'global'
  tags: tags
  properties: {
    description: guardrail.description
    enabled: true
    scopes: [
      subscriptionScope
    ]
    condition: {
      allOf: [
        {
          field: 'category'
          equals: 'Administrative'
        }
        {
          field: 'operationName'
          containsAny: guardrail.operations
        }
        {
          field: 'resourceId'
          containsAny: guardrail.resourceIds
        }
      ]
    }
    actions: {
      actionGroups: actionGroups
    }
  }
}]

resource blockerAlert 'Microsoft.Insights/activityLogAlerts@2020-10-01' = {
  name: '${alertNamePrefix}writes-blocked-${subscription().subscriptionId}'
  location: 'global'
  tags: tags
  properties: {
    description: 'A policy exemption, policy assignment, deny assignment (deployment stack) or lock was written in a subscription the ACR DLP responder watches: it may exempt registries from the exports-disabled policy or refuse the responder\'s writes. Check that it was intended.'
    enabled: true
    scopes: [
      subscriptionScope
    ]
    condition: {
      allOf: [
        {
          field: 'category'
          equals: 'Administrative'
        }
        {
          field: 'operationName'
          containsAny: blockers
        }
      ]
    }
    actions: {
      actionGroups: actionGroups
    }
  }
}
