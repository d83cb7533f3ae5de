# azd postdeploy hook (Windows): the same steps as postdeploy.sh: wait for the function (and say which storage access
# the host had if it never appears), give reused topics a system-assigned identity, deploy infra/eventgrid.bicep,
# then, with App Service authentication, check that a caller without a token gets 401 and that the deployer's own
# token is accepted when the allowed lists name it (403 otherwise). Needs the Azure CLI signed in (`az login`).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
. "$PSScriptRoot/common.ps1"

foreach ($name in 'AZURE_ENV_NAME', 'AZURE_SUBSCRIPTION_ID', 'AZURE_LOCATION', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME',
                  'EVENTGRID_SYSTEM_TOPIC_IDS', 'EVENTGRID_DEADLETTER_STORAGE_ACCOUNT', 'EVENTGRID_DEADLETTER_CONTAINER',
                  'EVENTGRID_SUBSCRIPTION_NAME', 'EVENTGRID_DIAGNOSTIC_SETTING_NAME', 'EVENTGRID_EVENTS_RESOURCE_GROUP',
                  'ALERT_NAME_PREFIX', 'LOG_ANALYTICS_WORKSPACE_ID', 'RESPONDER_RESOURCE_TOKEN') {
    if (-not [Environment]::GetEnvironmentVariable($name)) { Fail "$name is not set: run through azd (azd up / azd deploy / azd hooks run postdeploy)" }
}
$functionName = 'on_registry_event'
$topicApi = '2025-02-15'

# A host that cannot reach its storage never indexes the function: keep what az answered and say which storage
# access the host had.
Write-Host "Waiting for function $functionName in $env:AZURE_FUNCTION_APP_NAME..."
$found = $false
$lastError = ''
$ErrorActionPreference = 'Continue'   # az's stderr is kept, not thrown
for ($i = 0; $i -lt 30 -and -not $found; $i++) {
    $lastError = az functionapp function show --subscription $env:AZURE_SUBSCRIPTION_ID --resource-group $env:AZURE_RESOURCE_GROUP `
        --name $env:AZURE_FUNCTION_APP_NAME --function-name $functionName --query name --output tsv 2>&1 |
        Where-Object { $_ -is [System.Management.Automation.ErrorRecord] } | Out-String
    if ($LASTEXITCODE -eq 0) { $found = $true } else { Start-Sleep -Seconds 10 }
}
$ErrorActionPreference = 'Stop'
if (-not $found) {
    $advice = if ("$env:RESPONDER_HOST_STORAGE_ACCESS" -ne 'blob-data-owner') {
        "The host ran with the least-privilege storage roles (Storage Blob Data Contributor on its three containers and the 'host storage lister' role). If its log stream shows 403 AuthorizationPermissionMismatch from storage, fall back to Microsoft's documented role: azd env set HOST_STORAGE_ACCESS blob-data-owner; azd provision; azd hooks run postdeploy (docs/deploy.md, Host storage access)."
    } else {
        'The host already had Storage Blob Data Owner on its storage account (HOST_STORAGE_ACCESS=blob-data-owner): storage permissions are not the cause; check the log stream, the private endpoints and DNS (VNET_ENABLED).'
    }
    Fail "function $functionName not found after 5 minutes; the last answer of az was:`n$($lastError.Trim())`n$advice"
}

# A reused system topic needs a system-assigned identity to write dead letters (shared keys are off).
foreach ($topicId in (Split-List $env:EVENTGRID_REUSED_TOPIC_IDS)) {
    $identityType = az rest --method get --url "$($topicId)?api-version=$topicApi" --query 'identity.type' --output tsv 2>$null
    if ($identityType -match 'SystemAssigned') { continue }
    if (-not $identityType -or $identityType -eq 'None') {
        Write-Host "Enabling the system-assigned identity of $topicId"
        $body = New-TemporaryFile
        Set-Content -Path $body -Value '{"identity": {"type": "SystemAssigned"}}' -Encoding utf8NoBOM
        az rest --method patch --url "$($topicId)?api-version=$topicApi" --body "@$body" --output none
        $patched = $LASTEXITCODE -eq 0
        Remove-Item $body
        if (-not $patched) { Fail "could not enable the identity of $topicId" }
    } else {
        Fail "$topicId has only a user-assigned identity; enable its system-assigned identity too, then re-run"
    }
}

Write-Host 'Deploying the event subscriptions (infra/eventgrid.bicep)...'
az deployment sub create `
    --subscription $env:AZURE_SUBSCRIPTION_ID `
    --name (Get-DeploymentName 'eventgrid' $env:RESPONDER_RESOURCE_TOKEN) `
    --location $env:AZURE_LOCATION `
    --template-file infra/eventgrid.bicep `
    --parameters `
        systemTopicIds="$env:EVENTGRID_SYSTEM_TOPIC_IDS" `
        appResourceGroupName="$env:AZURE_RESOURCE_GROUP" `
        eventsResourceGroupName="$env:EVENTGRID_EVENTS_RESOURCE_GROUP" `
        functionAppName="$env:AZURE_FUNCTION_APP_NAME" `
        eventSubscriptionName="$env:EVENTGRID_SUBSCRIPTION_NAME" `
        diagnosticSettingName="$env:EVENTGRID_DIAGNOSTIC_SETTING_NAME" `
        workspaceId="$env:LOG_ANALYTICS_WORKSPACE_ID" `
        deadLetterStorageAccountName="$env:EVENTGRID_DEADLETTER_STORAGE_ACCOUNT" `
        deadLetterContainerName="$env:EVENTGRID_DEADLETTER_CONTAINER" `
        actionGroupId="$env:ALERT_ACTION_GROUP_ID" `
        alertNamePrefix="$env:ALERT_NAME_PREFIX" `
        environmentName="$env:AZURE_ENV_NAME" `
    --output none
if ($LASTEXITCODE -ne 0) { Fail 'deployment of infra/eventgrid.bicep failed' }
Write-Host "Event subscriptions ready: registry writes in every monitored subscription now reach $functionName."

if ($env:AZURE_FUNCTION_APP_AUTH -ne 'entra-id' -or -not $env:AZURE_FUNCTION_APP_URL) { exit 0 }

# App Service authentication on Flex Consumption: checked, not assumed (see postdeploy.sh). Every probe carries the
# function key (so that a 401 comes from App Service authentication) and posts `{}` (the app answers 400 without an
# Azure call).
$key = az functionapp keys list --subscription $env:AZURE_SUBSCRIPTION_ID --resource-group $env:AZURE_RESOURCE_GROUP `
    --name $env:AZURE_FUNCTION_APP_NAME --query functionKeys.default --output tsv
function Invoke-Probe([string]$token) {
    $headers = @{ 'x-functions-key' = $key }
    if ($token) { $headers['Authorization'] = "Bearer $token" }
    try {
        $response = Invoke-WebRequest -Method Post -Uri "$($env:AZURE_FUNCTION_APP_URL)/api/recheck" -Body '{}' `
            -Headers $headers -ContentType 'application/json' -TimeoutSec 30 -SkipHttpErrorCheck
        return [int]$response.StatusCode
    } catch { return 0 }
}
$status = Invoke-Probe ''
if ($status -ne 401) {
    Fail "App Service authentication is configured but an unauthenticated POST /api/recheck got HTTP $status, not 401: Easy Auth is not enforced on this app; do not rely on X-MS-CLIENT-PRINCIPAL-* headers. Unset AUTH_CLIENT_ID (azd env set AUTH_CLIENT_ID '') and put Entra ID in front with API Management instead (docs/deploy.md)."
}
Write-Host 'App Service authentication refuses callers without a token (HTTP 401).'

# The deployer's own token: App Service must accept it if the allowed lists name it, and refuse it (403) otherwise.
$audience = "api://$($env:AZURE_FUNCTION_APP_AUTH_CLIENT_ID)"
$token = az account get-access-token --scope "$audience/user_impersonation" --query accessToken --output tsv 2>$null
if ($LASTEXITCODE -ne 0 -or -not $token) {
    Warn "no token for $audience (az account get-access-token; the Azure CLI must be an authorized client application of that app registration): whether an allowed token is accepted was not checked"
    exit 0
}
$payload = ($token -split '\.')[1].Replace('-', '+').Replace('_', '/')
$payload += '=' * ((4 - $payload.Length % 4) % 4)
$claims = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($payload)) | ConvertFrom-Json
$oid = if ($claims.PSObject.Properties['oid']) { $claims.oid } else { '' }
$app = if ($claims.PSObject.Properties['appid']) { $claims.appid } elseif ($claims.PSObject.Properties['azp']) { $claims.azp } else { '' }
$allowed = ((-not $env:AZURE_FUNCTION_APP_AUTH_APPLICATIONS) -or (Test-InList $app $env:AZURE_FUNCTION_APP_AUTH_APPLICATIONS)) -and
    ((-not $env:AZURE_FUNCTION_APP_AUTH_PRINCIPALS) -or (Test-InList $oid $env:AZURE_FUNCTION_APP_AUTH_PRINCIPALS))
$status = Invoke-Probe $token
if ($allowed) {
    if ($status -in 401, 403, 0) {
        Fail "your token (oid $oid, application $app) is on the allowed lists but POST /api/recheck got HTTP ${status}: App Service authentication refuses allowed callers (check AUTH_CLIENT_ID, AUTH_TENANT_ID and the app registration's Application ID URI)"
    }
    Write-Host "App Service authentication accepts an allowed token (oid $oid, application ${app}: HTTP $status from the app)."
} else {
    if ($status -ne 403) {
        Fail "your token (oid $oid, application $app) is outside AUTH_ALLOWED_PRINCIPALS / AUTH_ALLOWED_APPLICATIONS but POST /api/recheck got HTTP $status, not 403: the authorization policy is not enforced"
    }
    Write-Host 'App Service authentication refuses a token outside the allowed lists (HTTP 403). Yours is not on them, so acceptance of an allowed token was not shown: run azd hooks run postdeploy as an allowed principal.'
}
