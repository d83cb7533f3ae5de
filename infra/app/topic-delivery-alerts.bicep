// Alerts on one topic's deliveries to this environment's event subscription, in the responder's own resource group
// of the topic's subscription. The topic's metrics count every subscriber's events: the EventSubscriptionName
// dimension keeps the alert to this environment's (another team's failures on a shared topic are not ours to page on).
param topicId string
param topicName string
param eventSubscriptionName string
@description('Action group of the alerts on the responder itself. Empty: alerts only show in the portal.')
param actionGroupId string
param alertNamePrefix string
param tags object = {}

var deliveryAlerts = [
  {
    metric: 'DeadLetteredCount'
    name: 'deadlettered'
    description: 'Events for the ACR DLP responder were dead-lettered: drift they announced was not evaluated. Replay them from the dead-letter container or run the sweep.'
  }
  {
    metric: 'DroppedEventCount'
    name: 'dropped'
    description: 'Events for the ACR DLP responder were dropped: drift they announced was not evaluated. Run the sweep.'
  }
]

resource deliveryAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = [for alert in deliveryAlerts: {
  name: '${alertNamePrefix}${alert.name}-${topicName}'
  location: 'global'
  tags: tags
  properties: {
    description: alert.description
    severity: 1
    enabled: true
    scopes: [
      topicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: alert.metric
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: alert.metric
          // Whether the dimension's values keep the name's case, and whether the comparison ignores case, is not
          // documented: both spellings are listed (the name is lower case).
          dimensions: [
            {
              name: 'EventSubscriptionName'
              operator: 'Include'
              values: union([eventSubscriptionName], [toUpper(eventSubscriptionName)])
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: empty(actionGroupId) ? [] : [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}]
