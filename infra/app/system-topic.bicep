// The subscription's system topic (Microsoft.Resources.Subscriptions, location global). Its system-assigned identity
// writes dead letters to the responder's storage, where shared keys are off.
param name string
param tags object = {}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

output id string = topic.id
