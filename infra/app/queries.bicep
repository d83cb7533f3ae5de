// The operator's views of the findings: the KQL in infra/queries/ as saved searches in the workspace
// (Logs > Queries > "ACR DLP responder"), and a workbook with compliance over time, open drifts,
// remediations, blocked remediations and the revert-war list. tests/test_infra.py checks every .kql is here.
param location string
param tags object = {}
param workspaceName string
@description('GUID name of the workbook.')
param workbookName string

var category = 'ACR DLP responder'

var savedQueries = [
  {
    name: 'noncompliant-registries'
    displayName: 'Non-compliant registries now'
    query: loadTextContent('../queries/noncompliant-registries.kql')
    visualization: 'table'
  }
  {
    name: 'drift-over-time'
    displayName: 'Drift events per registry over time'
    query: loadTextContent('../queries/drift-over-time.kql')
    visualization: 'timechart'
  }
  {
    name: 'remediations'
    displayName: 'Remediations and who caused them'
    query: loadTextContent('../queries/remediations.kql')
    visualization: 'table'
  }
  {
    name: 'blocked-remediations'
    displayName: 'Blocked remediations by reason'
    query: loadTextContent('../queries/blocked-remediations.kql')
    visualization: 'table'
  }
  {
    name: 'revert-wars'
    displayName: 'Revert wars'
    query: loadTextContent('../queries/revert-wars.kql')
    visualization: 'table'
  }
]

// Compliance over time, for the workbook: the share of registries whose latest evaluation of the day was
// compliant (rows de-duplicated per evaluation; deleted registries left out).
var complianceOverTime = '''
AcrDlpFindings_CL
| where TimeGenerated > ago(30d)
| summarize arg_max(TimeGenerated, Compliant, Action) by EvaluationId, RegistryKey = tolower(RegistryId)
| where Action != "gone"
| summarize arg_max(TimeGenerated, Compliant) by RegistryKey, Day = bin(TimeGenerated, 1d)
| summarize Registries = count(), CompliantRegistries = countif(Compliant == true) by Day
| extend CompliancePercent = round(100.0 * CompliantRegistries / Registries, 1)
| project Day, CompliancePercent, Registries
| order by Day asc
'''

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource savedSearches 'Microsoft.OperationalInsights/workspaces/savedSearches@2020-08-01' = [for saved in savedQueries: {
  parent: workspace
  name: 'acr-dlp-${saved.name}'
  properties: {
    category: category
    displayName: saved.displayName
    query: saved.query
    version: 2
  }
}]

var queryItems = [for saved in savedQueries: {
  type: 3
  name: saved.name
  content: {
    version: 'KqlItem/1.0'
    title: saved.displayName
    query: saved.query
    size: 0
    queryType: 0
    resourceType: 'microsoft.operationalinsights/workspaces'
    visualization: saved.visualization
  }
}]

var workbook = {
  version: 'Notebook/1.0'
  items: concat([
    {
      type: 1
      name: 'title'
      content: {
        json: '## ACR DLP responder\nFindings from `AcrDlpFindings_CL` (de-duplicated on EvaluationId + RuleId). The same queries are saved in the workspace under "${category}".'
      }
    }
    {
      type: 3
      name: 'compliance-over-time'
      content: {
        version: 'KqlItem/1.0'
        title: 'Compliance over time (% of registries compliant at their last evaluation of the day)'
        query: complianceOverTime
        size: 0
        queryType: 0
        resourceType: 'microsoft.operationalinsights/workspaces'
        visualization: 'timechart'
      }
    }
  ], queryItems)
  fallbackResourceIds: [
    workspace.id
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource responderWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: workbookName
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'ACR DLP responder'
    category: 'workspace'
    sourceId: workspace.id
    version: 'Notebook/1.0'
    serializedData: string(workbook)
  }
}

output workbookId string = responderWorkbook.id
