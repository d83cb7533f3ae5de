# azd postdown hook (Windows): the same steps as postdown.sh, from what predown recorded under ACR_DLP_DOWN_<name>:
# this environment's event subscription and diagnostic setting off reused topics; in the other monitored
# subscriptions, the resource group infra/bootstrap.bicep created (unless its topic serves others); the custom roles'
# assignments, the policy assignments and the role definitions. Best effort: each step reports and goes on.
if (-not $env:AZURE_ENV_NAME -or -not $env:AZURE_SUBSCRIPTION_ID) { throw 'run through azd (azd down)' }
. "$PSScriptRoot/common.ps1"
# What predown recorded, or the output itself (`azd hooks run postdown` before `azd down`).
function Get-Recorded([string]$name) {
    $value = [Environment]::GetEnvironmentVariable("ACR_DLP_DOWN_$name")
    if (-not $value) { $value = [Environment]::GetEnvironmentVariable($name) }
    return "$value"
}
function Left([string]$what) { Warn "$what; remove it by hand" }

$own = $env:AZURE_SUBSCRIPTION_ID.ToLowerInvariant()
$subscriptions = Split-List (Get-Recorded 'RESPONDER_MONITORED_SUBSCRIPTIONS')
$responderRole = Get-Recorded 'RESPONDER_ROLE_GUID'
$roles = Split-List (Get-Recorded 'RESPONDER_CUSTOM_ROLE_GUIDS')
$logsRole = Get-Recorded 'RESPONDER_REGISTRY_LOGS_ROLE'     # <GUID>@<subscription of the registry-logs workspace>
$logsGuid, $logsSub = if ($logsRole) { $logsRole -split '@', 2 } else { '', '' }
if ($logsGuid) { $roles = @($roles) + $logsGuid }
if (-not $roles) { $roles = Split-List $responderRole }
$policy = Get-Recorded 'RESPONDER_POLICY_ASSIGNMENT'
$topics = Split-List (Get-Recorded 'EVENTGRID_SYSTEM_TOPIC_IDS')
$reused = Split-List (Get-Recorded 'EVENTGRID_REUSED_TOPIC_IDS')
$eventsGroup = Get-Recorded 'EVENTGRID_EVENTS_RESOURCE_GROUP'
$eventSubscription = Get-Recorded 'EVENTGRID_SUBSCRIPTION_NAME'
$diagnosticSetting = Get-Recorded 'EVENTGRID_DIAGNOSTIC_SETTING_NAME'
if (-not $subscriptions) {
    Left "nothing recorded by the predown hook (was it skipped?): the custom roles 'ACR DLP ... ($($env:AZURE_ENV_NAME)-...)', their assignments and the groups rg-$($env:AZURE_ENV_NAME)-dlp-events in other subscriptions remain"
    exit 0
}

# This environment's event subscription and diagnostic setting off a topic that stays.
function Remove-Subscription([string]$topicId) {
    $parts = $topicId -split '/'
    Write-Host "Removing event subscription $eventSubscription and diagnostic setting $diagnosticSetting from $($parts[8])"
    az eventgrid system-topic event-subscription delete --subscription $parts[2] --resource-group $parts[4] `
        --system-topic-name $parts[8] --name $eventSubscription --yes --output none
    if ($LASTEXITCODE -ne 0) { Left "event subscription $eventSubscription on $topicId" }
    az monitor diagnostic-settings delete --name $diagnosticSetting --resource $topicId --output none
    if ($LASTEXITCODE -ne 0) { Left "diagnostic setting $diagnosticSetting on $topicId" }
}

# The other event subscriptions on a topic (none when it is gone).
function Get-Others([string]$topicId) {
    $parts = $topicId -split '/'
    $names = @(az eventgrid system-topic event-subscription list --subscription $parts[2] --resource-group $parts[4] `
        --system-topic-name $parts[8] --query '[].name' --output tsv 2>$null)
    return @($names | Where-Object { $_ -and $_ -ine $eventSubscription })
}

if ($eventSubscription) { foreach ($topicId in $reused) { Remove-Subscription $topicId } }

foreach ($sub in $subscriptions) {
    if ($policy) {
        az policy assignment delete --name $policy --scope "/subscriptions/$sub" --output none
        if ($LASTEXITCODE -ne 0) { Left "policy assignment $policy on $sub" }
    }
    if ($sub -eq $own -or -not $eventsGroup) { continue }
    if ((az group exists --subscription $sub --name $eventsGroup 2>$null) -ne 'true') { continue }
    $envTag = az group show --subscription $sub --name $eventsGroup --query 'tags."azd-env-name"' --output tsv 2>$null
    if ($envTag -ne $env:AZURE_ENV_NAME) { Left "resource group $eventsGroup in $sub is not tagged azd-env-name=$($env:AZURE_ENV_NAME): kept"; continue }
    # The topic this environment created there, if any: another environment may have reused it since.
    $shared = $false
    foreach ($topicId in $topics) {
        if (-not $topicId.ToLowerInvariant().StartsWith("/subscriptions/$sub/resourcegroups/$($eventsGroup.ToLowerInvariant())/")) { continue }
        $others = Get-Others $topicId
        if ($others.Count -gt 0) {
            $shared = $true
            Warn "system topic $topicId also serves $($others -join ', '): resource group $eventsGroup in $sub is kept"
            Remove-Subscription $topicId
        }
    }
    if (-not $shared) {
        Write-Host "Deleting resource group $eventsGroup (system topic, alerts) in subscription $sub"
        az group delete --subscription $sub --name $eventsGroup --yes --no-wait
        if ($LASTEXITCODE -ne 0) { Left "resource group $eventsGroup in $sub" }
    }
}

# Assignments first: a role definition that is still assigned cannot be deleted.
foreach ($role in $roles) {
    $scopes = if ($role -eq $responderRole) { @(@($own) + $subscriptions | Select-Object -Unique) } else { @($own) }
    $roleHome = if ($logsGuid -and $role -eq $logsGuid) { $logsSub } else { $own }
    if ($logsGuid -and $role -eq $logsGuid) { $scopes = @($logsSub) }
    foreach ($sub in $scopes) {
        $assignments = @(az role assignment list --subscription $sub --role $role --all --query '[].id' --output tsv 2>$null | Where-Object { $_ })
        if ($assignments.Count -gt 0) {
            Write-Host "Removing the assignments of role $role in subscription $sub"
            az role assignment delete --ids $assignments --output none
            if ($LASTEXITCODE -ne 0) { Left "assignments of role $role in $sub" }
        }
    }
    Write-Host "Deleting role definition $role"
    az role definition delete --name $role --scope "/subscriptions/$roleHome" --output none
    if ($LASTEXITCODE -ne 0) { Left "role definition $role" }
}
exit 0
