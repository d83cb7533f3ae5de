"""Domain values: a registry snapshot, what the rules found, what to do about it, what happened.

All frozen: a snapshot is read once and never mutated; a richer snapshot (export pipelines
looked up) is a new value made with `dataclasses.replace`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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
# A fail or unknown finding accepted on purpose by the offline gate's suppressions file (`dlp evaluate`, issue 23);
# the live responder never produces it (its exemptions are DLP_EXEMPTIONS and the exempt tag)
SUPPRESSED = "suppressed"

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
    # For some unresolved properties, every value they can take (a template parameter's allowedValues, both
    # branches of an `if`): the rules check only those. Absent: any value (dlp.domain.rules.base.POSSIBLE_VALUES).
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # Where the input declares it, for code scanning: a JSON pointer into a template (`/resources/2`), or ""
    declared_at: str = ""

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
    suppressed: str = ""          # status SUPPRESSED: the status it had (fail / unknown)
    justification: str = ""       # status SUPPRESSED: why it was accepted
    expires: str = ""             # status SUPPRESSED: the last day the suppression holds (ISO date), or ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ruleId": self.rule_id, "status": self.status, "severity": self.severity,
                                "remediable": self.remediable, "message": self.message}
        if self.status == SUPPRESSED:
            body.update({"suppressedStatus": self.suppressed, "justification": self.justification,
                         "expires": self.expires or None})
        return body


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


# What is known of the pulls of a window (Pulls.status)
PULLS_COUNTED = "counted"      # the registry's resource logs were read for the whole window
PULLS_UNKNOWN = "unknown"      # they could not be read (why: Pulls.note)
PULLS_PENDING = "pending"      # not looked up yet: resource logs arrive minutes late (when: Pulls.note)
PULLS_OFF = "off"              # no workspace configured (DLP_REGISTRY_LOGS_WORKSPACE)


@dataclass(frozen=True)
class Pull:
    """One pull inside a window, as the registry's resource log has it (display-safe text)."""

    at: str                   # ISO 8601 UTC
    repository: str
    reference: str            # ":<tag>" or "@<digest>" ("" when the log row has neither)
    identity: str
    caller_ip: str            # without a ":port"

    @property
    def artifact(self) -> str:
        return self.repository + self.reference

    def to_json(self) -> dict[str, str]:
        return {"time": self.at, "repository": self.repository, "reference": self.reference,
                "identity": self.identity, "callerIp": self.caller_ip}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Pull:
        return cls(*(str(body.get(k) or "") for k in ("time", "repository", "reference", "identity", "callerIp")))


@dataclass(frozen=True)
class Pulls:
    """What was pulled from a registry while it was open, as far as its resource logs tell (dlp/domain/pulls.py).

    `count` is None unless `status` is counted: an unknown is never a zero."""

    status: str                        # PULLS_COUNTED / PULLS_UNKNOWN / PULLS_PENDING / PULLS_OFF
    count: int | None = None           # pull operations inside the window (de-duplicated)
    details: tuple[Pull, ...] = ()     # up to dlp.domain.pulls.MAX_DETAILS, oldest first
    note: str = ""                     # why unknown, or when the next look runs
    sentence: str = ""                 # "3 pulls from 198.51.100.7 (mallory@contoso.com): ...", for alerts
    truncated: bool = False            # the query's row bound was hit: `count` is a lower bound

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "count": self.count, "details": [p.to_json() for p in self.details],
                "note": self.note, "sentence": self.sentence, "truncated": self.truncated}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Pulls:
        count = body.get("count")
        return cls(str(body.get("status") or PULLS_UNKNOWN), count if isinstance(count, int) else None,
                   tuple(Pull.from_json(p) for p in body.get("details") or () if isinstance(p, Mapping)),
                   str(body.get("note") or ""), str(body.get("sentence") or ""), bool(body.get("truncated")))


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
    pulls: Pulls | None = None        # what was pulled meanwhile (dlp/responder/impact.py); None: not a closed window

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if v not in ("", None) and k != "pulls"}
        if self.pulls is not None:
            body["pulls"] = self.pulls.to_json()
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Exposure:
        """Inverse of to_json (the impact rows of dlp/azure/impacts.py); unknown keys are ignored."""
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__ and k != "pulls"}
        pulls = body.get("pulls")
        return cls(**known, pulls=Pulls.from_json(pulls) if isinstance(pulls, Mapping) else None)


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
    settled: tuple[Evaluation, ...] = ()      # earlier remediations this pass found landed: recorded with it

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


def flatten(evaluations: Sequence[Evaluation]) -> list[Evaluation]:
    """The evaluations and the earlier remediations they settled, each once, the settled ones first."""
    return [each for evaluation in evaluations for each in (*evaluation.settled, evaluation)]
