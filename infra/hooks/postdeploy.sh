#!/bin/sh
# azd postdeploy hook: subscribe the Event Grid function to every monitored subscription's system topic.
# Runs after `azd deploy` (and `azd up`) because Event Grid refuses a function endpoint that does not exist yet.
# Needs the Azure CLI signed in (`az login`) to the same tenant as azd. Idempotent: safe to re-run.
set -eu

: "${AZURE_ENV_NAME:?run through azd (azd up / azd deploy / azd hooks run postdeploy)}"
: "${AZURE_SUBSCRIPTION_ID:?}" "${AZURE_LOCATION:?}" "${AZURE_RESOURCE_GROUP:?}" "${AZURE_FUNCTION_APP_NAME:?}"
: "${EVENTGRID_SYSTEM_TOPIC_IDS:?}" "${EVENTGRID_DEADLETTER_STORAGE_ACCOUNT:?}" "${EVENTGRID_DEADLETTER_CONTAINER:?}"
: "${ALERT_NAME_PREFIX:?}"
FUNCTION_NAME=on_registry_event
TOPIC_API=2025-02-15

echo "Waiting for function ${FUNCTION_NAME} in ${AZURE_FUNCTION_APP_NAME}..."
found=""
for _ in $(seq 1 30); do
  if az functionapp function show --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$AZURE_RESOURCE_GROUP" \
      --name "$AZURE_FUNCTION_APP_NAME" --function-name "$FUNCTION_NAME" --query name --output tsv >/dev/null 2>&1; then
    found=yes
    break
  fi
  sleep 10
done
if [ -z "$found" ]; then
  echo "error: function ${FUNCTION_NAME} not found after 5 minutes; check the deployment, then run: azd hooks run postdeploy" >&2
  exit 1
fi

# A reused system topic needs a system-assigned identity to write dead letters (shared keys are off).
for topic_id in $(printf '%s' "${EVENTGRID_REUSED_TOPIC_IDS:-}" | tr ',' ' '); do
  identity_type=$(az rest --method get --url "${topic_id}?api-version=${TOPIC_API}" --query "identity.type" --output tsv 2>/dev/null || true)
  case "$identity_type" in
    *SystemAssigned*) ;;
    "" | None)
      echo "Enabling the system-assigned identity of ${topic_id}"
      az rest --method patch --url "${topic_id}?api-version=${TOPIC_API}" --body '{"identity": {"type": "SystemAssigned"}}' --output none
      ;;
    *)
      echo "error: ${topic_id} has only a user-assigned identity; enable its system-assigned identity too, then re-run" >&2
      exit 1
      ;;
  esac
done

echo "Deploying the event subscriptions (infra/eventgrid.bicep)..."
az deployment sub create \
  --subscription "$AZURE_SUBSCRIPTION_ID" \
  --name "acr-dlp-eventgrid-${AZURE_ENV_NAME}" \
  --location "$AZURE_LOCATION" \
  --template-file infra/eventgrid.bicep \
  --parameters \
    systemTopicIds="$EVENTGRID_SYSTEM_TOPIC_IDS" \
    appResourceGroupName="$AZURE_RESOURCE_GROUP" \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    deadLetterStorageAccountName="$EVENTGRID_DEADLETTER_STORAGE_ACCOUNT" \
    deadLetterContainerName="$EVENTGRID_DEADLETTER_CONTAINER" \
    actionGroupId="${ALERT_ACTION_GROUP_ID:-}" \
    alertNamePrefix="$ALERT_NAME_PREFIX" \
    environmentName="$AZURE_ENV_NAME" \
  --output none
echo "Event subscriptions ready: registry writes in every monitored subscription now reach ${FUNCTION_NAME}."

# App Service authentication on Flex Consumption: the preview-era Flex Consumption page said "EasyAuth isn't
# currently supported. Unauthenticated callers currently aren't blocked when EasyAuth is enabled". Trust it only
# once it is seen to refuse a caller without a token. The probe carries the function key, so that a 401 can only
# come from App Service authentication (the Functions host answers 401 to a missing key as well).
if [ "${AZURE_FUNCTION_APP_AUTH:-}" = "entra-id" ] && [ -n "${AZURE_FUNCTION_APP_URL:-}" ]; then
  key=$(az functionapp keys list --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "$AZURE_FUNCTION_APP_NAME" --query functionKeys.default --output tsv)
  status=$(printf 'header = "x-functions-key: %s"\n' "$key" | curl --silent --output /dev/null --write-out '%{http_code}' \
    --max-time 30 --request POST --config - \
    --header 'Content-Type: application/json' --data '{}' "${AZURE_FUNCTION_APP_URL}/api/recheck" || echo 000)
  if [ "$status" != "401" ]; then
    echo "error: App Service authentication is configured but an unauthenticated POST /api/recheck got HTTP ${status}, not 401:" >&2
    echo "  Easy Auth is not enforced on this app; do not rely on X-MS-CLIENT-PRINCIPAL-* headers. Unset AUTH_CLIENT_ID" >&2
    echo "  (azd env set AUTH_CLIENT_ID '') and put Entra ID in front with API Management instead (docs/deploy.md)." >&2
    exit 1
  fi
  echo "App Service authentication refuses callers without a token (HTTP 401)."
fi
