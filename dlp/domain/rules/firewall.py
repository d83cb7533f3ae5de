from dlp.domain.model import FAIL, P_DEFAULT_ACTION, P_PUBLIC, PASS, Registry
from dlp.domain.rules.base import LEARN_FIREWALL, POLICY, PSRULE, Rule, Verdict, register


@register
class Firewall(Rule):
    id = "DLP.ACR.Firewall"
    severity = "medium"
    synopsis = "Network access must be limited to trusted clients: public endpoint off or firewall denying by default."
    recommendation = "Set publicNetworkAccess to Disabled, or networkRuleSet.defaultAction to Deny with explicit allow rules."
    links = (LEARN_FIREWALL, PSRULE + "Azure.ACR.Firewall/", POLICY + "ACR_NetworkRulesExist_AuditDeny.json")
    skus = ("Premium",)
    reads = (P_PUBLIC, P_DEFAULT_ACTION)

    def check(self, registry: Registry) -> Verdict:
        if registry.public_disabled:
            return Verdict(PASS, "publicNetworkAccess is Disabled")
        if registry.network_default_action.lower() == "deny":
            return Verdict(PASS, "networkRuleSet.defaultAction is Deny")
        return Verdict(FAIL, f"publicNetworkAccess is {registry.public_network_access} and networkRuleSet.defaultAction "
                             f"is {registry.network_default_action}; must be Disabled or Deny")
