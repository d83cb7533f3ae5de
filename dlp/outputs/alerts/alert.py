"""The alert value: everything a person needs to act, independent of the channel that carries it.

Built once from an evaluation and the state change, kept as JSON in the outbox when a channel
fails, and rendered by the card and email modules, so a retried alert says exactly what the
first attempt would have said.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import quote

from dlp.domain.model import A_NONE, A_WOULD, SEVERITIES, Evaluation, parse_registry_id
from dlp.domain.pulls import LOOK_REASONS, REASON_FOUND, REASON_UNKNOWN
from dlp.outputs.alerts.states import (
    LABELS,
    S_BLOCKED,
    S_BREAKER,
    S_COMPLIANT,
    S_DEAD_LETTERED,
    S_ERROR,
    S_EXEMPT,
    S_EXPOSED,
    S_FAILED,
    S_GONE,
    S_LEFT,
    S_MISCONFIGURED,
    S_NONCOMPLIANT,
    S_PENDING,
    S_REMEDIATED,
    S_TAG_EXEMPT,
    S_UNDELIVERABLE,
    Stored,
    previous_label,
)
from dlp.sanitize import clean

# Triggers whose claims were read from a file anyone who can write it could forge (dlp.domain.provenance.confirmed)
FROM_FILES = {"dead-letter": "dead-letter blob", "cli": "file"}

PORTAL = "https://portal.azure.com/#@/resource"

HEADLINES = {
    S_COMPLIANT: "Back to compliant",
    S_NONCOMPLIANT: "Drift detected",
    S_REMEDIATED: "Drift remediated",
    S_BLOCKED: "Remediation blocked",
    S_BREAKER: "Revert-war breaker tripped",
    S_FAILED: "Remediation failed",
    S_ERROR: "Evaluation error",
    S_EXEMPT: "Drift on an exempt registry",
    S_TAG_EXEMPT: "Tag exemption used",
    S_GONE: "Registry deleted",
    S_LEFT: "Registry left the monitored scope",
    S_UNDELIVERABLE: "Alert or record not delivered",
    S_PENDING: "Drift detected, remediation pending",
    S_MISCONFIGURED: "Output misconfigured",
    S_DEAD_LETTERED: "Events were dead-lettered",
    S_EXPOSED: "Registry was open",
}

# The headline when a held registry exposes something new (dlp.outputs.alerts.states: holds never hide an escalation).
ESCALATION_HEADLINES = {
    S_BREAKER: "New exposure while the revert-war breaker holds",
    S_EXEMPT: "New exposure on an exempt registry",
    S_TAG_EXEMPT: "New exposure on a tag-exempt registry",
    S_PENDING: "Drift grew while remediation is pending",
    S_BLOCKED: "New exposure while remediation is blocked",
}

# The headline of a later pull look's alert (dlp/responder/impact.py): the window was alerted before.
LOOK_HEADLINES = {REASON_FOUND: "Pulls found while the registry was open",
                  REASON_UNKNOWN: "Pulls unknown while the registry was open"}

# How bad it is, for the card's colour and the email's banner: needs a human / fine / informational.
SEVERITY = {
    S_COMPLIANT: "good", S_REMEDIATED: "good", S_GONE: "info", S_LEFT: "attention", S_EXEMPT: "warning", S_TAG_EXEMPT: "warning",
    S_NONCOMPLIANT: "attention", S_BLOCKED: "attention", S_BREAKER: "attention", S_FAILED: "attention",
    S_ERROR: "attention", S_UNDELIVERABLE: "attention", S_MISCONFIGURED: "warning", S_DEAD_LETTERED: "attention",
    S_EXPOSED: "attention", S_PENDING: "attention",
}


@dataclass(frozen=True)
class FailingRule:
    rule_id: str
    severity: str
    message: str


@dataclass(frozen=True)
class Alert:
    """One state change of one registry, ready to render."""

    alert_id: str
    registry_id: str
    registry_name: str
    resource_group: str
    subscription_id: str
    previous: str                 # label of the state before ("compliant" when never seen)
    state: str                    # one of dlp.outputs.alerts.states.STATES
    at: str                       # ISO 8601 UTC, when the change was committed
    mode: str = ""
    action: str = ""              # Outcome.action
    reason: str = ""              # guard reason / error code
    detail: str = ""              # Outcome.detail: the guard's sentence of what a human must do
    error_code: str = ""
    changes: tuple[tuple[str, str, str], ...] = ()        # (property, old, new)
    failing: tuple[FailingRule, ...] = ()
    caller: str = ""
    caller_ip: str = ""
    correlation_id: str = ""
    event_time: str = ""
    trigger: str = ""
    evaluation_id: str = ""
    recent_callers: tuple[str, ...] = ()
    record_pending: bool = False  # the evaluation could not be recorded yet (Log Analytics and the outbox failed)
    applied: tuple[tuple[str, str, str], ...] = ()        # of `changes`, written although the rest was blocked
    warnings: tuple[str, ...] = ()            # e.g. an ID that only looks like an exempt one
    caller_name: str = ""                     # display name the caller chose: shown second, labelled as such
    caller_object_id: str = ""
    caller_app_id: str = ""
    caller_tenant_id: str = ""
    caller_verified: bool = False

    exposure: str = ""            # "Registry was open for N s: ..." (display-safe, from dlp.domain.exposure)
    pulls: str = ""               # "3 pulls from 198.51.100.7 (...): ..." / "no pulls recorded" / "pulls unknown: ..."
    escalation: tuple[str, ...] = ()      # exposure items new since the hold's last alert ("rule:<id>", "change:<path>")
    next_attempt: str = ""                # remediation pending: when the durable retry runs next (ISO 8601 UTC)

    def __post_init__(self) -> None:
        """Every text is one clean line (dlp/sanitize.py), whether built now or loaded from an old outbox item:
        a bidi override or a newline in a display name must not reach a card or a mail."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, str):
                tidy = clean(value)
            elif isinstance(value, tuple):
                tidy = tuple(_clean_nested(v) for v in value)
            else:
                continue
            if tidy != value:
                object.__setattr__(self, item.name, tidy)

    @property
    def label(self) -> str:
        return LABELS.get(self.state, self.state)

    @property
    def headline(self) -> str:
        if self.state == S_EXPOSED and self.reason in LOOK_HEADLINES:
            return LOOK_HEADLINES[self.reason]
        if self.escalation and self.state in ESCALATION_HEADLINES:
            return ESCALATION_HEADLINES[self.state]
        return HEADLINES.get(self.state, self.state)

    @property
    def news(self) -> str:
        """The escalation in words: the rules that now fail and the changes now withheld."""
        changes = {p: (old, new) for p, old, new in self.changes}
        words = []
        for item in self.escalation:
            kind, _, name = item.partition(":")
            if kind == "rule":
                words.append(f"{name} fails")
            elif name in changes:
                words.append(f"{name} is {changes[name][0]} (withheld: → {changes[name][1]})")
            else:
                words.append(f"{name} changed")
        return "; ".join(words)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.state, "attention")

    @property
    def title(self) -> str:
        """The state change in one line: what happened, to which registry, from what to what."""
        if self.state in (S_MISCONFIGURED, S_DEAD_LETTERED):
            return f"{self.headline}: {self.registry_name}"
        return f"{self.headline}: {self.registry_name} ({self.previous} → {self.label})"

    @property
    def failing_heading(self) -> str:
        when = " before the revert" if self.state == S_REMEDIATED else ""
        return f"Failing rules{when} ({len(self.failing)})"

    @property
    def portal_url(self) -> str:
        if not self.registry_id:          # an alert about the responder itself
            return "https://portal.azure.com/"
        return PORTAL + quote(self.registry_id, safe="/")

    @property
    def facts(self) -> list[tuple[str, str]]:
        """The (label, value) facts every channel shows, in order: one list, so card and mail agree."""
        if self.state == S_MISCONFIGURED:
            return [("Settings", self.reason), ("Mode", self.mode or "-"), ("When", self.at)]
        if self.state == S_DEAD_LETTERED:
            return [("Dead-letter reason", self.reason), ("Registries", self.detail or "-"),
                    ("Mode", self.mode or "-"), ("When", self.at)]
        facts = [("Registry", self.registry_name), ("Resource group", self.resource_group or "-"),
                 ("Subscription", self.subscription_id or "-"), ("State", f"{self.previous} → {self.label}"),
                 ("Changed by", self.who)]
        if self.trigger == "http":
            facts.append(("Re-check requested by", self.requester))
        if self.caller_name and self.caller_name != self.caller:
            facts.append(("Display name (set by the caller)", self.caller_name))
        facts += [(label, value) for label, value in (("Caller object ID", self.caller_object_id),
                                                      ("Caller app ID", self.caller_app_id),
                                                      ("Caller tenant ID", self.caller_tenant_id)) if value]
        if self.escalation:
            facts.append(("New exposure", self.news))
        if self.caller_ip:
            facts.append(("Caller IP", self.caller_ip))
        facts.append(("Mode", self.mode or "-"))
        if self.correlation_id:
            facts.append(("Correlation ID", self.correlation_id))
        facts.append(("When", self.event_time or self.at))
        if self.record_pending:
            facts.append(("Record", "pending: Log Analytics and the outbox did not take it; it is written on the retry"))
        if self.next_attempt:
            facts.append(("Next attempt", self.next_attempt))
        facts += [("Warning", warning) for warning in self.warnings]
        if self.exposure:
            facts.append(("Exposed", self.exposure))
        if self.pulls:
            facts.append(("Pulls while open", self.pulls))
        return facts

    @property
    def who(self) -> str:
        """Who changed the registry. A re-check's caller only asked to look: never shown as the one who changed it."""
        if self.caller and self.trigger != "http":
            if self.caller_verified or self.trigger not in FROM_FILES:
                return self.caller
            return f"{self.caller} (unverified: read from a {FROM_FILES[self.trigger]}, not confirmed by change history)"
        return {"sweep": "unknown (found by the scheduled sweep)", "http": "unknown (manual re-check)",
                "retry": "unknown (durable retry)"}.get(self.trigger, "unknown")

    @property
    def requester(self) -> str:
        """Who asked for a re-check; unverified unless App Service Authentication vouched for the headers."""
        name = self.caller or "unknown"
        return name if self.caller_verified else f"{name} (unverified: App Service Authentication is off)"

    @property
    def done(self) -> str:
        """What the responder did about it, in one sentence."""
        changes = ", ".join(f"{p} {old} → {new}" for p, old, new in self.changes)
        if self.state == S_MISCONFIGURED:
            return f"Turned off {self.registry_name}. Enforcement and the other outputs go on."
        if self.state == S_DEAD_LETTERED:
            return ("Replayed them through the pipeline with a fresh read of each registry; each outcome is recorded "
                    "with Trigger dead-letter and alerted like any state change.")
        if self.state == S_REMEDIATED:
            return f"Reverted {changes}." if changes else (self.detail or "Reverted the drift.")
        if self.state == S_UNDELIVERABLE:
            return "Gave up sending it after its last attempt; it is kept for inspection."
        if self.state == S_COMPLIANT:
            return "Nothing: every high-severity rule passes again."
        if self.state == S_EXPOSED:
            return f"Nothing to revert: it was closed again. {self.exposure}."
        if self.state == S_GONE:
            return "Nothing: the registry no longer exists." + (f" ({self.detail})" if self.detail else "")
        if self.state == S_LEFT:
            return ("Nothing: it is no longer at this ID, so the responder no longer reads or writes it. "
                    + self.detail).strip()
        if self.state == S_ERROR:
            return f"Nothing: the registry could not be evaluated ({self.error_code or self.reason})."
        if self.state == S_FAILED:
            return f"Tried to write {changes}; the write failed ({self.error_code or self.reason}): {self.detail}"
        if self.state in (S_EXEMPT, S_TAG_EXEMPT):
            return f"Nothing written: {self.detail}." + (f" Withheld: {changes}." if changes else "")
        if self.state in (S_BLOCKED, S_BREAKER) and self.applied:
            closed = ", ".join(f"{p} {old} → {new}" for p, old, new in self.applied)
            withheld = ", ".join(f"{p} {old} → {new}" for p, old, new in self.changes if (p, old, new) not in self.applied)
            return f"Reverted {closed}. Not written (blocked by the {self.reason} guard): {withheld or '-'}."
        if self.state == S_PENDING:
            when = f" The durable retry tries again at {self.next_attempt}." if self.next_attempt else ""
            return f"Nothing written yet ({self.reason}): {changes or 'the revert'} is pending.{when}"
        if self.state in (S_BLOCKED, S_BREAKER):
            return f"Nothing written: blocked by the {self.reason} guard." + (f" Withheld: {changes}." if changes else "")
        if self.action == A_WOULD:
            return f"Nothing written ({self.mode} mode). Enforce mode would change {changes}."
        if self.action == A_NONE:
            return "Nothing: the failing rules have no automatic fix."
        return self.detail or self.action

    @property
    def todo(self) -> str:
        """What a human must do now, as a sentence."""
        text = self._todo()
        return text[:1].upper() + text[1:]

    def _todo(self) -> str:
        if self.state == S_UNDELIVERABLE:
            return self.detail
        if self.escalation:
            return (f"Find out why {self.who} opened more while enforcement is held ({self.news}). "
                    + self._todo_held())
        return self._todo_held()

    def _todo_held(self) -> str:
        if self.state == S_MISCONFIGURED:
            return f"Fix the app settings ({self.detail}). GET /api/health lists what is still wrong."
        if self.state == S_DEAD_LETTERED:
            return ("Find out why Event Grid could not reach the responder (the function app stopped or failing to "
                    "start, a deployment, a removed event subscription endpoint): until then drift waits for this "
                    "replay or the sweep.")
        if self.state == S_COMPLIANT:
            return "Nothing."
        if self.state == S_GONE:
            return f"Nothing, unless {self.who} was not meant to delete it."
        if self.state == S_LEFT:
            return (f"Find out where it went and whether {self.who} meant to move it: a registry keeps its images "
                    "across a move, and outside DLP_SCOPES nobody watches its export policy or public access. "
                    "Move it back, or add its new resource group or subscription to DLP_SCOPES. Registry names "
                    "are globally unique: Resource Graph finds it by name (resources | where type =~ "
                    f"'microsoft.containerregistry/registries' and name =~ '{self.registry_name}').")
        if self.state == S_EXPOSED and self.pulls and not self.pulls.startswith("pulls "):
            return (f"Check the pulls listed (who, from where, which images) against what should have left, and "
                    f"whether the change by {self.who} was intended.")
        if self.state == S_EXPOSED:
            return (f"Find out what left the registry while it was open (its diagnostic logs for that interval) "
                    f"and whether the change by {self.who} was intended.")
        if self.state == S_PENDING:
            return ("nothing yet: the responder retries on its own and alerts again with the outcome (remediated, "
                    f"failed or blocked). Meanwhile the registry is exposed: check the change by {self.who}.")
        if self.state == S_REMEDIATED:
            return f"Nothing, unless the change by {self.who} was intended: then agree an exemption with the operators."
        if self.state == S_BREAKER:
            who = ", ".join(self.recent_callers) or "unknown callers"
            return f"{self.detail.rstrip('.')}. Callers who changed it back: {who}."
        if self.state == S_TAG_EXEMPT:
            return (f"Confirm this exemption is legitimate ({self.detail}): anyone who can change the registry "
                    "can set the tag. Remove the tag to have the registry enforced again.")
        if self.state == S_EXEMPT:
            return f"Nothing while the exemption holds ({self.detail}); fix the registry before it ends."
        if self.state == S_ERROR:
            hint = {"authorizationfailed": "grant the responder's identity the role it lacks on the registry's scope",
                    "requestdisallowedbypolicy": "an Azure Policy denies the write: exempt the responder or fix the policy"}
            return (hint.get(self.error_code.lower(), "check the error below") + f". {self.detail}").strip()
        if self.state == S_FAILED:
            return f"Fix the cause and re-check the registry: {self.detail}"
        if self.state == S_BLOCKED and self.detail:
            return self.detail
        if self.action == A_WOULD:
            return (f"Revert the change by {self.who} (each failing rule's page says how), or agree an exemption with "
                    "the operators. The responder is in audit mode: with DLP_MODE=enforce it reverts such drift itself.")
        return "Fix the failing rules by hand (each rule's page says how): they have no automatic fix."

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Alert:
        """Inverse of to_json (outbox payloads); unknown keys are ignored so old payloads still load."""
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        known["changes"] = tuple(tuple(str(x) for x in c) for c in known.get("changes") or ())
        known["failing"] = tuple(FailingRule(**f) for f in known.get("failing") or ())
        known["recent_callers"] = tuple(known.get("recent_callers") or ())
        known["applied"] = tuple(tuple(str(x) for x in c) for c in known.get("applied") or ())
        known["warnings"] = tuple(known.get("warnings") or ())
        known["escalation"] = tuple(str(x) for x in known.get("escalation") or ())
        return cls(**known)


def build_alert(evaluation: Evaluation, previous: Stored | None, state: str, *, alert_id: str, at: str,
                escalation: tuple[str, ...] = ()) -> Alert:
    """The alert for one committed state change."""
    parts = parse_registry_id(evaluation.registry_id) or ("", "", evaluation.registry_name)
    outcome = evaluation.outcome
    failing: tuple[FailingRule, ...] = ()
    if evaluation.assessment is not None and state not in (S_COMPLIANT, S_GONE):
        ranked = sorted(evaluation.assessment.failures,
                        key=lambda f: SEVERITIES.index(f.severity) if f.severity in SEVERITIES else len(SEVERITIES))
        failing = tuple(FailingRule(f.rule_id, f.severity, f.message) for f in ranked)
    context = evaluation.context
    return Alert(
        alert_id=alert_id, registry_id=evaluation.registry_id, registry_name=evaluation.registry_name,
        resource_group=parts[1], subscription_id=parts[0],
        previous=previous_label(previous),
        state=state, at=at, mode=evaluation.mode, action=outcome.action, reason=outcome.reason,
        detail=outcome.detail, error_code=outcome.error_code,
        changes=tuple((c.property, c.old, c.new) for c in outcome.changes), failing=failing,
        applied=tuple((c.property, c.old, c.new) for c in outcome.applied),
        caller=_callers(evaluation), caller_ip=context.caller_ip, correlation_id=context.correlation_id,
        event_time=context.event_time, trigger=context.trigger, evaluation_id=evaluation.evaluation_id,
        recent_callers=evaluation.recent_callers, warnings=evaluation.warnings, caller_name=context.caller_name,
        caller_object_id=context.caller_object_id, caller_app_id=context.caller_app_id,
        caller_tenant_id=context.caller_tenant_id, caller_verified=context.caller_verified,
        exposure=evaluation.exposure.sentence if evaluation.exposure is not None else "",
        pulls=evaluation.exposure.pulls.sentence if evaluation.exposure is not None and evaluation.exposure.pulls else "",
        escalation=escalation, next_attempt=evaluation.next_attempt,
    )


def window_alert_id(evaluation: Evaluation) -> str:
    """The alert ID of an exposure evaluation: its evaluation ID for the window's first alert; for a later pull
    look's alert, one derived from what it says (the same picture twice gives the same ID: email sends it once)."""
    found = evaluation.exposure.pulls if evaluation.exposure is not None else None
    if evaluation.outcome.reason not in LOOK_REASONS or found is None:
        return evaluation.evaluation_id
    return str(uuid.uuid5(_LOOK_NAMESPACE, f"{evaluation.evaluation_id}|{found.status}|{found.sentence}"))


_LOOK_NAMESPACE = uuid.UUID("5d0b7a57-3c1e-4f0e-9a55-1f6c2b9e7d31")
MAX_CALLERS = 10     # names shown when a burst of events was answered by one evaluation


def _callers(evaluation: Evaluation) -> str:
    """Everyone whose write the evaluation answered (a burst of events read once), first seen first."""
    callers = evaluation.callers
    shown = ", ".join(callers[:MAX_CALLERS])
    return shown + (f" and {len(callers) - MAX_CALLERS} more" if len(callers) > MAX_CALLERS else "")


def notice_id(kept: Any) -> str:
    """The id of the notice that a kept alert could not be delivered (derived: the same on every instance)."""
    return "undeliverable-" + kept.alert_id[:80]


def undeliverable_alert(kept: Any, error: str) -> Alert:
    """The notice that a kept alert was given up on (sent on the other channels). Its id is derived from the
    alert's, so every instance builds the same one."""
    try:
        lost = Alert.from_json(kept.payload["alerts"][0])
        registry_id, name, what = lost.registry_id, lost.registry_name, f"the alert \"{lost.title}\""
    except (KeyError, TypeError, ValueError, IndexError):
        registry_id, name, what = "", kept.partition.rsplit("|", 1)[-1], "an alert that cannot be read"
    parts = parse_registry_id(registry_id) or ("", "", name)
    return Alert(alert_id=notice_id(kept), registry_id=registry_id, registry_name=name, resource_group=parts[1],
                 subscription_id=parts[0], previous="kept", state=S_UNDELIVERABLE, at="",
                 reason="undeliverable", error_code="", trigger="drain",
                 detail=(f"{what} could not be sent on {kept.channel} after {kept.attempts + 1} attempt(s) "
                         f"(last error: {error[:300]}). Check that channel's settings; the alert is kept in the state "
                         "table (Dead = true) for inspection."))


def system_alert(alert_id: str, name: str, detail: str) -> Alert:
    """A notice about the responder itself (a poison message), not about a registry's state."""
    return Alert(alert_id=alert_id, registry_id="", registry_name=name, resource_group="", subscription_id="",
                 previous="kept", state=S_UNDELIVERABLE, at="", reason="poison", trigger="drain", detail=detail)
def _clean_nested(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, tuple):
        return tuple(_clean_nested(v) for v in value)
    if isinstance(value, FailingRule):
        return FailingRule(clean(value.rule_id), clean(value.severity), clean(value.message))
    return value


def rule_doc_url(rule_id: str, docs_base: str = "") -> str:
    """The rule's page: DLP_RULE_DOCS_URL + <ID>.md when set, else the rule's first Microsoft Learn link."""
    if docs_base:
        return docs_base.rstrip("/") + "/" + quote(rule_id) + ".md"
    from dlp.domain.rules import CATALOGUE

    rule = CATALOGUE.get(rule_id)
    return rule.links[0] if rule is not None and rule.links else ""
