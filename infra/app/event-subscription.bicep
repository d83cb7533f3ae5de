// The event subscription from one system topic to the Event Grid function, and the topic's delivery-failure log.
// Deployed by infra/eventgrid.bicep after the code (the function endpoint must exist first), at the topic's scope.
param topicName string
@description('This environment\'s event subscription name (one per environment on a shared topic).')
param eventSubscriptionName string
@description('`<function app ID>/functions/<function name>`')
param functionResourceId string
param deadLetterStorageAccountId string
param deadLetterContainerName string
@description('This environment\'s diagnostic setting name on the topic.')
param diagnosticSettingName string
@description('Log Analytics workspace of the responder.')
param workspaceId string

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

// Why an event was not delivered (AegDeliveryFailureLogs, with the EventSubscriptionName column): on a shared topic
// it also holds the other subscribers' failures; filter on this environment's name.
resource deliveryFailures 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: diagnosticSettingName
  scope: topic
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'DeliveryFailures'
        enabled: true
      }
    ]
  }
}

output id string = eventSubscription.id
