// Second stage, deployed by infra/hooks/postdeploy.* after `azd deploy`: an event subscription from every
// monitored subscription's system topic to the Event Grid function, dead-lettering through the topic's identity,
// the topic's delivery-failure log to the workspace, and delivery alerts. It cannot run in `azd provision`: Event
// Grid validates that the function exists.
targetScope = 'subscription'

@description('Comma-separated resource IDs of the system topics (output EVENTGRID_SYSTEM_TOPIC_IDS of main.bicep).')
param systemTopicIds string

@description('Resource group of the responder (AZURE_RESOURCE_GROUP).')
param appResourceGroupName string

@description('The responder\'s resource group in the other monitored subscriptions (EVENTGRID_EVENTS_RESOURCE_GROUP).')
param eventsResourceGroupName string

@description('Function App of the responder (AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('Name of this environment\'s event subscription on every topic (EVENTGRID_SUBSCRIPTION_NAME): one per environment, so that environments sharing a topic never overwrite each other\'s.')
param eventSubscriptionName string

@description('Name of this environment\'s diagnostic setting on every topic (EVENTGRID_DIAGNOSTIC_SETTING_NAME).')
param diagnosticSettingName string

@description('Log Analytics workspace of the responder (LOG_ANALYTICS_WORKSPACE_ID).')
param workspaceId string

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
var tags = {
  'azd-env-name': environmentName
  workload: 'acr-dlp-responder'
}
var ownSubscriptionId = toLower(subscription().subscriptionId)

var topics = [for id in filter(split(systemTopicIds, ','), candidate => !empty(trim(candidate))): {
  id: trim(id)
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

// At the topic's scope, wherever it lives (a reused topic may sit in another team's group): the event subscription
// and the diagnostic setting, both named for this environment. Nothing else is put there.
module eventSubscriptions 'app/event-subscription.bicep' = [for topic in topics: {
  name: 'dlp-evgs-${uniqueString(topic.subscriptionId, topic.name, eventSubscriptionName)}'
  scope: resourceGroup(topic.subscriptionId, topic.resourceGroupName)
  params: {
    topicName: topic.name
    eventSubscriptionName: eventSubscriptionName
    functionResourceId: '${functionApp.id}/functions/${eventFunctionName}'
    deadLetterStorageAccountId: deadLetterStorage.id
    deadLetterContainerName: deadLetterContainerName
    diagnosticSettingName: diagnosticSettingName
    workspaceId: workspaceId
  }
  dependsOn: [
    deadLetterAccess
  ]
}]

// The delivery alerts live in the responder's own group of the topic's subscription (a metric alert sits in the
// subscription of what it watches), never in the group of a reused topic's owner.
module deliveryAlerts 'app/topic-delivery-alerts.bicep' = [for (topic, i) in topics: {
  name: 'dlp-evgs-alerts-${uniqueString(topic.subscriptionId, topic.name, eventSubscriptionName)}'
  scope: resourceGroup(topic.subscriptionId, toLower(topic.subscriptionId) == ownSubscriptionId ? appResourceGroupName : eventsResourceGroupName)
  params: {
    topicId: topic.id
    topicName: topic.name
    eventSubscriptionName: eventSubscriptionName
    actionGroupId: actionGroupId
    alertNamePrefix: alertNamePrefix
    tags: tags
  }
  dependsOn: [
    eventSubscriptions[i]
  ]
}]

output EVENTGRID_SUBSCRIPTION_NAME string = eventSubscriptionName
