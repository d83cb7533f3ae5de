from dlp.domain.model import FAIL, P_DATA_ENDPOINT, PASS, Registry
from dlp.domain.rules.base import LEARN_DATA_ENDPOINTS, Rule, Verdict, register


@register
class DataEndpoint(Rule):
    id = "DLP.ACR.DataEndpoint"
    severity = "low"
    synopsis = "Dedicated data endpoints let firewalls allow this registry's data only, not all of *.blob.core.windows.net."
    recommendation = "Set properties.dataEndpointEnabled to true and allow <name>.<region>.data.azurecr.io in client firewalls."
    links = (LEARN_DATA_ENDPOINTS,)
    skus = ("Premium",)
    reads = (P_DATA_ENDPOINT,)

    def check(self, registry: Registry) -> Verdict:
        if registry.data_endpoint_enabled:
            return Verdict(PASS, "dataEndpointEnabled is true")
        return Verdict(FAIL, "dataEndpointEnabled is false; should be true")
