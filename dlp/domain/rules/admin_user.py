from dlp.domain.model import FAIL, P_ADMIN, PASS, Registry
from dlp.domain.rules.base import LEARN_AUTH, POLICY, PSRULE, Rule, Verdict, register


@register
class AdminUser(Rule):
    id = "DLP.ACR.AdminUser"
    severity = "medium"
    synopsis = "The shared admin account must be off: its password works from anywhere the registry is reachable."
    recommendation = "Set properties.adminUserEnabled to false and use Entra ID identities with RBAC."
    links = (LEARN_AUTH, PSRULE + "Azure.ACR.AdminUser/", POLICY + "ACR_AdminAccountDisabled_AuditDeny.json")
    reads = (P_ADMIN,)

    def check(self, registry: Registry) -> Verdict:
        if registry.admin_user_enabled:
            return Verdict(FAIL, "adminUserEnabled is true; must be false")
        return Verdict(PASS, "adminUserEnabled is false")
