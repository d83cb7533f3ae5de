#!/bin/sh
# azd preprovision hook: what must hold, or exist, before infra/main.bicep is deployed. In order:
# 1. the inputs (environment name, subscription IDs) are checked before any call;
# 2. the Azure CLI is signed in to the tenant of every monitored subscription (Resource Graph silently answers less
#    for another tenant, and an existing topic would be missed);
# 3. the region offers Flex Consumption;
# 4. the resource provider Microsoft.App is registered when VNet integration is on (the portal and az register it
#    when they create the app; an ARM deployment does not, and the first `azd up` fails without it);
# 5. the subscription-level Event Grid system topic each monitored subscription may already have (Defender for Cloud
#    and other tools create one; only one may exist per subscription) is found with one Resource Graph query and
#    stored as DISCOVERED_SYSTEM_TOPIC_IDS (main.parameters.json), so that main.bicep reuses it;
#    EXISTING_SYSTEM_TOPIC_IDS, if you set it, still wins per subscription;
# 6. infra/bootstrap.bicep creates the custom role definitions and the resource groups of the other monitored
#    subscriptions, and the hook waits until the definitions read back (they replicate with a delay).
# Needs the Azure CLI signed in (`az login`). Idempotent.
set -eu
. "$(dirname "$0")/common.sh"

: "${AZURE_ENV_NAME:?run through azd (azd up / azd provision)}"
: "${AZURE_SUBSCRIPTION_ID:?run through azd (azd up / azd provision)}"
: "${AZURE_LOCATION:?choose a region first: azd env set AZURE_LOCATION <region>}"
case "$AZURE_ENV_NAME" in
  *[!A-Za-z0-9_-]*) die "AZURE_ENV_NAME may hold only letters, digits, - and _" ;;
esac
own=$(lower "$AZURE_SUBSCRIPTION_ID")
case "$own" in
  *[!0-9a-f-]*) die "AZURE_SUBSCRIPTION_ID '${AZURE_SUBSCRIPTION_ID}' is not a subscription ID" ;;
esac

# MONITORED_SUBSCRIPTION_IDS unset, empty or only blanks and commas: the deployment subscription (as main.bicep).
subscriptions=""
for sub in $(lower "${MONITORED_SUBSCRIPTION_IDS:-}" | tr ',' ' '); do
  case "$sub" in
    *[!0-9a-f-]*) die "MONITORED_SUBSCRIPTION_IDS: '${sub}' is not a subscription ID" ;;
  esac
  case " $subscriptions " in
    *" $sub "*) ;;
    *) subscriptions="${subscriptions:+${subscriptions} }${sub}" ;;
  esac
done
[ -n "$subscriptions" ] || subscriptions=$own

# 2. The tenant: AZURE_TENANT_ID (set by a previous `azd provision`, or by you) or the deployment subscription's.
if ! signed_in=$(az account show --query tenantId --output tsv); then
  die "the Azure CLI is not signed in: az login --tenant <the tenant of ${own}>"
fi
signed_in=$(lower "$signed_in")
target=$(lower "${AZURE_TENANT_ID:-}")
for sub in $own $subscriptions; do
  tenant=$(lower "$(az account show --subscription "$sub" --query tenantId --output tsv 2>/dev/null || true)")
  [ -n "$tenant" ] || die "the Azure CLI (signed in to tenant ${signed_in}) does not know subscription ${sub}: az login --tenant <its tenant>, or fix MONITORED_SUBSCRIPTION_IDS"
  [ -n "$target" ] || target=$tenant
  [ "$tenant" = "$target" ] || die "subscription ${sub} belongs to tenant ${tenant}, not ${target}: one deployment watches one tenant"
done
[ "$signed_in" = "$target" ] || die "the Azure CLI is signed in to tenant ${signed_in}, the subscriptions belong to ${target}: az login --tenant ${target} (Resource Graph answers only for the signed-in tenant, without an error)"

# 3. Flex Consumption regions change: main.bicep's @allowed list is a snapshot, the CLI asks the platform.
if flex=$(az functionapp list-flexconsumption-locations --query "[].name" --output tsv 2>/dev/null); then
  if ! printf '%s\n' "$flex" | tr 'A-Z' 'a-z' | grep -qx "$(lower "$AZURE_LOCATION")"; then
    die "AZURE_LOCATION '${AZURE_LOCATION}' does not offer Flex Consumption; pick one of: $(printf '%s' "$flex" | tr '\n' ' ')"
  fi
fi

# 4. Microsoft.App (the subnet delegation Microsoft.App/environments of a VNet-integrated Flex Consumption app).
if [ "$(lower "${VNET_ENABLED:-true}")" != "false" ]; then
  state=$(az provider show --namespace Microsoft.App --subscription "$own" --query registrationState --output tsv 2>/dev/null || true)
  if [ "$state" != "Registered" ]; then
    echo "Registering the resource provider Microsoft.App in subscription ${own} (VNet integration needs it)..."
    az provider register --namespace Microsoft.App --subscription "$own" --wait --output none \
      || die "could not register Microsoft.App: someone with Contributor on the subscription runs: az provider register --namespace Microsoft.App --subscription ${own} (or deploy without VNet integration: azd env set VNET_ENABLED false)"
  fi
fi

# 5. Existing subscription system topics. Topics this environment created itself (tag azd-env-name) are not
# "existing": main.bicep owns them.
arm=$(az cloud show --query endpoints.resourceManager --output tsv)
json_list=$(printf '"%s",' $subscriptions)
query="resources | where type =~ 'microsoft.eventgrid/systemtopics' | where tostring(properties.topicType) =~ 'Microsoft.Resources.Subscriptions' | where tostring(tags['azd-env-name']) != '${AZURE_ENV_NAME}' | project id, subscriptionId"
body=$(printf '{"subscriptions": [%s], "query": "%s", "options": {"resultFormat": "objectArray"}}' "${json_list%,}" "$query")

echo "Looking for existing subscription system topics in: ${subscriptions}"
if ! found=$(az rest --method post --url "${arm%/}/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01" \
    --body "$body" --query "data[].id" --output tsv); then
  die "the Resource Graph query failed (is the Azure CLI signed in? az login --tenant ${target})"
fi
ids=$(printf '%s\n' "$found" | grep -v '^$' | paste -sd, - || true)
for id in $(printf '%s' "$ids" | tr ',' ' '); do
  echo "  reuse ${id}"
done
[ -n "$ids" ] || echo "  none found: a new system topic is created in each monitored subscription"
azd env set DISCOVERED_SYSTEM_TOPIC_IDS "$ids"

# 6. Role definitions and the other subscriptions' resource groups, then wait until every definition reads back three
# times in a row where it will be assigned (one read may hit a replica that has it while the next does not).
echo "Deploying the role definitions and resource groups main.bicep assigns and uses (infra/bootstrap.bicep)..."
if ! guids=$(az deployment sub create --subscription "$own" --name "$(deployment_name bootstrap "$AZURE_ENV_NAME")" \
    --location "$AZURE_LOCATION" --template-file infra/bootstrap.bicep \
    --parameters environmentName="$AZURE_ENV_NAME" location="$AZURE_LOCATION" \
      monitoredSubscriptionIds="$(printf '%s' "$subscriptions" | tr ' ' ',')" \
      registryLogsWorkspaceId="${REGISTRY_LOGS_WORKSPACE_ID:-}" \
    --query properties.outputs.customRoleGuids.value --output tsv); then
  die "deployment of infra/bootstrap.bicep failed (creating role definitions needs Owner or User Access Administrator)"
fi
responder_guid=$(printf '%s' "$guids" | cut -d, -f1)
logs_guid=$(printf '%s' "$guids" | cut -s -d, -f4)            # the registry-logs reader, when REGISTRY_LOGS_WORKSPACE_ID is set
logs_sub=$(printf '%s' "${REGISTRY_LOGS_WORKSPACE_ID:-}" | cut -d/ -f3)
for guid in $(printf '%s' "$guids" | tr ',' ' '); do
  scopes=$own
  [ "$guid" != "$responder_guid" ] || scopes=$(printf '%s\n' $own $subscriptions | sort -u)
  [ -z "$logs_guid" ] || [ "$guid" != "$logs_guid" ] || scopes=$logs_sub
  for sub in $scopes; do
    seen=0
    tries=0
    while [ "$seen" -lt 3 ]; do
      if [ -n "$(az role definition list --name "$guid" --scope "/subscriptions/${sub}" --query "[0].name" --output tsv 2>/dev/null || true)" ]; then
        seen=$((seen + 1))
      else
        seen=0
      fi
      tries=$((tries + 1))
      if [ "$tries" -ge 40 ]; then
        warn "role definition ${guid} does not read back in subscription ${sub} after ${tries} tries; if provisioning fails with RoleDefinitionDoesNotExist, run azd provision again"
        break
      fi
      [ "$seen" -ge 3 ] || sleep 5
    done
  done
done
echo "Role definitions in place: ${guids}"
