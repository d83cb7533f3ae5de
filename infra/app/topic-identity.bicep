// The principal ID of a system topic's system-assigned identity, read where the topic lives. A module at the
// topic's scope (instead of an `existing` resource looped over other subscriptions in eventgrid.bicep) keeps the
// cross-subscription read a plain nested deployment whose output the caller indexes by loop position.
param topicName string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

output principalId string = topic.identity.principalId
