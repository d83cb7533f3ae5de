"""Domain values: a registry snapshot, what the rules found, what to do about it, what happened.

All frozen: a snapshot is read once and never mutated; a richer snapshot (export pipelines
looked up) is a new value made with `dataclasses.replace`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dlp import ids

# Canonical spellings (Azure's own casing); inputs are matched case-insensitively.
ENABLED, DISABLED = "Enabled", "Disabled"
EXPORT_ENABLED, EXPORT_DISABLED = "enabled", "disabled"
ALLOW, DENY = "Allow", "Deny"
AZURE_SERVICES, NONE = "AzureServices", "None"
SKUS = ("Basic", "Standard", "Premium")

# Finding statuses
PASS, FAIL, NOT_APPLICABLE, UNKNOWN = "pass", "fail", "not-applicable", "unknown"
STATUSES = (PASS, FAIL, NOT_APPLICABLE, UNKNOWN)

# Severities, most severe first
SEVERITIES = ("high", "medium", "low")

# Property names of the snapshot (also used to mark values a template left unresolved)
P_SKU = "sku"
P_EXPORT = "export_policy"
P_PUBLIC = "public_network_access"
P_DEFAULT_ACTION = "network_default_action"
P_BYPASS = "network_bypass_options"
P_TASKS_BYPASS = "tasks_bypass"
P_PRIVATE_ENDPOINTS = "private_endpoints"
P_ADMIN = "admin_user_enabled"
P_ANONYMOUS = "anonymous_pull_enabled"
P_DATA_ENDPOINT = "data_endpoint_enabled"
P_TAGS = "tags"
P_PIPELINES = "export_pipelines"

# ARM property paths as they appear in the REST body, for messages and PATCH bodies
ARM_PATHS = {
    P_SKU: "sku.name",
    P_EXPORT: "policies.exportPolicy.status",
    P_PUBLIC: "publicNetworkAccess",
    P_DEFAULT_ACTION: "networkRuleSet.defaultAction",
    P_BYPASS: "networkRuleBypassOptions",
    P_TASKS_BYPASS: "networkRuleBypassAllowedForTasks",
    P_PRIVATE_ENDPOINTS: "privateEndpointConnections",
    P_ADMIN: "adminUserEnabled",
    P_ANONYMOUS: "anonymousPullEnabled",
    P_DATA_ENDPOINT: "dataEndpointEnabled",
}

_REGISTRY_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
    r"microsoft\.containerregistry/registries/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PrivateEndpoint:
    name: str
    status: str          # Approved / Pending / Rejected / Disconnected (canonical casing when known)

    @property
    def approved(self) -> bool:
        return self.status.lower() == "approved"


@dataclass(frozen=True)
class Registry:
    """One container registry as the rules see it, whatever JSON shape it came from.

    Absent properties already hold Azure's default (see reference/azure-facts.md §1).
    `unresolved` names properties whose value is a template expression we could not
    resolve: rules reading them answer `unknown`, never a silent pass.
    `export_pipelines` is None when nobody looked (offline input, or not needed yet).
    """

    id: str
    name: str
    sku: str = "Premium"
    location: str = ""
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    export_policy: str = EXPORT_ENABLED
    public_network_access: str = ENABLED
    network_default_action: str = ALLOW
    network_bypass_options: str = AZURE_SERVICES
    tasks_bypass: bool = False
    private_endpoints: tuple[PrivateEndpoint, ...] = ()
    admin_user_enabled: bool = False
    anonymous_pull_enabled: bool = False
    data_endpoint_enabled: bool = False
    provisioning_state: str = "Succeeded"
    export_pipelines: tuple[str, ...] | None = None
    source: str = ""
    unresolved: frozenset[str] = frozenset()

    @property
    def premium(self) -> bool:
        return self.sku.lower() == "premium"

    @property
    def exports_disabled(self) -> bool:
        return self.export_policy.lower() == EXPORT_DISABLED

    @property
    def public_disabled(self) -> bool:
        return self.public_network_access.lower() == DISABLED.lower()

    @property
    def approved_private_endpoints(self) -> tuple[PrivateEndpoint, ...]:
        return tuple(pe for pe in self.private_endpoints if pe.approved)

    @property
    def is_arm_id(self) -> bool:
        return bool(_REGISTRY_ID.match(self.id))

    @property
    def subscription_id(self) -> str:
        m = _REGISTRY_ID.match(self.id)
        return m.group("sub") if m else ""

    @property
    def resource_group(self) -> str:
        m = _REGISTRY_ID.match(self.id)
        return m.group("rg") if m else ""

    def tag(self, name: str) -> str | None:
        """Tag names are case-insensitive in Azure (A-Z only: a look-alike tag name is another tag)."""
        for key, value in self.tags.items():
            if ids.fold(key) == ids.fold(name):
                return value
        return None


def parse_registry_id(resource_id: str) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of a registry ID, any casing; None if it is not one."""
    m = _REGISTRY_ID.match(resource_id or "")
    return (m.group("sub"), m.group("rg"), m.group("name")) if m else None


def registry_key(resource_id: str) -> str:
    """Case-insensitive identity of a registry: ARM IDs ignore case, for A-Z only (see dlp/ids.py)."""
    return ids.key(resource_id)


@dataclass(frozen=True)
class Finding:
    rule_id: str
    status: str
    severity: str
    remediable: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"ruleId": self.rule_id, "status": self.status, "severity": self.severity,
                "remediable": self.remediable, "message": self.message}


@dataclass(frozen=True)
class Assessment:
    """The rules' verdict on one snapshot."""

    registry: Registry
    findings: tuple[Finding, ...]

    @property
    def compliant(self) -> bool:
        return not any(f.status == FAIL for f in self.findings)

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status == FAIL)

    def finding(self, rule_id: str) -> Finding | None:
        return next((f for f in self.findings if f.rule_id == rule_id), None)

    def to_json(self) -> dict[str, Any]:
        """The `dlp evaluate --format json` contract: other tools rely on this exact shape."""
        return {"registryId": self.registry.id, "name": self.registry.name, "sku": self.registry.sku,
                "source": self.registry.source, "compliant": self.compliant,
                "findings": [f.to_json() for f in self.findings]}


# The one guard reason that makes an evaluation silent: a debug log line, no row, no alert state (issue 11)
OUT_OF_SCOPE = "out-of-scope"

# Why a registry is `gone` (the reason of an A_GONE outcome) when it was not deleted before our eyes: the scope
# exits (issue 22). A registry keeps its images across a move, so leaving the monitored scope is alerted like a deletion.
GONE_DELETED = "deleted"            # a delete event (its own, or its resource group's)
GONE_MOVED = "moved"                # a moveResources action on its resource group, and it is no longer at its ID
GONE_UNLISTED = "not-listed"        # the sweep no longer lists it, and it is not at its ID

# Remediation actions (the `Action` column and the `remediation.action` field)
A_NONE = "none"
A_WOULD = "would-remediate"
A_REMEDIATED = "remediated"
A_BLOCKED = "blocked"
A_FAILED = "failed"
A_EXEMPT = "exempt"
A_ERROR = "error"      # the evaluation itself failed (e.g. 403 on the read)
A_GONE = "gone"        # the registry no longer exists
A_DEFERRED = "deferred"  # handed to the durable retry
A_EXPOSURE = "exposure"  # a window in which the registry was open, found in its change history (dlp/domain/exposure.py)
ACTIONS = (A_NONE, A_WOULD, A_REMEDIATED, A_BLOCKED, A_FAILED, A_EXEMPT, A_ERROR, A_GONE, A_DEFERRED, A_EXPOSURE)


@dataclass(frozen=True)
class Change:
    property: str        # ARM path, e.g. "publicNetworkAccess"
    old: str
    new: str

    def to_json(self) -> dict[str, str]:
        return {"property": self.property, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Plan:
    """What remediation would do and why; pure output of remediation.plan()."""

    action: str                       # none / would-remediate / remediated(planned: "remediate") / blocked / exempt
    reason: str = ""                  # machine-readable guard name or "" (e.g. "export-pipelines")
    detail: str = ""                  # human sentence: what a person must do
    changes: tuple[Change, ...] = ()
    tag_exemption: bool = False       # a tag exemption was used: always alert
    withheld: tuple[Change, ...] = () # a write that goes ahead without these (`reason` says why: export pipelines)

    @property
    def writes(self) -> bool:
        return self.action == "remediate"

    def patch_body(self) -> dict[str, Any]:
        """The minimal ARM PATCH body: only the properties that must change."""
        properties: dict[str, Any] = {}
        for change in self.changes:
            if change.property == ARM_PATHS[P_PUBLIC]:
                properties["publicNetworkAccess"] = change.new
            elif change.property == ARM_PATHS[P_EXPORT]:
                properties.setdefault("policies", {})["exportPolicy"] = {"status": change.new}
        return {"properties": properties} if properties else {}


@dataclass(frozen=True)
class Context:
    """Where an evaluation came from: for the record and the alerts."""

    trigger: str = "cli"              # event / http / sweep / cli / retry
    event_id: str = ""
    event_type: str = ""
    operation_name: str = ""
    correlation_id: str = ""
    caller: str = ""                  # UPN / unique_name / app:<appid> / object:<oid>; for http: the requester
    caller_ip: str = ""
    event_time: str = ""
    attempt: int = 0
    caller_name: str = ""             # the free-text display name: shown second, never as the identity
    caller_object_id: str = ""
    caller_app_id: str = ""
    caller_tenant_id: str = ""
    caller_verified: bool = False     # claims from ARM, or a header App Service Authentication vouches for
    dead_letter_reason: str = ""      # a replayed dead-lettered event: why Event Grid gave up on it
    replay_delay_s: int = 0           # and how long after the event it was handled

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", 0)}


@dataclass(frozen=True)
class Target:
    """A registry some input asked us to look at."""

    registry_id: str
    context: Context
    deleted: bool = False
    pending: tuple[Change, ...] = ()     # a write already sent whose verification was deferred


@dataclass(frozen=True)
class Outcome:
    """What the responder did (or would do) about one evaluation."""

    action: str
    reason: str = ""
    detail: str = ""
    changes: tuple[Change, ...] = ()
    error_code: str = ""
    applied: tuple[Change, ...] = ()    # of `changes`, those written and verified although the action is blocked

    @property
    def withheld(self) -> tuple[Change, ...]:
        """Changes planned but not written (all of them unless part was applied)."""
        return tuple(c for c in self.changes if c not in self.applied)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"action": self.action, "reason": self.reason, "detail": self.detail,
                                "changes": [c.to_json() for c in self.changes]}
        if self.error_code:
            body["errorCode"] = self.error_code
        if self.applied:
            body["applied"] = [c.to_json() for c in self.applied]
        return body


@dataclass(frozen=True)
class Exposure:
    """How long a registry was open, as recorded and alerted: from its change history (dlp.domain.exposure.Window)
    or, for a remediation, from the event time until the responder's verified write."""

    property: str = ""                # ARM path, e.g. "policies.exportPolicy.status"
    opened_at: str = ""               # ISO 8601 UTC; "" when unknown
    closed_at: str = ""               # "" while still open
    seconds: float | None = None      # None when a bound is unknown
    opened_by: str = ""               # display-safe text
    closed_by: str = ""               # display-safe text, or "responder"
    source: str = ""                  # "change-history" or "event-time"
    sentence: str = ""                # "Registry was open for N s: ..."
    key: str = ""                     # the window's de-duplication key (change history only)
    rule_id: str = ""                 # the rule of the property (RuleId of the row of an exposure evaluation)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


@dataclass(frozen=True)
class Evaluation:
    """One pass of the pipeline over one registry: the unit that is recorded and alerted on."""

    evaluation_id: str
    registry_id: str
    context: Context
    mode: str
    outcome: Outcome
    assessment: Assessment | None = None      # None when the registry is gone or could not be read
    started_at: str = ""                      # ISO 8601 UTC
    duration_ms: float = 0.0
    tag_exemption: bool = False
    recent_callers: tuple[str, ...] = ()      # who changed it back, for revert-war alerts
    answered: tuple[Context, ...] = ()        # other events this evaluation answered (a burst read once)
    intent: str = ""                          # the remediation intent this evaluation resolves (its state row key)
    warnings: tuple[str, ...] = ()            # what people must know beyond the outcome (a look-alike ID)
    exposure: Exposure | None = None          # how long it was open (remediations, exposure evaluations)
    next_attempt: str = ""                    # deferred: when the durable retry runs next (ISO 8601 UTC)

    @property
    def callers(self) -> tuple[str, ...]:
        """Everyone whose write this evaluation answered, first seen first."""
        return tuple(dict.fromkeys(c.caller for c in (self.context, *self.answered) if c.caller))

    @property
    def compliant(self) -> bool | None:
        return None if self.assessment is None else self.assessment.compliant

    @property
    def out_of_scope(self) -> bool:
        """Outside DLP_SCOPES: not ours. Anyone can write registries elsewhere as often as they like; that must
        cost nothing and tell nobody anything, so it is logged at debug level only: no row, no alert."""
        return self.outcome.reason == OUT_OF_SCOPE

    @property
    def registry_name(self) -> str:
        if self.assessment is not None:
            return self.assessment.registry.name
        parts = parse_registry_id(self.registry_id)
        return parts[2] if parts else self.registry_id.rsplit("/", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        """The `dlp evaluate --format json` element plus a `remediation` object."""
        if self.assessment is not None:
            body = self.assessment.to_json()
        else:
            body = {"registryId": self.registry_id, "name": self.registry_name, "sku": "", "source": "arm",
                    "compliant": None, "findings": []}
        body["remediation"] = self.outcome.to_json()
        if self.exposure is not None:
            body["exposure"] = self.exposure.to_json()
        return body
