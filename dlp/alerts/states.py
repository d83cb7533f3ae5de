"""The per-registry alert state machine. Pure: no clock, no I/O, no settings.

People act on alerts, so an alert must mean "something changed". Each evaluation is reduced
to an `Observed` state plus a signature (what would make the same state worth telling again,
e.g. a different guard sentence); `decide` compares it with the stored state:

* the same state with the same signature again: nothing is sent, nothing is written;
* "compliant" means no high-severity rule fails (see `alerting_failures`);
* a registry never seen in an alerting state (no stored row) that is compliant: nothing,
  and no row is written, so compliant registries cost no Table writes;
* remediated -> compliant: the responder's own write re-evaluated; the "remediated" alert
  already said the registry is back, so the row is updated silently;
* any other change: the row is updated and one alert is sent.

A remediation is a write the responder made, so each one alerts (its signature is the
evaluation); the revert-war breaker caps that at `DLP_MAX_REMEDIATIONS` an hour, then
alerts once that it tripped. Tag exemptions and the breaker are the two ways enforcement
stops, so entering either always alerts, whatever the previous state, and so does a change
of what they hold (another tag value, other withheld changes); repeating the identical
state does not, so a revert war or a long-lived exemption is not announced on every event.
`deferred` is not a state (the durable retry will produce the real one). `gone` is a final
state: a final notice when the registry was deleted while not compliant, silence otherwise
(and a registry re-created under the same ID starts from it as if compliant).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dlp.model import (
    A_BLOCKED,
    A_DEFERRED,
    A_ERROR,
    A_EXEMPT,
    A_FAILED,
    A_GONE,
    A_NONE,
    A_REMEDIATED,
    A_WOULD,
    Assessment,
    Evaluation,
    Finding,
)
from dlp.remediation import R_BREAKER

ALERT_SEVERITIES = ("high",)

S_COMPLIANT = "compliant"
S_NONCOMPLIANT = "non-compliant"
S_REMEDIATED = "remediated"
S_BLOCKED = "blocked"
S_BREAKER = "breaker-tripped"
S_FAILED = "failed"
S_ERROR = "error"
S_EXEMPT = "exempt"
S_TAG_EXEMPT = "tag-exempt"
S_GONE = "gone"
S_EXPOSED = "exposed"      # not a state the registry stays in: a window found in change history (never stored)
STATES = (S_COMPLIANT, S_NONCOMPLIANT, S_REMEDIATED, S_BLOCKED, S_BREAKER, S_FAILED, S_ERROR, S_EXEMPT,
          S_TAG_EXEMPT, S_GONE, S_EXPOSED)

# Not a registry's state: an optional output turned off at start (dlp/alerts/config.py); never in STATES
S_MISCONFIGURED = "output-misconfigured"
# Not a registry's state either: Event Grid dead-lettered events, replayed (dlp/alerts/dead_letters.py)
S_DEAD_LETTERED = "dead-lettered"
NOTICES = (S_MISCONFIGURED, S_DEAD_LETTERED)     # alerts about the responder itself, sent by AlertNotifier.announce

# Human labels, used in titles ("compliant -> drift remediated") and in the digest list.
LABELS = {
    S_COMPLIANT: "compliant",
    S_NONCOMPLIANT: "non-compliant",
    S_REMEDIATED: "drift remediated",
    S_BLOCKED: "remediation blocked",
    S_BREAKER: "revert-war breaker tripped",
    S_FAILED: "remediation failed",
    S_ERROR: "evaluation error",
    S_EXEMPT: "exempt",
    S_TAG_EXEMPT: "tag exemption used",
    S_GONE: "deleted",
    S_MISCONFIGURED: "output misconfigured",
    S_DEAD_LETTERED: "dead-lettered events replayed",
    S_EXPOSED: "was open",
}

# States after which compliant (or deleted) is not news: the registry was fine already.
_QUIET_BEFORE_COMPLIANT = frozenset({S_COMPLIANT, S_REMEDIATED, S_GONE})


@dataclass(frozen=True)
class Observed:
    """What one evaluation says the registry's alert state is."""

    state: str
    signature: str = ""


@dataclass(frozen=True)
class Stored:
    """The registry's alert state as last committed (Table row "alert"); `etag` guards the next update."""

    state: str
    signature: str
    alert_id: str = ""
    since: str = ""
    etag: str | None = None


@dataclass(frozen=True)
class Decision:
    write: bool = False      # commit `observed` as the new stored state
    alert: bool = False      # send an alert once the commit succeeded


NOTHING = Decision()


def _digest(*parts: str) -> str:
    """Short stable signature: rows stay small whatever a guard's sentence says."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def observe(evaluation: Evaluation) -> Observed | None:
    """The alert state an evaluation shows; None when it shows none (deferred, or nothing known)."""
    seen = _observe(evaluation)
    if seen is None or not evaluation.warnings or seen.state == S_COMPLIANT:
        return seen
    return Observed(seen.state, _digest(seen.signature, *evaluation.warnings))     # a new warning is news


def _observe(evaluation: Evaluation) -> Observed | None:
    outcome = evaluation.outcome
    action = outcome.action
    if action == A_DEFERRED or evaluation.out_of_scope:     # out of scope: silent, no state at all
        return None
    if action == A_GONE:
        return Observed(S_GONE)
    if action == A_ERROR:
        return Observed(S_ERROR, _digest(outcome.error_code or outcome.reason))
    if action == A_FAILED:
        return Observed(S_FAILED, _digest(outcome.reason, outcome.error_code))
    if action == A_REMEDIATED:
        return Observed(S_REMEDIATED, _digest(evaluation.evaluation_id))
    if action == A_BLOCKED:
        if outcome.reason == R_BREAKER:
            return Observed(S_BREAKER, _digest(R_BREAKER))
        return Observed(S_BLOCKED, _digest(outcome.reason, outcome.detail))
    if action == A_EXEMPT:
        changes = ",".join(sorted(c.property for c in outcome.changes))
        if evaluation.tag_exemption:
            return Observed(S_TAG_EXEMPT, _digest(outcome.detail, changes))
        return Observed(S_EXEMPT, _digest(outcome.detail))
    if action in (A_NONE, A_WOULD):
        if evaluation.assessment is None:
            return None
        failing = sorted(f.rule_id for f in alerting_failures(evaluation.assessment))
        return Observed(S_NONCOMPLIANT, _digest(*failing)) if failing else Observed(S_COMPLIANT)
    return None


def alerting_failures(assessment: Assessment) -> tuple[Finding, ...]:
    """The failures that make a registry non-compliant for alerting: the high-severity rules.

    Every remediable rule is high; medium and low findings (trusted-services bypass, data
    endpoints, ...) fail on most registries by default and are for audits in Log Analytics.
    Counting them would leave nearly every registry "non-compliant" for ever, and turn each
    remediation into a second alert when the responder's own write is re-evaluated."""
    return tuple(f for f in assessment.failures if f.severity in ALERT_SEVERITIES)


def decide(previous: Stored | None, observed: Observed) -> Decision:
    """Whether to commit the observed state, and whether that commit is worth an alert."""
    if observed.state == S_GONE and previous is None:
        return NOTHING
    if previous is None:
        return NOTHING if observed.state == S_COMPLIANT else Decision(write=True, alert=True)
    if previous.state == observed.state and previous.signature == observed.signature:
        return NOTHING
    if observed.state in (S_COMPLIANT, S_GONE) and previous.state in _QUIET_BEFORE_COMPLIANT:
        return Decision(write=True)
    return Decision(write=True, alert=True)


def previous_label(previous: Stored | None) -> str:
    """A registry with no row has never been seen in an alerting state: it was compliant as far as we know."""
    return LABELS.get(previous.state, previous.state) if previous is not None else LABELS[S_COMPLIANT]
