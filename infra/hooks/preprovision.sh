#!/bin/sh
# azd preprovision hook: find the subscription-level Event Grid system topic each monitored subscription may
# already have (Defender for Cloud and other tools create one; only one may exist per subscription), so that
# infra/main.bicep reuses it instead of failing to create a second. One Resource Graph query over all monitored
# subscriptions; the result goes to the azd environment as DISCOVERED_SYSTEM_TOPIC_IDS (main.parameters.json).
# EXISTING_SYSTEM_TOPIC_IDS, if you set it, still wins per subscription. Needs the Azure CLI signed in (`az login`).
set -eu

: "${AZURE_ENV_NAME:?run through azd (azd up / azd provision)}"
: "${AZURE_SUBSCRIPTION_ID:?}"
case "$AZURE_ENV_NAME" in
  *[!A-Za-z0-9_-]*) echo "error: AZURE_ENV_NAME may hold only letters, digits, - and _" >&2; exit 1 ;;
esac

subscriptions=$(printf '%s' "${MONITORED_SUBSCRIPTION_IDS:-$AZURE_SUBSCRIPTION_ID}" | tr 'A-Z,' 'a-z ' )
json_list=""
for sub in $subscriptions; do
  case "$sub" in
    *[!0-9a-f-]*) echo "error: MONITORED_SUBSCRIPTION_IDS: '${sub}' is not a subscription ID" >&2; exit 1 ;;
  esac
  json_list="${json_list:+${json_list},}\"${sub}\""
done
[ -n "$json_list" ] || json_list="\"$(printf '%s' "$AZURE_SUBSCRIPTION_ID" | tr 'A-Z' 'a-z')\""

# Flex Consumption regions change: main.bicep's @allowed list is a snapshot, the CLI asks the platform.
if flex=$(az functionapp list-flexconsumption-locations --query "[].name" --output tsv 2>/dev/null); then
  if [ -n "${AZURE_LOCATION:-}" ] && ! printf '%s\n' "$flex" | tr 'A-Z' 'a-z' | grep -qx "$(printf '%s' "$AZURE_LOCATION" | tr 'A-Z' 'a-z')"; then
    echo "error: AZURE_LOCATION '${AZURE_LOCATION}' does not offer Flex Consumption; pick one of: $(printf '%s' "$flex" | tr '\n' ' ')" >&2
    exit 1
  fi
fi

arm=$(az cloud show --query endpoints.resourceManager --output tsv)
# Topics this environment created itself (tag azd-env-name) are not "existing": main.bicep owns them.
query="resources | where type =~ 'microsoft.eventgrid/systemtopics' | where tostring(properties.topicType) =~ 'Microsoft.Resources.Subscriptions' | where tostring(tags['azd-env-name']) != '${AZURE_ENV_NAME}' | project id, subscriptionId"
body=$(printf '{"subscriptions": [%s], "query": "%s", "options": {"resultFormat": "objectArray"}}' "$json_list" "$query")

echo "Looking for existing subscription system topics in: ${subscriptions}"
if ! found=$(az rest --method post --url "${arm%/}/providers/Microsoft.ResourceGraph/resources?api-version=2022-10-01" \
    --body "$body" --query "data[].id" --output tsv); then
  echo "error: the Resource Graph query failed (is the Azure CLI signed in to the same tenant as azd? az login)" >&2
  exit 1
fi
ids=$(printf '%s\n' "$found" | grep -v '^$' | paste -sd, - || true)
for id in $(printf '%s' "$ids" | tr ',' ' '); do
  echo "  reuse ${id}"
done
[ -n "$ids" ] || echo "  none found: a new system topic is created in each monitored subscription"
azd env set DISCOVERED_SYSTEM_TOPIC_IDS "$ids"
