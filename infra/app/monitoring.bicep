// Where the responder's evidence lands, and the alerts on the responder itself:
// - Log Analytics workspace + the custom table AcrDlpFindings_CL (columns: dlp.outputs.findings.COLUMNS, via findings-columns.json)
// - a data collection rule of kind Direct (its own logs-ingestion endpoint) with the Custom-AcrDlpFindings stream
// - Application Insights with local (key) auth off: telemetry needs Entra ID (Monitoring Metrics Publisher)
// - alerts: function failures, a heartbeat that fires when no sweep row arrived in twice the sweep interval (armed
//   that long after the deployment: the first sweep runs only at the next schedule boundary), and an activity-log
//   alert on changes to the responder itself
param location string
param tags object = {}
param workspaceName string
param appInsightsName string
param dcrName string
param actionGroupName string
param alertNamePrefix string
@description('Days the workspace (and the findings table) keep data.')
param retentionInDays int
@description('Comma-separated addresses that receive the alerts on the responder itself. Empty: alerts only show in the portal.')
param operatorEmails string
@description('The heartbeat alert fires when no sweep row arrived within this many hours (twice the sweep interval).')
param heartbeatHours int
@description('When this deployment runs (utcNow() may only be a parameter default): the heartbeat is armed heartbeatHours later.')
param deployedAt string = utcNow('u')

// One definition of the findings schema: names and types of dlp.outputs.findings.COLUMNS (tests/test_infra.py checks them;
// the test's failure message prints the command that regenerates the file).
var findingsColumns = loadJsonContent('findings-columns.json')
var findingsTableName = 'AcrDlpFindings_CL'
var findingsStream = 'Custom-AcrDlpFindings'
var workspaceDestination = 'findingsWorkspace'

// The DCR stream declares Log Analytics types as the code does (datetime); the table API spells it dateTime.
var streamColumns = [for column in findingsColumns: {
  name: column.name
  type: column.type
}]
var tableColumns = [for column in findingsColumns: {
  name: column.name
  type: column.type == 'datetime' ? 'dateTime' : column.type
}]

var operatorAddresses = filter(map(split(operatorEmails, ','), address => trim(address)), address => !empty(address))
var alertsEnabled = !empty(operatorAddresses)

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      // Workspace-context access only ("Require workspace permissions"): readers need rights on the workspace or on a
      // table (findings carry UPNs and IP addresses), not merely on some resource that logs to it. true would be
      // "Use resource or workspace permissions".
      enableLogAccessUsingOnlyResourcePermissions: false
      disableLocalAuth: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource findingsTable 'Microsoft.OperationalInsights/workspaces/tables@2023-09-01' = {
  parent: workspace
  name: findingsTableName
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    schema: {
      name: findingsTableName
      description: 'ACR DLP responder: one row per rule result per evaluation (passes included).'
      columns: tableColumns
    }
  }
}

resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: dcrName
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'Findings of the ACR DLP responder (Logs Ingestion API) into ${findingsTableName}.'
    streamDeclarations: {
      '${findingsStream}': {
        columns: streamColumns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: workspaceDestination
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          findingsStream
        ]
        destinations: [
          workspaceDestination
        ]
        transformKql: 'source'
        outputStream: 'Custom-${findingsTableName}'
      }
    ]
  }
  dependsOn: [
    findingsTable
  ]
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (alertsEnabled) {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'acrdlp'
    enabled: true
    emailReceivers: [for (address, i) in operatorAddresses: {
      name: 'operator-${i}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
  }
}

var actionGroupIds = alertsEnabled ? [actionGroup.id] : []

// Any failed invocation: the Event Grid trigger, the durable retry, the sweep, the HTTP re-check.
resource functionFailuresAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${alertNamePrefix}function-failures'
  location: 'global'
  tags: tags
  properties: {
    description: 'ACR DLP responder: function invocations failed. Drift may be going unremediated; check the exceptions in Application Insights.'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'FailedInvocations'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
        }
      ]
    }
    autoMitigate: true
    actions: [for id in actionGroupIds: {
      actionGroupId: id
    }]
  }
}

// The heartbeat: every sweep writes rows with Trigger == "sweep"; none within twice the interval means the
// timer stopped, the identity lost Resource Graph access, or findings stopped reaching the workspace. Until
// heartbeatHours after this deployment one stand-in row keeps it quiet: the first sweep only runs at the next
// schedule boundary, and a heartbeat firing on day one teaches operators to ignore it. Each `azd provision` re-arms it.
var heartbeatArmedAt = dateTimeAdd(deployedAt, 'PT${heartbeatHours}H', 'yyyy-MM-ddTHH:mm:ssZ')
var heartbeatQuery = 'union (${findingsTableName} | where Trigger == "sweep" | project TimeGenerated), (print TimeGenerated = now() | where TimeGenerated < datetime(${heartbeatArmedAt}))'
resource heartbeatAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${alertNamePrefix}sweep-heartbeat'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'ACR DLP responder: no sweep in ${heartbeatHours} hours'
    description: 'No row with Trigger == "sweep" reached ${findingsTableName} within twice the sweep interval.'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    overrideQueryTimeRange: 'PT${heartbeatHours}H'
    // The table was created seconds earlier in this deployment: query validation fails on first runs (the same
    // race as the DCR's InvalidOutputTable); the dependsOn below orders them, this skips the check.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: heartbeatQuery
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
  dependsOn: [
    findingsTable
  ]
}

// Changes to the responder itself: who controls its settings, host, storage or identity controls a principal that
// can write every monitored registry. Expected right after `azd provision` / `azd deploy`; otherwise investigate.
var watchedOperations = [
  'Microsoft.Web/sites/config/write'
  'Microsoft.Web/sites/write'
  'Microsoft.Web/sites/delete'
  'Microsoft.Storage/storageAccounts/write'
  'Microsoft.Authorization/roleAssignments/write'
  'Microsoft.Authorization/locks/delete'
  'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write'
]

resource responderChangedAlert 'Microsoft.Insights/activityLogAlerts@2020-10-01' = {
  name: '${alertNamePrefix}responder-changed'
  location: 'global'
  tags: tags
  properties: {
    description: 'The ACR DLP responder was changed: app settings (DLP_MODE, DLP_SCOPES, DLP_EXEMPTIONS), the Function App, its storage, role assignments, identity federation or locks. Expected after azd provision/deploy; otherwise investigate.'
    enabled: true
    scopes: [
      resourceGroup().id
    ]
    condition: {
      allOf: [
        {
          field: 'category'
          equals: 'Administrative'
        }
        {
          field: 'operationName'
          containsAny: watchedOperations
        }
      ]
    }
    actions: {
      actionGroups: [for id in actionGroupIds: {
        actionGroupId: id
      }]
    }
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
output appInsightsConnectionString string = appInsights.properties.ConnectionString
output dcrId string = dcr.id
output dcrName string = dcr.name
output logsIngestionEndpoint string = dcr.properties.endpoints.logsIngestion
output dcrImmutableId string = dcr.properties.immutableId
output logsStream string = findingsStream
output findingsTableName string = findingsTable.name
output actionGroupId string = alertsEnabled ? actionGroup.id : ''
