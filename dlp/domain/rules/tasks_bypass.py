from dlp.domain.model import FAIL, P_TASKS_BYPASS, PASS, Registry
from dlp.domain.rules.base import LEARN_TASKS, Rule, Verdict, register


@register
class TasksBypass(Rule):
    id = "DLP.ACR.TasksBypass"
    severity = "medium"
    synopsis = "ACR Tasks must not bypass the network rules: a task could copy artifacts out."
    recommendation = "Set properties.networkRuleBypassAllowedForTasks to false; run tasks on a dedicated agent pool in the VNet."
    links = (LEARN_TASKS,)
    skus = ("Premium",)
    reads = (P_TASKS_BYPASS,)

    def check(self, registry: Registry) -> Verdict:
        if registry.tasks_bypass:
            return Verdict(FAIL, "networkRuleBypassAllowedForTasks is true; must be false")
        return Verdict(PASS, "networkRuleBypassAllowedForTasks is false")
