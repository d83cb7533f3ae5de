#!/bin/sh
# azd postdown hook: remove what `azd down` leaves. azd deletes the resource groups main.bicep created, looked up in
# AZURE_SUBSCRIPTION_ID only; everything else is removed here, from what infra/hooks/predown.* recorded under
# ACR_DLP_DOWN_<name> (azd has removed main.bicep's outputs from the environment by now):
# - on reused system topics: this environment's event subscription and diagnostic setting (its delivery alerts were
#   in its own resource groups);
# - in the other monitored subscriptions: the resource group infra/bootstrap.bicep created (tagged with this
#   environment), unless its system topic serves other event subscriptions: then only ours is removed from it;
# - in every monitored subscription: the custom roles' assignments and the policy assignment;
# - the custom role definitions.
# Best effort: each step reports what it could not remove and goes on. Re-run with `azd hooks run postdown`.
set -u
. "$(dirname "$0")/common.sh"

: "${AZURE_ENV_NAME:?run through azd (azd down)}"
: "${AZURE_SUBSCRIPTION_ID:?run through azd (azd down)}"
# What predown recorded, or the output itself (`azd hooks run postdown` before `azd down`).
recorded() { eval "printf '%s' \"\${ACR_DLP_DOWN_$1:-\${$1:-}}\""; }
left() { warn "$*; remove it by hand"; }

own=$(lower "$AZURE_SUBSCRIPTION_ID")
subscriptions=$(recorded RESPONDER_MONITORED_SUBSCRIPTIONS | tr ',' ' ')
responder_role=$(recorded RESPONDER_ROLE_GUID)
roles=$(recorded RESPONDER_CUSTOM_ROLE_GUIDS | tr ',' ' ')
[ -n "$roles" ] || roles=$responder_role
logs_role=$(recorded RESPONDER_REGISTRY_LOGS_ROLE)          # <GUID>@<subscription of the registry-logs workspace>
[ -z "$logs_role" ] || roles="$roles ${logs_role%@*}"
policy=$(recorded RESPONDER_POLICY_ASSIGNMENT)
topics=$(recorded EVENTGRID_SYSTEM_TOPIC_IDS)
reused=$(recorded EVENTGRID_REUSED_TOPIC_IDS)
events_group=$(recorded EVENTGRID_EVENTS_RESOURCE_GROUP)
event_subscription=$(recorded EVENTGRID_SUBSCRIPTION_NAME)
diagnostic_setting=$(recorded EVENTGRID_DIAGNOSTIC_SETTING_NAME)
if [ -z "$subscriptions" ]; then
  left "nothing recorded by the predown hook (was it skipped?): the custom roles 'ACR DLP ... (${AZURE_ENV_NAME}-...)', their assignments and the groups ${events_group:-rg-${AZURE_ENV_NAME}-dlp-events} in other subscriptions remain"
  exit 0
fi

# unsubscribe TOPIC_ID: this environment's event subscription and diagnostic setting off a topic that stays.
unsubscribe() {
  echo "Removing event subscription ${event_subscription} and diagnostic setting ${diagnostic_setting} from $(echo "$1" | cut -d/ -f9)"
  az eventgrid system-topic event-subscription delete --subscription "$(echo "$1" | cut -d/ -f3)" \
    --resource-group "$(echo "$1" | cut -d/ -f5)" --system-topic-name "$(echo "$1" | cut -d/ -f9)" \
    --name "$event_subscription" --yes --output none || left "event subscription ${event_subscription} on ${1}"
  az monitor diagnostic-settings delete --name "$diagnostic_setting" --resource "$1" --output none \
    || left "diagnostic setting ${diagnostic_setting} on ${1}"
}

# others_on TOPIC_ID: the names of the other event subscriptions on a topic (empty when none, or when it is gone).
others_on() {
  az eventgrid system-topic event-subscription list --subscription "$(echo "$1" | cut -d/ -f3)" \
    --resource-group "$(echo "$1" | cut -d/ -f5)" --system-topic-name "$(echo "$1" | cut -d/ -f9)" \
    --query "[].name" --output tsv 2>/dev/null | while read -r name; do
      [ "$(lower "$name")" = "$(lower "$event_subscription")" ] || printf '%s ' "$name"
    done
}

for topic_id in $(printf '%s' "$reused" | tr ',' ' '); do
  [ -z "$event_subscription" ] || unsubscribe "$topic_id"
done

for sub in $subscriptions; do
  if [ -n "$policy" ]; then
    az policy assignment delete --name "$policy" --scope "/subscriptions/${sub}" --output none \
      || left "policy assignment ${policy} on ${sub}"
  fi
  if [ "$sub" = "$own" ] || [ -z "$events_group" ]; then continue; fi
  [ "$(az group exists --subscription "$sub" --name "$events_group" 2>/dev/null)" = "true" ] || continue
  env_tag=$(az group show --subscription "$sub" --name "$events_group" --query "tags.\"azd-env-name\"" --output tsv 2>/dev/null)
  if [ "$env_tag" != "$AZURE_ENV_NAME" ]; then
    left "resource group ${events_group} in ${sub} is not tagged azd-env-name=${AZURE_ENV_NAME}: kept"
    continue
  fi
  # The topic this environment created there, if any: another environment may have reused it since.
  shared=""
  for topic_id in $(printf '%s' "$topics" | tr ',' ' '); do
    case "$(lower "$topic_id")" in
      "/subscriptions/${sub}/resourcegroups/$(lower "$events_group")/"*)
        others=$(others_on "$topic_id" | sed 's/ $//')
        if [ -n "$others" ]; then
          shared=$topic_id
          warn "system topic ${topic_id} also serves ${others}: resource group ${events_group} in ${sub} is kept"
          unsubscribe "$topic_id"
        fi ;;
    esac
  done
  if [ -z "$shared" ]; then
    echo "Deleting resource group ${events_group} (system topic, alerts) in subscription ${sub}"
    az group delete --subscription "$sub" --name "$events_group" --yes --no-wait || left "resource group ${events_group} in ${sub}"
  fi
done

# Assignments first: a role definition that is still assigned cannot be deleted.
for role in $roles; do
  scopes=$own
  [ "$role" != "$responder_role" ] || scopes=$(printf '%s\n' $own $subscriptions | sort -u)
  [ -z "$logs_role" ] || [ "$role" != "${logs_role%@*}" ] || scopes=${logs_role#*@}
  for sub in $scopes; do
    assignments=$(az role assignment list --subscription "$sub" --role "$role" --all --query "[].id" --output tsv 2>/dev/null || true)
    if [ -n "$assignments" ]; then
      echo "Removing the assignments of role ${role} in subscription ${sub}"
      # shellcheck disable=SC2086  # one ID per word
      az role assignment delete --ids $assignments --output none || left "assignments of role ${role} in ${sub}"
    fi
  done
  echo "Deleting role definition ${role}"
  home=$own
  [ -z "$logs_role" ] || [ "$role" != "${logs_role%@*}" ] || home=${logs_role#*@}
  az role definition delete --name "$role" --scope "/subscriptions/${home}" --output none || left "role definition ${role}"
done
exit 0
