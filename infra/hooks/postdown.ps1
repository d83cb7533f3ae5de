# azd postdown hook (Windows): remove what `azd down` leaves outside the responder's resource group.
# Same steps as postdown.sh; best effort: each step reports and continues. Needs the Azure CLI signed in.
if (-not $env:AZURE_ENV_NAME -or -not $env:AZURE_SUBSCRIPTION_ID) { throw 'run through azd (azd down)' }
$eventSubscription = 'acr-dlp-responder'
$own = $env:AZURE_SUBSCRIPTION_ID.ToLower()
function Split-List([string]$value) { @(($value -split ',') | ForEach-Object { $_.Trim() } | Where-Object { $_ }) }
function Warn([string]$what) { Write-Warning "$what; remove it by hand" }

foreach ($topicId in (Split-List $env:EVENTGRID_REUSED_TOPIC_IDS)) {
    $parts = $topicId -split '/'
    $sub = $parts[2]; $group = $parts[4]; $topic = $parts[8]
    Write-Host "Removing event subscription $eventSubscription and its alerts from reused topic $topic"
    az eventgrid system-topic event-subscription delete --subscription $sub --resource-group $group `
        --system-topic-name $topic --name $eventSubscription --yes --output none
    if ($LASTEXITCODE -ne 0) { Warn "event subscription on $topicId" }
    foreach ($alert in 'deadlettered', 'dropped') {
        az monitor metrics alert delete --subscription $sub --resource-group $group `
            --name "$($env:ALERT_NAME_PREFIX)$alert-$topic" --output none
        if ($LASTEXITCODE -ne 0) { Warn "alert $($env:ALERT_NAME_PREFIX)$alert-$topic" }
    }
}

foreach ($sub in (Split-List $env:RESPONDER_MONITORED_SUBSCRIPTIONS)) {
    if ($env:RESPONDER_ROLE_GUID) {
        Write-Host "Removing the responder role's assignments on subscription $sub"
        az role assignment delete --subscription $sub --role $env:RESPONDER_ROLE_GUID --scope "/subscriptions/$sub" --output none
        if ($LASTEXITCODE -ne 0) { Warn "role assignments of $($env:RESPONDER_ROLE_GUID) on $sub" }
    }
    if ($env:RESPONDER_POLICY_ASSIGNMENT) {
        az policy assignment delete --name $env:RESPONDER_POLICY_ASSIGNMENT --scope "/subscriptions/$sub" --output none
        if ($LASTEXITCODE -ne 0) { Warn "policy assignment $($env:RESPONDER_POLICY_ASSIGNMENT) on $sub" }
    }
    $group = $env:EVENTGRID_EVENTS_RESOURCE_GROUP
    if ($sub -ne $own -and $group -and (az group exists --subscription $sub --name $group 2>$null) -eq 'true') {
        $groupTags = az group show --subscription $sub --name $group --query tags --output json 2>$null | ConvertFrom-Json
        if ($groupTags -and $groupTags.'azd-env-name' -eq $env:AZURE_ENV_NAME) {
            Write-Host "Deleting resource group $group (system topic) in subscription $sub"
            az group delete --subscription $sub --name $group --yes --no-wait
            if ($LASTEXITCODE -ne 0) { Warn "resource group $group in $sub" }
        }
    }
}

if ($env:RESPONDER_ROLE_GUID) {
    Write-Host 'Deleting the responder role definition'
    az role definition delete --name $env:RESPONDER_ROLE_GUID --scope "/subscriptions/$own" --output none
    if ($LASTEXITCODE -ne 0) { Warn "role definition $($env:RESPONDER_ROLE_GUID)" }
}
if ($env:AZURE_RESOURCE_GROUP) {
    foreach ($roleName in "ACR DLP email sender ($($env:AZURE_RESOURCE_GROUP))", "ACR DLP host storage lister ($($env:AZURE_RESOURCE_GROUP))") {
        $role = az role definition list --subscription $own --custom-role-only true `
            --name $roleName --query '[0].name' --output tsv 2>$null
        if ($role) {
            az role definition delete --name $role --scope "/subscriptions/$own" --output none
            if ($LASTEXITCODE -ne 0) { Warn "role definition $roleName" }
        }
    }
}
exit 0
