"""Rule base class and the catalogue they register into (looked up by ID, like c7n filters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlp.model import ARM_PATHS, NOT_APPLICABLE, UNKNOWN, Finding, Registry

CATALOGUE: dict[str, Rule] = {}

LEARN_DLP = "https://learn.microsoft.com/azure/container-registry/data-loss-prevention"
LEARN_PRIVATE_LINK = "https://learn.microsoft.com/azure/container-registry/container-registry-private-link"
LEARN_FIREWALL = "https://learn.microsoft.com/azure/container-registry/container-registry-access-selected-networks"
LEARN_SKUS = "https://learn.microsoft.com/azure/container-registry/container-registry-skus"
LEARN_TRUSTED = "https://learn.microsoft.com/azure/container-registry/allow-access-trusted-services"
LEARN_AUTH = "https://learn.microsoft.com/azure/container-registry/container-registry-authentication"
LEARN_ANONYMOUS = "https://learn.microsoft.com/azure/container-registry/anonymous-pull-access"
LEARN_DATA_ENDPOINTS = "https://learn.microsoft.com/azure/container-registry/container-registry-dedicated-data-endpoints"
LEARN_TRANSFER = "https://learn.microsoft.com/azure/container-registry/container-registry-transfer-cli"
LEARN_TASKS = "https://learn.microsoft.com/azure/container-registry/manage-network-bypass-policy-for-tasks"
POLICY = "https://github.com/Azure/azure-policy/blob/master/built-in-policies/policyDefinitions/Container%20Registry/"
PSRULE = "https://azure.github.io/PSRule.Rules.Azure/en/rules/"


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


class Rule:
    """One DLP rule: metadata plus a pure check over a snapshot.

    Subclasses set the metadata and implement `check`; `applies` limits SKUs and
    `reads` names the snapshot properties used, so an unresolved template value
    makes the rule `unknown` without each rule repeating that logic.
    """

    id: ClassVar[str]
    severity: ClassVar[str]
    synopsis: ClassVar[str]
    recommendation: ClassVar[str]
    links: ClassVar[tuple[str, ...]] = ()
    remediable: ClassVar[bool] = False
    skus: ClassVar[tuple[str, ...]] = ("Basic", "Standard", "Premium")
    reads: ClassVar[tuple[str, ...]] = ()

    def check(self, registry: Registry) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, registry: Registry) -> Finding:
        if self.skus != Rule.skus:         # SKU-specific; an every-SKU rule applies even to an unknown or odd SKU
            if "sku" in registry.unresolved:
                return self._finding(UNKNOWN, "sku.name cannot be determined (absent, or a template expression)")
            if registry.sku.lower() not in {s.lower() for s in self.skus}:
                return self._finding(NOT_APPLICABLE,
                                     f"applies to {'/'.join(self.skus)} registries; this one is {registry.sku}")
        unresolved = [p for p in self.reads if p in registry.unresolved]
        if unresolved:
            names = ", ".join(ARM_PATHS.get(p, p) for p in unresolved)
            return self._finding(UNKNOWN, f"{names} cannot be determined offline "
                                          "(a template expression, or not declared in the template)")
        verdict = self.check(registry)
        return self._finding(verdict.status, verdict.message)

    def _finding(self, status: str, message: str) -> Finding:
        return Finding(self.id, status, self.severity, self.remediable, message)


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to the catalogue under its stable ID."""
    if cls.id in CATALOGUE:
        raise ValueError(f"duplicate rule ID {cls.id}")
    CATALOGUE[cls.id] = cls()
    return cls


__all__ = ["CATALOGUE", "NOT_APPLICABLE", "Rule", "Verdict", "register"]
