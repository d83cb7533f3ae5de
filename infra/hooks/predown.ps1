# azd predown hook (Windows): the same steps as predown.sh: refuse to delete a system topic this environment created
# that other event subscriptions also use (ACR_DLP_FORCE_DOWN=true overrides), then record what postdown needs under
# ACR_DLP_DOWN_<name> (azd removes main.bicep's outputs from the environment before postdown runs).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
. "$PSScriptRoot/common.ps1"

if (-not $env:AZURE_ENV_NAME) { Fail 'AZURE_ENV_NAME is not set: run through azd (azd down)' }
$ours = "$env:EVENTGRID_SUBSCRIPTION_NAME"

$blocked = @()
foreach ($topicId in (Split-List $env:EVENTGRID_SYSTEM_TOPIC_IDS)) {
    if (Test-InList $topicId $env:EVENTGRID_REUSED_TOPIC_IDS) { continue }   # not ours: postdown only unsubscribes
    $parts = $topicId -split '/'
    $names = @(az eventgrid system-topic event-subscription list --subscription $parts[2] --resource-group $parts[4] `
        --system-topic-name $parts[8] --query '[].name' --output tsv 2>$null)
    $others = @($names | Where-Object { $_ -and $_ -ine $ours })
    if ($others.Count -gt 0) { $blocked += "  ${topicId}: $($others -join ', ')" }
}
if ($blocked.Count -gt 0) {
    if ("$env:ACR_DLP_FORCE_DOWN".ToLowerInvariant() -eq 'true') {
        Warn "ACR_DLP_FORCE_DOWN=true: deleting system topics that other event subscriptions use:`n$($blocked -join "`n")"
    } else {
        Fail ("this environment created system topics that other event subscriptions also use; azd down would delete them:`n" +
            ($blocked -join "`n") + "`n  Tear down the environments that reuse them first (their azd down removes only their own event subscription)," +
            "`n  or delete anyway: `$env:ACR_DLP_FORCE_DOWN='true'; azd down")
    }
}

# Without the outputs (nothing provisioned, or a second `azd down`), keep what an earlier run recorded: postdown can be
# re-run with `azd hooks run postdown` after a partial failure.
if (-not $env:RESPONDER_MONITORED_SUBSCRIPTIONS) {
    Write-Host 'No outputs of infra/main.bicep in this environment: keeping what an earlier azd down recorded for postdown.'
    exit 0
}
foreach ($name in 'RESPONDER_MONITORED_SUBSCRIPTIONS', 'RESPONDER_ROLE_GUID', 'RESPONDER_CUSTOM_ROLE_GUIDS', 'RESPONDER_REGISTRY_LOGS_ROLE', 'RESPONDER_POLICY_ASSIGNMENT',
                  'EVENTGRID_SYSTEM_TOPIC_IDS', 'EVENTGRID_REUSED_TOPIC_IDS', 'EVENTGRID_EVENTS_RESOURCE_GROUP', 'EVENTGRID_SUBSCRIPTION_NAME',
                  'EVENTGRID_DIAGNOSTIC_SETTING_NAME') {
    azd env set "ACR_DLP_DOWN_$name" "$([Environment]::GetEnvironmentVariable($name))"
    if ($LASTEXITCODE -ne 0) { Fail "could not record $name for the postdown hook" }
}
