#!/bin/sh
# azd postdeploy hook: subscribe the Event Grid function to every monitored subscription's system topic.
# Runs after `azd deploy` (and `azd up`) because Event Grid refuses a function endpoint that does not exist yet.
# Then, with App Service authentication on, checks that it refuses a caller without a token and that it accepts an
# allowed one (or refuses one outside the allowed lists).
# Needs the Azure CLI signed in (`az login`) to the same tenant as azd. Idempotent: safe to re-run.
set -eu
. "$(dirname "$0")/common.sh"

: "${AZURE_ENV_NAME:?run through azd (azd up / azd deploy / azd hooks run postdeploy)}"
: "${AZURE_SUBSCRIPTION_ID:?}" "${AZURE_LOCATION:?}" "${AZURE_RESOURCE_GROUP:?}" "${AZURE_FUNCTION_APP_NAME:?}"
: "${EVENTGRID_SYSTEM_TOPIC_IDS:?}" "${EVENTGRID_DEADLETTER_STORAGE_ACCOUNT:?}" "${EVENTGRID_DEADLETTER_CONTAINER:?}"
: "${EVENTGRID_SUBSCRIPTION_NAME:?}" "${EVENTGRID_DIAGNOSTIC_SETTING_NAME:?}" "${EVENTGRID_EVENTS_RESOURCE_GROUP:?}"
: "${ALERT_NAME_PREFIX:?}" "${LOG_ANALYTICS_WORKSPACE_ID:?}" "${RESPONDER_RESOURCE_TOKEN:?}"
FUNCTION_NAME=on_registry_event
TOPIC_API=2025-02-15

# The function shows up once the host has started and indexed the code. A host that cannot reach its storage never
# gets there: say which storage access it had and what az answered, not only that the function is missing.
echo "Waiting for function ${FUNCTION_NAME} in ${AZURE_FUNCTION_APP_NAME}..."
found=""
last_error=""
for _ in $(seq 1 30); do
  if last_error=$(az functionapp function show --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$AZURE_RESOURCE_GROUP" \
      --name "$AZURE_FUNCTION_APP_NAME" --function-name "$FUNCTION_NAME" --query name --output tsv 2>&1 >/dev/null); then
    found=yes
    break
  fi
  sleep 10
done
if [ -z "$found" ]; then
  echo "error: function ${FUNCTION_NAME} not found after 5 minutes; the last answer of az was:" >&2
  printf '%s\n' "$last_error" | sed 's/^/  /' >&2
  if [ "${RESPONDER_HOST_STORAGE_ACCESS:-least-privilege}" = "least-privilege" ]; then
    echo "  The host ran with the least-privilege storage roles (Storage Blob Data Contributor on its three containers" >&2
    echo "  and the 'host storage lister' role). If its log stream shows 403 AuthorizationPermissionMismatch from storage," >&2
    echo "  fall back to Microsoft's documented role: azd env set HOST_STORAGE_ACCESS blob-data-owner && azd provision" >&2
    echo "  && azd hooks run postdeploy (docs/deploy.md, Host storage access)." >&2
  else
    echo "  The host already had Storage Blob Data Owner on its storage account (HOST_STORAGE_ACCESS=blob-data-owner):" >&2
    echo "  storage permissions are not the cause; check the log stream, the private endpoints and DNS (VNET_ENABLED)." >&2
  fi
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
      die "${topic_id} has only a user-assigned identity; enable its system-assigned identity too, then re-run"
      ;;
  esac
done

echo "Deploying the event subscriptions (infra/eventgrid.bicep)..."
az deployment sub create \
  --subscription "$AZURE_SUBSCRIPTION_ID" \
  --name "$(deployment_name eventgrid "$RESPONDER_RESOURCE_TOKEN")" \
  --location "$AZURE_LOCATION" \
  --template-file infra/eventgrid.bicep \
  --parameters \
    systemTopicIds="$EVENTGRID_SYSTEM_TOPIC_IDS" \
    appResourceGroupName="$AZURE_RESOURCE_GROUP" \
    eventsResourceGroupName="$EVENTGRID_EVENTS_RESOURCE_GROUP" \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    eventSubscriptionName="$EVENTGRID_SUBSCRIPTION_NAME" \
    diagnosticSettingName="$EVENTGRID_DIAGNOSTIC_SETTING_NAME" \
    workspaceId="$LOG_ANALYTICS_WORKSPACE_ID" \
    deadLetterStorageAccountName="$EVENTGRID_DEADLETTER_STORAGE_ACCOUNT" \
    deadLetterContainerName="$EVENTGRID_DEADLETTER_CONTAINER" \
    actionGroupId="${ALERT_ACTION_GROUP_ID:-}" \
    alertNamePrefix="$ALERT_NAME_PREFIX" \
    environmentName="$AZURE_ENV_NAME" \
  --output none
echo "Event subscriptions ready: registry writes in every monitored subscription now reach ${FUNCTION_NAME}."

[ "${AZURE_FUNCTION_APP_AUTH:-}" = "entra-id" ] && [ -n "${AZURE_FUNCTION_APP_URL:-}" ] || exit 0

# App Service authentication on Flex Consumption: the preview-era Flex Consumption page said "EasyAuth isn't
# currently supported. Unauthenticated callers currently aren't blocked when EasyAuth is enabled". Trust it only
# once it is seen to refuse a caller without a token. Every probe carries the function key, so that a 401 can only
# come from App Service authentication (the Functions host answers 401 to a missing key as well), and posts `{}`:
# the app answers 400 without any Azure call, so a probe that gets through changes nothing.
key=$(az functionapp keys list --subscription "$AZURE_SUBSCRIPTION_ID" --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "$AZURE_FUNCTION_APP_NAME" --query functionKeys.default --output tsv)
# probe [TOKEN]: the HTTP status of POST /api/recheck; the key and the token travel on stdin, never on a command line.
probe() {
  {
    printf 'header = "x-functions-key: %s"\n' "$key"
    [ -z "${1:-}" ] || printf 'header = "Authorization: Bearer %s"\n' "$1"
  } | curl --silent --output /dev/null --write-out '%{http_code}' --max-time 30 --request POST --config - \
    --header 'Content-Type: application/json' --data '{}' "${AZURE_FUNCTION_APP_URL}/api/recheck" || echo 000
}
status=$(probe)
if [ "$status" != "401" ]; then
  echo "error: App Service authentication is configured but an unauthenticated POST /api/recheck got HTTP ${status}, not 401:" >&2
  echo "  Easy Auth is not enforced on this app; do not rely on X-MS-CLIENT-PRINCIPAL-* headers. Unset AUTH_CLIENT_ID" >&2
  echo "  (azd env set AUTH_CLIENT_ID '') and put Entra ID in front with API Management instead (docs/deploy.md)." >&2
  exit 1
fi
echo "App Service authentication refuses callers without a token (HTTP 401)."

# The deployer's own token: App Service must accept it if the allowed lists name it, and refuse it (403) otherwise.
audience="api://${AZURE_FUNCTION_APP_AUTH_CLIENT_ID:-}"
token=$(az account get-access-token --scope "${audience}/user_impersonation" --query accessToken --output tsv 2>/dev/null || true)
if [ -z "$token" ]; then
  warn "no token for ${audience} (az account get-access-token; the Azure CLI must be an authorized client application of that app registration): whether an allowed token is accepted was not checked"
  exit 0
fi
payload=$(printf '%s' "$token" | cut -d. -f2 | tr '_-' '/+')
case $((${#payload} % 4)) in
  2) payload="${payload}==" ;;
  3) payload="${payload}=" ;;
esac
claims=$(printf '%s' "$payload" | base64 -d 2>/dev/null | tr ',' '\n' || true)
claim() { printf '%s\n' "$claims" | sed -n "s/^[{ ]*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" | head -n 1; }
oid=$(claim oid)
app=$(claim appid)
[ -n "$app" ] || app=$(claim azp)
allowed=yes
[ -z "${AZURE_FUNCTION_APP_AUTH_APPLICATIONS:-}" ] || in_list "$app" "$AZURE_FUNCTION_APP_AUTH_APPLICATIONS" || allowed=""
[ -z "${AZURE_FUNCTION_APP_AUTH_PRINCIPALS:-}" ] || in_list "$oid" "$AZURE_FUNCTION_APP_AUTH_PRINCIPALS" || allowed=""
status=$(probe "$token")
if [ -n "$allowed" ]; then
  case "$status" in
    401 | 403 | 000) die "your token (oid ${oid:-?}, application ${app:-?}) is on the allowed lists but POST /api/recheck got HTTP ${status}: App Service authentication refuses allowed callers (check AUTH_CLIENT_ID, AUTH_TENANT_ID and the app registration's Application ID URI)" ;;
  esac
  echo "App Service authentication accepts an allowed token (oid ${oid:-?}, application ${app:-?}: HTTP ${status} from the app)."
else
  [ "$status" = "403" ] || die "your token (oid ${oid:-?}, application ${app:-?}) is outside AUTH_ALLOWED_PRINCIPALS / AUTH_ALLOWED_APPLICATIONS but POST /api/recheck got HTTP ${status}, not 403: the authorization policy is not enforced"
  echo "App Service authentication refuses a token outside the allowed lists (HTTP 403). Yours is not on them, so acceptance of an allowed token was not shown: run azd hooks run postdeploy as an allowed principal."
fi
