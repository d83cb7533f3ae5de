"""The rule catalogue and the pure evaluation over a snapshot.

Adding a rule: one module in this package with a `@register`ed `Rule` subclass,
its name in `_MODULES`, and a page `docs/rules/<ID>.md` (a test checks the page exists).
"""

from __future__ import annotations

from collections.abc import Iterable

from dlp.domain.model import Assessment, Registry
from dlp.domain.rules.base import CATALOGUE, Rule, Verdict, register

_MODULES = (
    "export_policy", "public_network_access", "firewall", "private_endpoint", "premium_sku",
    "export_pipelines", "admin_user", "anonymous_pull", "data_endpoint", "trusted_services",
    "tasks_bypass",
)

for _module in _MODULES:
    __import__(f"dlp.domain.rules.{_module}")


def rules(ids: Iterable[str] | None = None) -> tuple[Rule, ...]:
    """Rules in catalogue order; `ids` picks some, case-insensitively. Unknown IDs raise KeyError."""
    if not ids:
        return tuple(CATALOGUE.values())
    by_lower = {key.lower(): rule for key, rule in CATALOGUE.items()}
    picked = []
    for rule_id in ids:
        if rule_id.lower() not in by_lower:
            raise KeyError(rule_id)
        picked.append(by_lower[rule_id.lower()])
    return tuple(picked)


def evaluate(registry: Registry, selected: tuple[Rule, ...] | None = None) -> Assessment:
    """Every selected rule over one snapshot. Pure: no clock, no I/O, no settings."""
    return Assessment(registry, tuple([rule.evaluate(registry) for rule in (selected or CATALOGUE.values())]))


__all__ = ["CATALOGUE", "Rule", "Verdict", "evaluate", "register", "rules"]
