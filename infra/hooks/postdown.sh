#!/bin/sh
# azd postdown hook: remove what `azd down` leaves outside the responder's resource group:
# the responder role's assignments on every monitored subscription and the role itself, the policy assignments,
# the event subscription and alerts on reused system topics, and the topics' resource groups in other subscriptions.
# Best effort: each step reports and continues. Needs the Azure CLI signed in (`az login`).
set -u

: "${AZURE_ENV_NAME:?run through azd (azd down)}"
: "${AZURE_SUBSCRIPTION_ID:?}"
EVENT_SUBSCRIPTION=acr-dlp-responder
own=$(printf '%s' "$AZURE_SUBSCRIPTION_ID" | tr 'A-Z' 'a-z')
subscriptions=$(printf '%s' "${RESPONDER_MONITORED_SUBSCRIPTIONS:-}" | tr ',' ' ')
reused=$(printf '%s' "${EVENTGRID_REUSED_TOPIC_IDS:-}" | tr ',' ' ')
warn() { echo "warning: $*; remove it by hand" >&2; }

for topic_id in $reused; do
  sub=$(echo "$topic_id" | cut -d/ -f3)
  group=$(echo "$topic_id" | cut -d/ -f5)
  topic=$(echo "$topic_id" | cut -d/ -f9)
  echo "Removing event subscription ${EVENT_SUBSCRIPTION} and its alerts from reused topic ${topic}"
  az eventgrid system-topic event-subscription delete --subscription "$sub" --resource-group "$group" \
    --system-topic-name "$topic" --name "$EVENT_SUBSCRIPTION" --yes --output none || warn "event subscription on ${topic_id}"
  for alert in deadlettered dropped; do
    az monitor metrics alert delete --subscription "$sub" --resource-group "$group" \
      --name "${ALERT_NAME_PREFIX:-}${alert}-${topic}" --output none || warn "alert ${ALERT_NAME_PREFIX:-}${alert}-${topic}"
  done
done

for sub in $subscriptions; do
  if [ -n "${RESPONDER_ROLE_GUID:-}" ]; then
    echo "Removing the responder role's assignments on subscription ${sub}"
    az role assignment delete --subscription "$sub" --role "$RESPONDER_ROLE_GUID" --scope "/subscriptions/${sub}" \
      --output none || warn "role assignments of ${RESPONDER_ROLE_GUID} on ${sub}"
  fi
  if [ -n "${RESPONDER_POLICY_ASSIGNMENT:-}" ]; then
    az policy assignment delete --name "$RESPONDER_POLICY_ASSIGNMENT" --scope "/subscriptions/${sub}" \
      --output none || warn "policy assignment ${RESPONDER_POLICY_ASSIGNMENT} on ${sub}"
  fi
  group="${EVENTGRID_EVENTS_RESOURCE_GROUP:-}"
  if [ "$sub" != "$own" ] && [ -n "$group" ] && [ "$(az group exists --subscription "$sub" --name "$group" 2>/dev/null)" = "true" ]; then
    env_tag=$(az group show --subscription "$sub" --name "$group" --query "tags.\"azd-env-name\"" --output tsv 2>/dev/null)
    if [ "$env_tag" = "$AZURE_ENV_NAME" ]; then
      echo "Deleting resource group ${group} (system topic) in subscription ${sub}"
      az group delete --subscription "$sub" --name "$group" --yes --no-wait || warn "resource group ${group} in ${sub}"
    fi
  fi
done

if [ -n "${RESPONDER_ROLE_GUID:-}" ]; then
  echo "Deleting the responder role definition"
  az role definition delete --name "$RESPONDER_ROLE_GUID" --scope "/subscriptions/${own}" --output none \
    || warn "role definition ${RESPONDER_ROLE_GUID}"
fi
if [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
  for role_name in "ACR DLP email sender (${AZURE_RESOURCE_GROUP})" "ACR DLP host storage lister (${AZURE_RESOURCE_GROUP})"; do
    role=$(az role definition list --subscription "$own" --custom-role-only true \
      --name "$role_name" --query "[0].name" --output tsv 2>/dev/null)
    if [ -n "$role" ]; then
      az role definition delete --name "$role" --scope "/subscriptions/${own}" --output none \
        || warn "role definition ${role_name}"
    fi
  done
fi
exit 0
