from dlp.domain.model import FAIL, P_ANONYMOUS, PASS, Registry
from dlp.domain.rules.base import LEARN_ANONYMOUS, POLICY, PSRULE, Rule, Verdict, register


@register
class AnonymousPull(Rule):
    id = "DLP.ACR.AnonymousPull"
    severity = "medium"
    synopsis = "Anonymous pull must be off: anyone who reaches the registry could read every artifact."
    recommendation = "Set properties.anonymousPullEnabled to false."
    links = (LEARN_ANONYMOUS, PSRULE + "Azure.ACR.AnonymousAccess/", POLICY + "ACR_AnonymousPullDisabled_AuditDeny.json")
    skus = ("Standard", "Premium")
    reads = (P_ANONYMOUS,)

    def check(self, registry: Registry) -> Verdict:
        if registry.anonymous_pull_enabled:
            return Verdict(FAIL, "anonymousPullEnabled is true; must be false")
        return Verdict(PASS, "anonymousPullEnabled is false")
