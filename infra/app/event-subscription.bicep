// The event subscription from one system topic to the Event Grid function, and the alerts on its delivery.
// Deployed by infra/eventgrid.bicep after the code (the function endpoint must exist first).
param topicName string
param eventSubscriptionName string
@description('`<function app ID>/functions/<function name>`')
param functionResourceId string
param deadLetterStorageAccountId string
param deadLetterContainerName string
@description('Action group of the alerts on the responder itself. Empty: alerts only show in the portal.')
param actionGroupId string
param alertNamePrefix string
param tags object = {}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: eventSubscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionResourceId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      // Successful writes, deletes and actions (dlp.inputs.events.RELEVANT_TYPES). Actions for the scope exits:
      // a resource group's moveResources (its registries may have left the monitored scope). Registry actions
      // (registries/scheduleRun/action fires on every `az acr build`) also pass the filter below, and the
      // function drops them unread: one advanced filter cannot pair an event type with an operation.
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
        'Microsoft.Resources.ResourceActionSuccess'
      ]
      // Registries and their children (exportPipelines, privateEndpointConnections, ...), and the resource-group
      // move and delete: dlp.inputs.events.OPERATION_FILTERS.
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'data.operationName'
          values: [
            'Microsoft.ContainerRegistry/registries'
            'Microsoft.Resources/subscriptions/resourceGroups/moveResources/action'
            'Microsoft.Resources/subscriptions/resourceGroups/delete'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    // Shared keys are off on the storage account: the topic's own identity writes the dead letters.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

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
      topic.id
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
  dependsOn: [
    eventSubscription
  ]
}]

output id string = eventSubscription.id
