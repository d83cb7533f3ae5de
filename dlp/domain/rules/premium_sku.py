from dlp.domain.model import FAIL, P_SKU, PASS, Registry
from dlp.domain.rules.base import LEARN_SKUS, POLICY, PSRULE, Rule, Verdict, register


@register
class PremiumSku(Rule):
    id = "DLP.ACR.PremiumSku"
    severity = "high"
    synopsis = "Only Premium registries support private endpoints, network rules and disabling exports."
    recommendation = "Upgrade the registry to the Premium SKU (az acr update --sku Premium)."
    links = (LEARN_SKUS, PSRULE + "Azure.ACR.MinSku/", POLICY + "ACR_SkuSupportsPrivateEndpoints_AuditDeny.json")
    reads = (P_SKU,)

    def check(self, registry: Registry) -> Verdict:
        if registry.premium:
            return Verdict(PASS, "sku.name is Premium")
        return Verdict(FAIL, f"sku.name is {registry.sku}; must be Premium")
