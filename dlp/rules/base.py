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

    def __init__(self) -> None:
        # Precomputed once per rule: evaluation runs for every registry of a sweep (bench/bench_rules.py).
        self._sku_specific = tuple(self.skus) != Rule.skus
        self._skus_lower = frozenset(s.lower() for s in self.skus)
        self._findings: dict[tuple[str, str], Finding] = {}

    def check(self, registry: Registry) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, registry: Registry) -> Finding:
        unresolved = registry.unresolved
        if self._sku_specific:             # an every-SKU rule applies even to an unknown or odd SKU
            if "sku" in unresolved:
                return self._finding(UNKNOWN, "sku.name cannot be determined (absent, or a template expression)")
            if registry.sku.lower() not in self._skus_lower:
                return self._finding(NOT_APPLICABLE,
                                     f"applies to {'/'.join(self.skus)} registries; this one is {registry.sku}")
        if unresolved:
            missing = [p for p in self.reads if p in unresolved]
            if missing:
                names = ", ".join(ARM_PATHS.get(p, p) for p in missing)
                return self._finding(UNKNOWN, f"{names} cannot be determined offline "
                                              "(a template expression, or not declared in the template)")
        verdict = self.check(registry)
        return self._finding(verdict.status, verdict.message)

    def _finding(self, status: str, message: str) -> Finding:
        """Findings are immutable values: share one per (status, message) instead of building each.
        The cache is bounded: past 4096 distinct messages (e.g. many pipeline names) it stops growing."""
        key = (status, message)
        finding = self._findings.get(key)
        if finding is None:
            finding = Finding(self.id, status, self.severity, self.remediable, message)
            if len(self._findings) < 4096:
                self._findings[key] = finding
        return finding


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to the catalogue under its stable ID."""
    if cls.id in CATALOGUE:
        raise ValueError(f"duplicate rule ID {cls.id}")
    CATALOGUE[cls.id] = cls()
    return cls


__all__ = ["CATALOGUE", "NOT_APPLICABLE", "Rule", "Verdict", "register"]
