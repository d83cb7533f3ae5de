// Exposure windows (dlp/domain/exposure.py, dlp/responder/timeline.py): how long registries were open, from the Exposure* columns of
// AcrDlpFindings_CL. A workbook with a chart of exposure minutes per registry per day, and the same query as a saved
// search (Logs > Queries > "ACR DLP responder"). tests/test_exposure.py checks the columns it reads exist.
param location string
param tags object = {}
param workspaceName string
@description('GUID name of the workbook.')
param workbookName string

// One window per evaluation (a remediation's rows, one per rule, all carry its window; an `exposure` evaluation has
// one row; delivery is at least once, so rows are folded on EvaluationId). A window counts on the day it opened;
// windows whose opening is unknown (before the change history) have no seconds and are left out.
var exposureMinutes = '''
AcrDlpFindings_CL
| where TimeGenerated > ago(30d)
| where isnotnull(ExposureSeconds) and isnotnull(ExposureOpenedAt)
| summarize arg_max(TimeGenerated, RegistryName, ExposureOpenedAt, ExposureSeconds) by EvaluationId
| summarize OpenMinutes = round(sum(ExposureSeconds) / 60.0, 1) by RegistryName, Day = bin(ExposureOpenedAt, 1d)
| order by Day asc
| render columnchart
'''

// Every window with who opened and who closed it, and what was pulled meanwhile, newest first. A later pull look
// re-records a window's rows with a later TimeGenerated, so arg_max keeps what the last look found.
var exposureWindows = '''
AcrDlpFindings_CL
| where TimeGenerated > ago(30d)
| where isnotnull(ExposureOpenedAt) or isnotnull(ExposureClosedAt)
| summarize arg_max(TimeGenerated, RegistryName, RuleId, Action, ExposureOpenedAt, ExposureClosedAt, ExposureSeconds, ExposureOpenedBy, ExposureClosedBy, ExposurePulls, ExposurePullsNote) by EvaluationId
| project ExposureOpenedAt, ExposureClosedAt, ExposureSeconds, RegistryName, RuleId, Action, ExposureOpenedBy, ExposureClosedBy, ExposurePulls, ExposurePullsNote
| order by ExposureClosedAt desc
'''

// Pulls per window (issue 25): one bar per closed window, its pull count from the registry's resource logs; a window
// whose pulls are unknown (logs not read) has no bar and is listed in the table above with why.
var pullsPerWindow = '''
AcrDlpFindings_CL
| where TimeGenerated > ago(30d)
| where isnotnull(ExposureClosedAt)
| summarize arg_max(TimeGenerated, RegistryName, ExposureOpenedAt, ExposurePulls) by EvaluationId
| where isnotnull(ExposurePulls)
| project Window = strcat(RegistryName, " ", format_datetime(ExposureOpenedAt, "yyyy-MM-dd HH:mm")), ExposurePulls
| order by Window asc
| render columnchart
'''

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource exposureSearch 'Microsoft.OperationalInsights/workspaces/savedSearches@2020-08-01' = {
  parent: workspace
  name: 'acr-dlp-exposure-minutes'
  properties: {
    category: 'ACR DLP responder'
    displayName: 'Exposure minutes per registry per day'
    query: exposureMinutes
    version: 2
  }
}

var workbook = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'title'
      content: {
        json: '## ACR DLP exposure\nHow long each registry was open (exports, public network access, firewall, anonymous pull, admin user), from change history and remediations.'
      }
    }
    {
      type: 3
      name: 'exposure-minutes'
      content: {
        version: 'KqlItem/1.0'
        title: 'Exposure minutes per registry per day'
        query: exposureMinutes
        size: 0
        queryType: 0
        resourceType: 'microsoft.operationalinsights/workspaces'
        visualization: 'barchart'
      }
    }
    {
      type: 3
      name: 'pulls-per-window'
      content: {
        version: 'KqlItem/1.0'
        title: 'Pulls while open, per window (registry resource logs)'
        query: pullsPerWindow
        size: 0
        queryType: 0
        resourceType: 'microsoft.operationalinsights/workspaces'
        visualization: 'barchart'
      }
    }
    {
      type: 3
      name: 'exposure-windows'
      content: {
        version: 'KqlItem/1.0'
        title: 'Exposure windows: who opened, who closed'
        query: exposureWindows
        size: 0
        queryType: 0
        resourceType: 'microsoft.operationalinsights/workspaces'
        visualization: 'table'
      }
    }
  ]
  fallbackResourceIds: [
    workspace.id
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource exposureWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: workbookName
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'ACR DLP exposure'
    category: 'workspace'
    sourceId: workspace.id
    version: 'Notebook/1.0'
    serializedData: string(workbook)
  }
}

output workbookId string = exposureWorkbook.id
