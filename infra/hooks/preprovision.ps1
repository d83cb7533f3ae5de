# azd preprovision hook (Windows): the same steps as preprovision.sh, in the same order: inputs, tenant, Flex
# Consumption region, Microsoft.App, existing system topics (DISCOVERED_SYSTEM_TOPIC_IDS), infra/bootstrap.bicep and
# the wait for its role definitions. Needs the Azure CLI signed in (`az login`).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
. "$PSScriptRoot/common.ps1"

foreach ($name in 'AZURE_ENV_NAME', 'AZURE_SUBSCRIPTION_ID') {
    if (-not [Environment]::GetEnvironmentVariable($name)) { Fail "$name is not set: run through azd (azd up / azd provision)" }
}
if (-not $env:AZURE_LOCATION) { Fail 'choose a region first: azd env set AZURE_LOCATION <region>' }
if ($env:AZURE_ENV_NAME -notmatch '^[A-Za-z0-9_-]+$') { Fail 'AZURE_ENV_NAME may hold only letters, digits, - and _' }
$own = $env:AZURE_SUBSCRIPTION_ID.ToLowerInvariant()
if ($own -notmatch '^[0-9a-f-]+$') { Fail "AZURE_SUBSCRIPTION_ID '$own' is not a subscription ID" }

# MONITORED_SUBSCRIPTION_IDS unset, empty or only blanks and commas: the deployment subscription (as main.bicep
# and preprovision.sh).
$subscriptions = @(Split-List $env:MONITORED_SUBSCRIPTION_IDS | ForEach-Object { $_.ToLowerInvariant() } | Select-Object -Unique)
foreach ($sub in $subscriptions) {
    if ($sub -notmatch '^[0-9a-f-]+$') { Fail "MONITORED_SUBSCRIPTION_IDS: '$sub' is not a subscription ID" }
}
if ($subscriptions.Count -eq 0) { $subscriptions = @($own) }

# The tenant: AZURE_TENANT_ID (set by a previous `azd provision`, or by you) or the deployment subscription's.
$signedIn = az account show --query tenantId --output tsv
if ($LASTEXITCODE -ne 0 -or -not $signedIn) { Fail "the Azure CLI is not signed in: az login --tenant <the tenant of $own>" }
$signedIn = "$signedIn".Trim().ToLowerInvariant()
$target = "$env:AZURE_TENANT_ID".ToLowerInvariant()
foreach ($sub in @($own) + $subscriptions) {
    $tenant = "$(az account show --subscription $sub --query tenantId --output tsv 2>$null)".Trim().ToLowerInvariant()
    if ($LASTEXITCODE -ne 0 -or -not $tenant) { Fail "the Azure CLI (signed in to tenant $signedIn) does not know subscription ${sub}: az login --tenant <its tenant>, or fix MONITORED_SUBSCRIPTION_IDS" }
    if (-not $target) { $target = $tenant }
    if ($tenant -ne $target) { Fail "subscription $sub belongs to tenant $tenant, not ${target}: one deployment watches one tenant" }
}
if ($signedIn -ne $target) { Fail "the Azure CLI is signed in to tenant $signedIn, the subscriptions belong to ${target}: az login --tenant $target (Resource Graph answers only for the signed-in tenant, without an error)" }

# Flex Consumption regions change: main.bicep's @allowed list is a snapshot, the CLI asks the platform.
$flex = @(az functionapp list-flexconsumption-locations --query '[].name' --output tsv 2>$null)
if ($LASTEXITCODE -eq 0 -and $flex -and ($flex -notcontains $env:AZURE_LOCATION.ToLowerInvariant())) {
    Fail "AZURE_LOCATION '$($env:AZURE_LOCATION)' does not offer Flex Consumption; pick one of: $($flex -join ' ')"
}

# Microsoft.App (the subnet delegation Microsoft.App/environments of a VNet-integrated Flex Consumption app).
if ("$env:VNET_ENABLED".ToLowerInvariant() -ne 'false') {
    $state = az provider show --namespace Microsoft.App --subscription $own --query registrationState --output tsv 2>$null
    if ("$state".Trim() -ne 'Registered') {
        Write-Host "Registering the resource provider Microsoft.App in subscription $own (VNet integration needs it)..."
        az provider register --namespace Microsoft.App --subscription $own --wait --output none
        if ($LASTEXITCODE -ne 0) { Fail "could not register Microsoft.App: someone with Contributor on the subscription runs: az provider register --namespace Microsoft.App --subscription $own (or deploy without VNet integration: azd env set VNET_ENABLED false)" }
    }
}

# Existing subscription system topics. Topics this environment created itself (tag azd-env-name) are not
# "existing": main.bicep owns them.
$arm = (az cloud show --query endpoints.resourceManager --output tsv).TrimEnd('/')
$query = "resources | where type =~ 'microsoft.eventgrid/systemtopics' | where tostring(properties.topicType) =~ 'Microsoft.Resources.Subscriptions' | where tostring(tags['azd-env-name']) != '$($env:AZURE_ENV_NAME)' | project id, subscriptionId"
$body = New-TemporaryFile
@{ subscriptions = $subscriptions; query = $query; options = @{ resultFormat = 'objectArray' } } |
    ConvertTo-Json -Depth 4 | Set-Content -Path $body -Encoding utf8NoBOM

Write-Host "Looking for existing subscription system topics in: $($subscriptions -join ', ')"
$found = az rest --method post --url "$arm/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01" `
    --body "@$body" --query 'data[].id' --output tsv
$queried = $LASTEXITCODE -eq 0
Remove-Item $body
if (-not $queried) { Fail "the Resource Graph query failed (is the Azure CLI signed in? az login --tenant $target)" }
$ids = @($found | Where-Object { $_ })
foreach ($id in $ids) { Write-Host "  reuse $id" }
if (-not $ids) { Write-Host '  none found: a new system topic is created in each monitored subscription' }
azd env set DISCOVERED_SYSTEM_TOPIC_IDS ($ids -join ',')

# Role definitions and the other subscriptions' resource groups, then wait until every definition reads back three
# times in a row where it will be assigned (one read may hit a replica that has it while the next does not).
Write-Host 'Deploying the role definitions and resource groups main.bicep assigns and uses (infra/bootstrap.bicep)...'
$guids = az deployment sub create --subscription $own --name (Get-DeploymentName 'bootstrap' $env:AZURE_ENV_NAME) `
    --location $env:AZURE_LOCATION --template-file infra/bootstrap.bicep `
    --parameters environmentName="$env:AZURE_ENV_NAME" location="$env:AZURE_LOCATION" `
        monitoredSubscriptionIds="$($subscriptions -join ',')" `
        registryLogsWorkspaceId="$env:REGISTRY_LOGS_WORKSPACE_ID" `
    --query properties.outputs.customRoleGuids.value --output tsv
if ($LASTEXITCODE -ne 0 -or -not $guids) { Fail 'deployment of infra/bootstrap.bicep failed (creating role definitions needs Owner or User Access Administrator)' }
$roles = Split-List $guids
foreach ($guid in $roles) {
    $scopes = if ($guid -eq $roles[0]) { @(@($own) + $subscriptions | Select-Object -Unique) } else { @($own) }
    if ($roles.Count -ge 4 -and $guid -eq $roles[3]) { $scopes = @(($env:REGISTRY_LOGS_WORKSPACE_ID -split '/')[2]) }   # the registry-logs reader
    foreach ($sub in $scopes) {
        $seen = 0
        for ($tries = 1; $seen -lt 3; $tries++) {
            $read = az role definition list --name $guid --scope "/subscriptions/$sub" --query '[0].name' --output tsv 2>$null
            if ($LASTEXITCODE -eq 0 -and $read) { $seen++ } else { $seen = 0 }
            if ($tries -ge 40) {
                Warn "role definition $guid does not read back in subscription $sub after $tries tries; if provisioning fails with RoleDefinitionDoesNotExist, run azd provision again"
                break
            }
            if ($seen -lt 3) { Start-Sleep -Seconds 5 }
        }
    }
}
Write-Host "Role definitions in place: $guids"
