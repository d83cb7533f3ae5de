from dlp.domain.model import FAIL, P_PRIVATE_ENDPOINTS, PASS, Registry
from dlp.domain.rules.base import LEARN_PRIVATE_LINK, POLICY, Rule, Verdict, register


@register
class PrivateEndpoint(Rule):
    id = "DLP.ACR.PrivateEndpoint"
    severity = "medium"
    synopsis = "At least one approved private endpoint must exist, so clients keep access when the public endpoint is off."
    recommendation = "Create a private endpoint for the registry and approve its connection."
    links = (LEARN_PRIVATE_LINK, POLICY + "ACR_PrivateEndpointEnabled_Audit.json")
    skus = ("Premium",)
    reads = (P_PRIVATE_ENDPOINTS,)

    def check(self, registry: Registry) -> Verdict:
        approved = registry.approved_private_endpoints
        if approved:
            return Verdict(PASS, f"{len(approved)} approved private endpoint connection(s)")
        if registry.private_endpoints:
            states = ", ".join(f"{pe.name}: {pe.status}" for pe in registry.private_endpoints)
            return Verdict(FAIL, f"no private endpoint connection is Approved ({states}); at least one must be")
        return Verdict(FAIL, "no private endpoint connection; at least one Approved connection is required")
