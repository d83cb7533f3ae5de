# azd preprovision hook (Windows): find each monitored subscription's existing subscription-level Event Grid system
# topic with one Resource Graph query and store it as DISCOVERED_SYSTEM_TOPIC_IDS, so that infra/main.bicep reuses
# it. Same steps as preprovision.sh. Needs the Azure CLI signed in (`az login`).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

foreach ($name in 'AZURE_ENV_NAME', 'AZURE_SUBSCRIPTION_ID') {
    if (-not [Environment]::GetEnvironmentVariable($name)) { throw "$name is not set: run through azd (azd up / azd provision)" }
}
if ($env:AZURE_ENV_NAME -notmatch '^[A-Za-z0-9_-]+$') { throw 'AZURE_ENV_NAME may hold only letters, digits, - and _' }

$requested = if ($env:MONITORED_SUBSCRIPTION_IDS) { $env:MONITORED_SUBSCRIPTION_IDS } else { $env:AZURE_SUBSCRIPTION_ID }
$subscriptions = @(($requested -split ',') | ForEach-Object { $_.Trim().ToLowerInvariant() } | Where-Object { $_ } | Select-Object -Unique)
foreach ($sub in $subscriptions) {
    if ($sub -notmatch '^[0-9a-f-]+$') { throw "MONITORED_SUBSCRIPTION_IDS: '$sub' is not a subscription ID" }
}

# Flex Consumption regions change: main.bicep's @allowed list is a snapshot, the CLI asks the platform.
$flex = @(az functionapp list-flexconsumption-locations --query '[].name' --output tsv 2>$null)
if ($LASTEXITCODE -eq 0 -and $flex -and $env:AZURE_LOCATION -and ($flex -notcontains $env:AZURE_LOCATION.ToLowerInvariant())) {
    throw "AZURE_LOCATION '$($env:AZURE_LOCATION)' does not offer Flex Consumption; pick one of: $($flex -join ' ')"
}

$arm = (az cloud show --query endpoints.resourceManager --output tsv).TrimEnd('/')
# Topics this environment created itself (tag azd-env-name) are not "existing": main.bicep owns them.
$query = "resources | where type =~ 'microsoft.eventgrid/systemtopics' | where tostring(properties.topicType) =~ 'Microsoft.Resources.Subscriptions' | where tostring(tags['azd-env-name']) != '$($env:AZURE_ENV_NAME)' | project id, subscriptionId"
$body = New-TemporaryFile
@{ subscriptions = $subscriptions; query = $query; options = @{ resultFormat = 'objectArray' } } |
    ConvertTo-Json -Depth 4 | Set-Content -Path $body -Encoding utf8NoBOM

Write-Host "Looking for existing subscription system topics in: $($subscriptions -join ', ')"
$found = az rest --method post --url "$arm/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01" `
    --body "@$body" --query 'data[].id' --output tsv
Remove-Item $body
if ($LASTEXITCODE -ne 0) { throw 'the Resource Graph query failed (is the Azure CLI signed in to the same tenant as azd? az login)' }
$ids = @($found | Where-Object { $_ })
foreach ($id in $ids) { Write-Host "  reuse $id" }
if (-not $ids) { Write-Host '  none found: a new system topic is created in each monitored subscription' }
azd env set DISCOVERED_SYSTEM_TOPIC_IDS ($ids -join ',')
