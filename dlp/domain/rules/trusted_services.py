from dlp.domain.model import FAIL, P_BYPASS, PASS, Registry
from dlp.domain.rules.base import LEARN_TRUSTED, Rule, Verdict, register


@register
class TrustedServices(Rule):
    id = "DLP.ACR.TrustedServices"
    severity = "low"
    synopsis = "Trusted Microsoft services can pull and push past the network rules unless the bypass is None."
    recommendation = ("Set properties.networkRuleBypassOptions to None unless a trusted service needs access "
                      "(Defender for Containers scanning does: then accept this finding).")
    links = (LEARN_TRUSTED,)
    skus = ("Premium",)
    reads = (P_BYPASS,)

    def check(self, registry: Registry) -> Verdict:
        if registry.network_bypass_options.lower() == "none":
            return Verdict(PASS, "networkRuleBypassOptions is None")
        return Verdict(FAIL, f"networkRuleBypassOptions is {registry.network_bypass_options}; should be None")
