# azd postdeploy hook (Windows): subscribe the Event Grid function to every monitored subscription's system topic.
# Same steps as postdeploy.sh. Needs the Azure CLI signed in (`az login`) to the same tenant as azd.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

foreach ($name in 'AZURE_ENV_NAME', 'AZURE_SUBSCRIPTION_ID', 'AZURE_LOCATION', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME',
                  'EVENTGRID_SYSTEM_TOPIC_IDS', 'EVENTGRID_DEADLETTER_STORAGE_ACCOUNT', 'EVENTGRID_DEADLETTER_CONTAINER', 'ALERT_NAME_PREFIX') {
    if (-not [Environment]::GetEnvironmentVariable($name)) { throw "$name is not set: run through azd (azd up / azd deploy / azd hooks run postdeploy)" }
}
$functionName = 'on_registry_event'
$topicApi = '2025-02-15'

Write-Host "Waiting for function $functionName in $env:AZURE_FUNCTION_APP_NAME..."
$found = $false
for ($i = 0; $i -lt 30 -and -not $found; $i++) {
    az functionapp function show --subscription $env:AZURE_SUBSCRIPTION_ID --resource-group $env:AZURE_RESOURCE_GROUP `
        --name $env:AZURE_FUNCTION_APP_NAME --function-name $functionName --query name --output tsv 2>$null | Out-Null
    if ($LASTEXITCODE -eq 0) { $found = $true } else { Start-Sleep -Seconds 10 }
}
if (-not $found) { throw "function $functionName not found after 5 minutes; check the deployment, then run: azd hooks run postdeploy" }

# A reused system topic needs a system-assigned identity to write dead letters (shared keys are off).
$reused = @(($env:EVENTGRID_REUSED_TOPIC_IDS -split ',') | Where-Object { $_.Trim() })
foreach ($topicId in $reused) {
    $identityType = az rest --method get --url "$($topicId.Trim())?api-version=$topicApi" --query 'identity.type' --output tsv 2>$null
    if ($identityType -match 'SystemAssigned') { continue }
    if (-not $identityType -or $identityType -eq 'None') {
        Write-Host "Enabling the system-assigned identity of $topicId"
        $body = New-TemporaryFile
        Set-Content -Path $body -Value '{"identity": {"type": "SystemAssigned"}}' -Encoding utf8NoBOM
        az rest --method patch --url "$($topicId.Trim())?api-version=$topicApi" --body "@$body" --output none
        $patched = $LASTEXITCODE -eq 0
        Remove-Item $body
        if (-not $patched) { throw "could not enable the identity of $topicId" }
    } else {
        throw "$topicId has only a user-assigned identity; enable its system-assigned identity too, then re-run"
    }
}

Write-Host 'Deploying the event subscriptions (infra/eventgrid.bicep)...'
az deployment sub create `
    --subscription $env:AZURE_SUBSCRIPTION_ID `
    --name "acr-dlp-eventgrid-$env:AZURE_ENV_NAME" `
    --location $env:AZURE_LOCATION `
    --template-file infra/eventgrid.bicep `
    --parameters `
        systemTopicIds="$env:EVENTGRID_SYSTEM_TOPIC_IDS" `
        appResourceGroupName="$env:AZURE_RESOURCE_GROUP" `
        functionAppName="$env:AZURE_FUNCTION_APP_NAME" `
        deadLetterStorageAccountName="$env:EVENTGRID_DEADLETTER_STORAGE_ACCOUNT" `
        deadLetterContainerName="$env:EVENTGRID_DEADLETTER_CONTAINER" `
        actionGroupId="$env:ALERT_ACTION_GROUP_ID" `
        alertNamePrefix="$env:ALERT_NAME_PREFIX" `
        environmentName="$env:AZURE_ENV_NAME" `
    --output none
if ($LASTEXITCODE -ne 0) { throw 'deployment of infra/eventgrid.bicep failed' }
Write-Host "Event subscriptions ready: registry writes in every monitored subscription now reach $functionName."

# App Service authentication on Flex Consumption: the preview-era Flex Consumption page said "EasyAuth isn't
# currently supported. Unauthenticated callers currently aren't blocked when EasyAuth is enabled". Trust it only
# once it is seen to refuse a caller without a token. The probe carries the function key, so that a 401 can only
# come from App Service authentication (the Functions host answers 401 to a missing key as well).
if ($env:AZURE_FUNCTION_APP_AUTH -eq 'entra-id' -and $env:AZURE_FUNCTION_APP_URL) {
    $key = az functionapp keys list --subscription $env:AZURE_SUBSCRIPTION_ID --resource-group $env:AZURE_RESOURCE_GROUP `
        --name $env:AZURE_FUNCTION_APP_NAME --query functionKeys.default --output tsv
    $status = 0
    try {
        $response = Invoke-WebRequest -Method Post -Uri "$($env:AZURE_FUNCTION_APP_URL)/api/recheck" -Body '{}' `
            -Headers @{ 'x-functions-key' = $key } -ContentType 'application/json' -TimeoutSec 30 -SkipHttpErrorCheck
        $status = [int]$response.StatusCode
    } catch { $status = 0 }
    if ($status -ne 401) {
        throw "App Service authentication is configured but an unauthenticated POST /api/recheck got HTTP $status, not 401: Easy Auth is not enforced on this app; do not rely on X-MS-CLIENT-PRINCIPAL-* headers. Unset AUTH_CLIENT_ID (azd env set AUTH_CLIENT_ID '') and put Entra ID in front with API Management instead (docs/deploy.md)."
    }
    Write-Host 'App Service authentication refuses callers without a token (HTTP 401).'
}
