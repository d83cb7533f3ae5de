// Nothing rots unseen (issue 12): Azure Monitor alerts on work the responder gave up on.
//
// Azure Storage's platform metrics count queue messages per account, not per queue, so the poison queue's
// length cannot be a metric alert. Instead the outbox timer (every 5 minutes, dlp/responder/delivery.py) logs one line
//   delivery backlog: poisonMessages=<n> undeliverableAlerts=<n> rejectedFindings=<n> orphanedRemediations=<n>
// (at ERROR level when any count is above zero), which reaches the workspace's AppTraces table; these two log
// alerts read it. The same counts are in GET /api/health under "backlog".

@description('Primary location for the alert rules.')
param location string
param tags object = {}
@description('Prefix of every alert rule name.')
param alertNamePrefix string
@description('Resource ID of the Log Analytics workspace that Application Insights writes to.')
param workspaceId string
@description('Action group of the operators (empty: the rules fire without notifying anyone).')
param actionGroupId string = ''

var backlogLine = 'AppTraces | where Message startswith "delivery backlog:" | parse Message with * "poisonMessages=" PoisonMessages:long " undeliverableAlerts=" UndeliverableAlerts:long " rejectedFindings=" RejectedFindings:long " orphanedRemediations=" OrphanedRemediations:long'
var actionGroups = empty(actionGroupId) ? [] : [actionGroupId]

var rules = [
  {
    name: 'poison-messages'
    displayName: 'ACR DLP responder: durable-retry messages in dlp-retry-poison'
    description: 'The durable retry failed on a message on every delivery and the Functions host moved it to the queue dlp-retry-poison: its work (a remediation, a record) was not done. See the function exceptions, fix the cause, re-check the registry, delete the message.'
    column: 'PoisonMessages'
  }
  {
    name: 'undeliverable-outbox'
    displayName: 'ACR DLP responder: alerts or findings given up on'
    description: 'An alert was still undeliverable after its last attempt (kept in the state table with Dead = true) or Log Analytics refused finding rows for good (outbox kind findings-rejected). Check the channel settings and the data collection rule.'
    column: 'UndeliverableAlerts + RejectedFindings'
  }
]

resource backlogAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${alertNamePrefix}${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: 1
    enabled: true
    scopes: [
      workspaceId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    // AppTraces appears in the workspace only once Application Insights sends its first trace: validating the query
    // at deployment time fails on a first run.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: '${backlogLine} | extend Backlog = ${rule.column}'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'Backlog'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroups
    }
  }
}]

output alertRuleNames array = [for (rule, i) in rules: backlogAlerts[i].name]
