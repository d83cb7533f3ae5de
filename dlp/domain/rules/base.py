"""Rule base class and the catalogue they register into (looked up by ID, like c7n filters)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from dlp.domain import model
from dlp.domain.model import ARM_PATHS, FAIL, NOT_APPLICABLE, PASS, UNKNOWN, Finding, PrivateEndpoint, Registry

CATALOGUE: dict[str, Rule] = {}
_LABELS = {**ARM_PATHS, model.P_PIPELINES: "registries/exportPipelines"}

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

# Every value an unresolved snapshot property could take, as far as any rule can tell them apart:
# a rule over unresolved properties is checked against each combination (see Rule.evaluate).
POSSIBLE_VALUES: Mapping[str, tuple[Any, ...]] = {
    model.P_SKU: model.SKUS,
    model.P_EXPORT: (model.EXPORT_ENABLED, model.EXPORT_DISABLED),
    model.P_PUBLIC: (model.ENABLED, model.DISABLED),
    model.P_DEFAULT_ACTION: (model.ALLOW, model.DENY),
    model.P_BYPASS: (model.AZURE_SERVICES, model.NONE),
    model.P_TASKS_BYPASS: (False, True),
    model.P_ADMIN: (False, True),
    model.P_ANONYMOUS: (False, True),
    model.P_DATA_ENDPOINT: (False, True),
    model.P_PRIVATE_ENDPOINTS: ((), (PrivateEndpoint("<unresolved>", "Approved"),)),
    model.P_PIPELINES: ((), ("<unresolved>",)),
}


def _possible(registry: Registry, prop: str) -> tuple[Any, ...]:
    """POSSIBLE_VALUES[prop]; for the two lists, what is known stays and the unresolved part may add to it
    (a declared pipeline still fails however many others there are)."""
    if prop == model.P_PRIVATE_ENDPOINTS:
        return tuple(registry.private_endpoints + extra for extra in POSSIBLE_VALUES[prop])
    if prop == model.P_PIPELINES:
        return tuple((registry.export_pipelines or ()) + extra for extra in POSSIBLE_VALUES[prop])
    return registry.choices.get(prop) or POSSIBLE_VALUES[prop]


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


class Rule:
    """One DLP rule: metadata plus a pure check over a snapshot.

    Subclasses set the metadata and implement `check`; `skus` limits SKUs and `reads` names
    the snapshot properties used. When some of them are unresolved (a template expression, a
    value a Terraform plan does not know yet), `evaluate` decides for every rule alike, so no
    rule repeats that logic: fail dominates unknown.
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

    @property
    def applies_to(self) -> str:
        """`every SKU`, `Premium only`, `Standard/Premium only`: the catalogue's wording."""
        return "every SKU" if tuple(self.skus) == Rule.skus else "/".join(self.skus) + " only"

    def evaluate(self, registry: Registry) -> Finding:
        unresolved = registry.unresolved
        if unresolved:
            relevant = [p for p in (*((model.P_SKU,) if self._sku_specific else ()), *self.reads)
                        if p in unresolved and p in POSSIBLE_VALUES]
            if relevant:
                return self._evaluate_unresolved(registry, tuple(dict.fromkeys(relevant)))
        return self._evaluate_known(registry)

    def _evaluate_known(self, registry: Registry) -> Finding:
        if self._sku_specific and registry.sku.lower() not in self._skus_lower:
            # an every-SKU rule applies even to an unknown or odd SKU
            return self._finding(NOT_APPLICABLE, f"applies to {'/'.join(self.skus)} registries; this one is {registry.sku}")
        verdict = self.check(registry)
        return self._finding(verdict.status, verdict.message)

    def _evaluate_unresolved(self, registry: Registry, unresolved: tuple[str, ...]) -> Finding:
        """Fail dominates unknown: check every value the unresolved properties could take.

        Every combination fails -> `fail` (what is known fails, whatever the rest turns out to be;
        the message is the smallest failure). Every combination passes -> `pass` (the verdict does
        not depend on them). All not applicable -> `not-applicable`. Anything else -> `unknown`.
        At most 3 x 2 x 2 combinations: a rule reads two or three properties.
        """
        names = ", ".join(_LABELS.get(p, p) for p in unresolved)
        outcomes = []
        known = registry.unresolved.difference(unresolved)
        for values in itertools.product(*(_possible(registry, p) for p in unresolved)):
            variant = replace(registry, unresolved=known, **dict(zip(unresolved, values, strict=True)))
            outcomes.append(self._evaluate_known(variant))
        statuses = {finding.status for finding in outcomes}
        if statuses == {FAIL}:
            smallest = min(outcomes, key=lambda f: (f.message.count(";"), len(f.message)))
            return self._finding(FAIL, f"{smallest.message} (whatever {names} turns out to be: "
                                       "it cannot be determined offline)")
        if statuses == {PASS}:
            return self._finding(PASS, f"{outcomes[0].message} (whatever {names} turns out to be)")
        if statuses == {NOT_APPLICABLE}:
            return outcomes[0]
        return self._finding(UNKNOWN, f"{names} cannot be determined offline "
                                      "(an unresolved template expression or plan value, or not declared)")

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
