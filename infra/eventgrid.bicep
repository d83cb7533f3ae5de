// Second stage, deployed by infra/hooks/postdeploy.* after `azd deploy`: an event subscription from every
// monitored subscription's system topic to the Event Grid function, dead-lettering through the topic's identity,
// and delivery alerts. It cannot run in `azd provision`: Event Grid validates that the function exists.
targetScope = 'subscription'

@description('Comma-separated resource IDs of the system topics (output EVENTGRID_SYSTEM_TOPIC_IDS of main.bicep).')
param systemTopicIds string

@description('Resource group of the responder (AZURE_RESOURCE_GROUP).')
param appResourceGroupName string

@description('Function App of the responder (AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('Storage account and container receiving dead letters (EVENTGRID_DEADLETTER_*).')
param deadLetterStorageAccountName string
param deadLetterContainerName string

@description('Action group of the alerts on the responder itself (ALERT_ACTION_GROUP_ID). Empty: portal only.')
param actionGroupId string = ''

@description('Prefix of alert names (ALERT_NAME_PREFIX).')
param alertNamePrefix string

@description('azd environment name, for tags.')
param environmentName string

// The Event Grid trigger in function_app.py.
var eventFunctionName = 'on_registry_event'
var eventSubscriptionName = 'acr-dlp-responder'
var tags = {
  'azd-env-name': environmentName
  workload: 'acr-dlp-responder'
}

var topics = [for id in filter(split(systemTopicIds, ','), candidate => !empty(trim(candidate))): {
  subscriptionId: split(trim(id), '/')[2]
  resourceGroupName: split(trim(id), '/')[4]
  name: last(split(trim(id), '/'))
}]

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(appResourceGroupName)
}

resource deadLetterStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deadLetterStorageAccountName
  scope: resourceGroup(appResourceGroupName)
}

module topicIdentities 'app/topic-identity.bicep' = [for topic in topics: {
  name: 'dlp-topic-identity-${uniqueString(topic.subscriptionId, topic.name)}'
  scope: resourceGroup(topic.subscriptionId, topic.resourceGroupName)
  params: {
    topicName: topic.name
  }
}]

module deadLetterAccess 'app/dead-letter-access.bicep' = [for (topic, i) in topics: {
  name: 'dlp-deadletter-${uniqueString(topic.subscriptionId, topic.name)}'
  scope: resourceGroup(appResourceGroupName)
  params: {
    storageAccountName: deadLetterStorage.name
    containerName: deadLetterContainerName
    principalId: topicIdentities[i].outputs.principalId
  }
}]

module eventSubscriptions 'app/event-subscription.bicep' = [for topic in topics: {
  name: 'dlp-evgs-${uniqueString(topic.subscriptionId, topic.name)}'
  scope: resourceGroup(topic.subscriptionId, topic.resourceGroupName)
  params: {
    topicName: topic.name
    eventSubscriptionName: eventSubscriptionName
    functionResourceId: '${functionApp.id}/functions/${eventFunctionName}'
    deadLetterStorageAccountId: deadLetterStorage.id
    deadLetterContainerName: deadLetterContainerName
    actionGroupId: actionGroupId
    alertNamePrefix: alertNamePrefix
    tags: tags
  }
  dependsOn: [
    deadLetterAccess
  ]
}]

output EVENTGRID_SUBSCRIPTION_NAME string = eventSubscriptionName
