from dlp.domain.model import FAIL, P_PUBLIC, PASS, Registry
from dlp.domain.rules.base import LEARN_PRIVATE_LINK, POLICY, Rule, Verdict, register


@register
class PublicNetworkAccess(Rule):
    id = "DLP.ACR.PublicNetworkAccess"
    severity = "high"
    synopsis = "The registry must be reachable through private endpoints only."
    recommendation = ("Set properties.publicNetworkAccess to Disabled after an approved private endpoint exists "
                      "(Premium SKU only).")
    links = (LEARN_PRIVATE_LINK, POLICY + "ACR_PublicNetworkAccess_AuditDeny.json",
             POLICY + "ACR_PublicNetworkAccess_Modify.json")
    remediable = True
    reads = (P_PUBLIC,)

    def check(self, registry: Registry) -> Verdict:
        if registry.public_disabled:
            return Verdict(PASS, "publicNetworkAccess is Disabled")
        return Verdict(FAIL, f"publicNetworkAccess is {registry.public_network_access}; must be Disabled")
