from dlp.domain.model import FAIL, P_EXPORT, P_PUBLIC, P_SKU, PASS, Registry
from dlp.domain.rules.base import LEARN_DLP, POLICY, PSRULE, Rule, Verdict, register


@register
class ExportPolicy(Rule):
    id = "DLP.ACR.ExportPolicy"
    severity = "high"
    synopsis = "Exports (az acr import out of the registry, export pipelines) must be disabled on a network-restricted registry."
    recommendation = ("Set properties.policies.exportPolicy.status to disabled and properties.publicNetworkAccess "
                      "to Disabled (Premium SKU only).")
    links = (LEARN_DLP, PSRULE + "Azure.ACR.ExportPolicy/", POLICY + "ACR_ExportPolicy_AuditDeny.json")
    remediable = True
    reads = (P_EXPORT, P_PUBLIC, P_SKU)

    def check(self, registry: Registry) -> Verdict:
        problems = []
        if not registry.exports_disabled:
            problems.append(f"exportPolicy.status is {registry.export_policy}; must be disabled")
        if not registry.public_disabled:
            problems.append(f"publicNetworkAccess is {registry.public_network_access}; must be Disabled")
        if not registry.premium:
            problems.append(f"sku.name is {registry.sku}; exports can only be disabled on Premium")
        if problems:
            return Verdict(FAIL, "; ".join(problems))
        return Verdict(PASS, "exportPolicy.status is disabled and publicNetworkAccess is Disabled")
