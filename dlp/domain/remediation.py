"""Remediation planning: guards and the minimal PATCH. Pure: the clock and counts are passed in.

Only `publicNetworkAccess` and `policies.exportPolicy.status` are ever written, and only
when the rule that asks for them failed. Each guard turns a write into a recorded reason
and a sentence telling a human what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from dlp.domain.model import (
    A_BLOCKED,
    A_EXEMPT,
    A_NONE,
    A_WOULD,
    ARM_PATHS,
    DISABLED,
    EXPORT_DISABLED,
    FAIL,
    OUT_OF_SCOPE,
    P_EXPORT,
    P_PUBLIC,
    Assessment,
    Change,
    Plan,
    Registry,
)
from dlp.ids import lookalike, lookalike_of, odd_characters, within

REMEDIATE = "remediate"
EXPORT_RULE = "DLP.ACR.ExportPolicy"
PUBLIC_RULE = "DLP.ACR.PublicNetworkAccess"

# Guard reasons (the `ActionReason` column); stable strings that KQL and alerts rely on.
R_OUT_OF_SCOPE = OUT_OF_SCOPE
R_SCOPE_LOOKALIKE = "scope-lookalike"     # outside DLP_SCOPES, but only because look-alike letters differ
R_EXEMPTION = "exemption"
R_TAG_EXEMPTION = "tag-exemption"
R_NOT_PREMIUM = "not-premium"
R_PIPELINES = "export-pipelines"
R_PIPELINES_UNKNOWN = "export-pipelines-unknown"
R_NO_PRIVATE_ENDPOINT = "no-private-endpoint"
R_BREAKER = "revert-war"
R_UNKNOWN_STATE = "unknown-state"
R_UPDATING = "registry-updating"
R_AUDIT = "audit-mode"


@dataclass(frozen=True)
class Exemption:
    """One entry of DLP_EXEMPTIONS (parsed by dlp.settings): a registry or resource group left alone until a day."""

    scope: str            # registry or resource-group ID, A-Z lower-cased (dlp.ids.fold)
    until: date | None    # last day the exemption holds; None: no end


@dataclass(frozen=True)
class Policy:
    """The slice of settings planning needs, so plan() never reads the environment."""

    enforce: bool = False
    scopes: tuple[str, ...] = ()
    exemptions: tuple[Exemption, ...] = ()
    exempt_tag: str = ""
    allow_lockout: bool = False
    max_remediations: int = 3



def in_scopes(resource_id: str, scopes: tuple[str, ...]) -> bool:
    """True when no scopes are set, or the ID is one of them or beneath one (case-insensitive)."""
    if not scopes:
        return True
    return any(within(resource_id, scope) for scope in scopes)


def _near_miss(verdict: str, resource_id: str, entry: str, setting: str) -> str:
    """The verdict and the characters first: a card cuts long facts."""
    chars = odd_characters(resource_id + entry) or "look-alike characters"
    return (f"{verdict} ({chars}): {resource_id} matches the {setting} entry {entry} only under Unicode case "
            "folding; ARM treats them as different names")


def scope_lookalike(resource_id: str, scopes: tuple[str, ...]) -> str:
    """Why an ID outside DLP_SCOPES looks as if it were inside one ("" when it does not): someone may have
    named a resource group to be mistaken for an enforced one. The ID stays out of scope."""
    if not scopes or in_scopes(resource_id, scopes):
        return ""
    scope = lookalike_of(resource_id, scopes)
    return "" if scope is None else _near_miss("outside DLP_SCOPES, neither read nor written", resource_id, scope,
                                               "DLP_SCOPES")


def exemption_lookalikes(resource_id: str, exemptions: tuple[Exemption, ...]) -> tuple[str, ...]:
    """Warnings for DLP_EXEMPTIONS entries the ID only looks like it falls under (none when one truly
    applies): the registry is enforced like any other, and people should know someone tried."""
    if any(within(resource_id, entry.scope) for entry in exemptions):
        return ()
    return tuple(_near_miss("NOT exempt", resource_id, entry.scope, "DLP_EXEMPTIONS")
                 for entry in exemptions if lookalike(resource_id, entry.scope))[:3]


def needed_changes(assessment: Assessment) -> tuple[Change, ...]:
    """The writes the failing remediable rules ask for, public access first (ARM's required order)."""
    failing = {f.rule_id for f in assessment.findings if f.status == FAIL and f.remediable}
    registry = assessment.registry
    changes: list[Change] = []
    if failing & {EXPORT_RULE, PUBLIC_RULE} and not registry.public_disabled:
        changes.append(Change(ARM_PATHS[P_PUBLIC], registry.public_network_access, DISABLED))
    if EXPORT_RULE in failing and not registry.exports_disabled:
        changes.append(Change(ARM_PATHS[P_EXPORT], registry.export_policy, EXPORT_DISABLED))
    return tuple(changes)


def _exemption(registry: Registry, policy: Policy, today: date) -> str | None:
    for entry in policy.exemptions:
        if within(registry.id, entry.scope):
            if entry.until is None:
                return f"DLP_EXEMPTIONS lists {entry.scope} with no end date"
            if entry.until >= today:
                return f"DLP_EXEMPTIONS lists {entry.scope} until {entry.until.isoformat()}"
    return None


def _tag_exemption(registry: Registry, policy: Policy, today: date) -> str | None:
    if not policy.exempt_tag:
        return None
    value = registry.tag(policy.exempt_tag)
    if value is None:
        return None
    text = value.strip().lower()
    if text == "true":
        return f"tag {policy.exempt_tag}=true"
    try:
        until = date.fromisoformat(text[:10])
    except ValueError:
        return None
    return f"tag {policy.exempt_tag}={value} (until {until.isoformat()})" if until >= today else None


def plan(assessment: Assessment, policy: Policy, *, today: date, recent_remediations: int = 0) -> Plan:
    """Decide what to do about one assessment. Guards run in order; the first that holds wins."""
    registry = assessment.registry
    if {P_EXPORT, P_PUBLIC} & registry.unresolved:
        return Plan(A_BLOCKED, R_UNKNOWN_STATE, "the registry's export or network state is unknown; nothing is written")
    changes = needed_changes(assessment)
    if not changes:
        return Plan(A_NONE)
    if not in_scopes(registry.id, policy.scopes):
        return Plan(A_BLOCKED, R_OUT_OF_SCOPE, "the registry is outside DLP_SCOPES; the responder only reports it",
                    changes)
    why = _exemption(registry, policy, today)
    if why:
        return Plan(A_EXEMPT, R_EXEMPTION, why, changes)
    why = _tag_exemption(registry, policy, today)
    if why:
        return Plan(A_EXEMPT, R_TAG_EXEMPTION, why, changes, tag_exemption=True)
    if not registry.premium:
        return Plan(A_BLOCKED, R_NOT_PREMIUM,
                    f"the registry is {registry.sku}: upgrade it to Premium before exports or public access "
                    "can be disabled", changes)
    if registry.provisioning_state.lower() not in ("succeeded", "failed", "canceled"):
        return Plan(A_BLOCKED, R_UPDATING,
                    f"the registry is {registry.provisioning_state}; it is re-checked once the update ends", changes)
    export_guard = _pipelines_guard(registry, changes)
    if export_guard is not None and export_guard.changes == changes:
        return export_guard          # the export write was all there was to do
    if any(c.property == ARM_PATHS[P_PUBLIC] for c in changes) and not registry.approved_private_endpoints \
            and not policy.allow_lockout:
        return Plan(A_BLOCKED, R_NO_PRIVATE_ENDPOINT,
                    "add and approve a private endpoint first: disabling public access now would cut every client off "
                    "(or set DLP_ALLOW_LOCKOUT=true)", changes)
    if recent_remediations >= policy.max_remediations:
        return Plan(A_BLOCKED, R_BREAKER,
                    f"remediated {recent_remediations} times in the last hour: someone keeps changing it back; "
                    "find out who before the responder writes again", changes)
    if not policy.enforce:
        return Plan(A_WOULD, R_AUDIT, "audit mode: set DLP_MODE=enforce to revert automatically", changes)
    if export_guard is not None:
        # Pipelines block only the export write: public access is still closed, the export part is reported
        withheld = export_guard.changes
        return Plan(REMEDIATE, export_guard.reason, export_guard.detail,
                    tuple(c for c in changes if c not in withheld), withheld=withheld)
    return Plan(REMEDIATE, "", "", changes)


def _pipelines_guard(registry: Registry, changes: tuple[Change, ...]) -> Plan | None:
    """The export write withheld while export pipelines exist or could not be listed (ARM refuses to disable
    exports while pipelines exist; the responder never deletes them). Only the export change is blocked."""
    export = tuple(c for c in changes if c.property == ARM_PATHS[P_EXPORT])
    if not export:
        return None
    if registry.export_pipelines is None:
        return Plan(A_BLOCKED, R_PIPELINES_UNKNOWN, "export pipelines could not be listed; exports stay as they are",
                    export)
    if registry.export_pipelines:
        names = ", ".join(registry.export_pipelines)
        return Plan(A_BLOCKED, R_PIPELINES,
                    f"delete export pipeline(s) {names} (the responder never deletes them), then re-check", export)
    return None


def still_needed(plan_: Plan, after: Registry) -> tuple[Change, ...]:
    """Planned changes the registry does not show after the write (verification)."""
    missing = []
    for change in plan_.changes:
        if change.property == ARM_PATHS[P_PUBLIC] and not after.public_disabled:
            missing.append(Change(change.property, after.public_network_access, change.new))
        if change.property == ARM_PATHS[P_EXPORT] and not after.exports_disabled:
            missing.append(Change(change.property, after.export_policy, change.new))
    return tuple(missing)
