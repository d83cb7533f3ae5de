#!/bin/sh
# azd predown hook, before `azd down` deletes anything:
# 1. refuses when a system topic this environment created also serves other event subscriptions (another environment
#    or tool found it and reused it: only one may exist per subscription). `azd down` deletes this environment's
#    resource group, and the topic with it, and the other subscribers would silently stop receiving events.
#    ACR_DLP_FORCE_DOWN=true deletes it anyway.
# 2. records what infra/hooks/postdown.* needs under ACR_DLP_DOWN_<name>: azd removes every output of main.bicep from
#    the environment once the resources are deleted, before postdown runs (azure-dev cli/azd/pkg/infra/provisioning/
#    manager.go, Destroy: InvalidatedEnvKeys), so postdown would otherwise not know what to clean up.
# Needs the Azure CLI signed in (`az login`).
set -eu
. "$(dirname "$0")/common.sh"

: "${AZURE_ENV_NAME:?run through azd (azd down)}"
ours=$(lower "${EVENTGRID_SUBSCRIPTION_NAME:-}")

blocked=""
for topic_id in $(printf '%s' "${EVENTGRID_SYSTEM_TOPIC_IDS:-}" | tr ',' ' '); do
  if in_list "$topic_id" "${EVENTGRID_REUSED_TOPIC_IDS:-}"; then
    continue   # not ours: postdown removes only our event subscription from it
  fi
  sub=$(echo "$topic_id" | cut -d/ -f3)
  group=$(echo "$topic_id" | cut -d/ -f5)
  topic=$(echo "$topic_id" | cut -d/ -f9)
  names=$(az eventgrid system-topic event-subscription list --subscription "$sub" --resource-group "$group" \
    --system-topic-name "$topic" --query "[].name" --output tsv 2>/dev/null || true)
  others=""
  for name in $names; do
    [ "$(lower "$name")" = "$ours" ] || others="${others:+${others}, }${name}"
  done
  [ -z "$others" ] || blocked="${blocked}  ${topic_id}: ${others}
"
done
if [ -n "$blocked" ]; then
  if [ "$(lower "${ACR_DLP_FORCE_DOWN:-}")" = "true" ]; then
    warn "ACR_DLP_FORCE_DOWN=true: deleting system topics that other event subscriptions use:
${blocked}"
  else
    echo "error: this environment created system topics that other event subscriptions also use; azd down would delete them:" >&2
    printf '%s' "$blocked" >&2
    echo "  Tear down the environments that reuse them first (their azd down removes only their own event subscription)," >&2
    echo "  or delete anyway: ACR_DLP_FORCE_DOWN=true azd down" >&2
    exit 1
  fi
fi

# Without the outputs (nothing provisioned, or a second `azd down`), keep what an earlier run recorded: postdown can be
# re-run with `azd hooks run postdown` after a partial failure.
if [ -z "${RESPONDER_MONITORED_SUBSCRIPTIONS:-}" ]; then
  echo "No outputs of infra/main.bicep in this environment: keeping what an earlier azd down recorded for postdown."
  exit 0
fi
for name in RESPONDER_MONITORED_SUBSCRIPTIONS RESPONDER_ROLE_GUID RESPONDER_CUSTOM_ROLE_GUIDS RESPONDER_REGISTRY_LOGS_ROLE \
    RESPONDER_POLICY_ASSIGNMENT \
    EVENTGRID_SYSTEM_TOPIC_IDS EVENTGRID_REUSED_TOPIC_IDS EVENTGRID_EVENTS_RESOURCE_GROUP EVENTGRID_SUBSCRIPTION_NAME \
    EVENTGRID_DIAGNOSTIC_SETTING_NAME; do
  azd env set "ACR_DLP_DOWN_${name}" "$(eval "printf '%s' \"\${${name}:-}\"")"
done
