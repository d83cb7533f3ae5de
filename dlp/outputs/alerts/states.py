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
of the guard itself (another tag value, another exemption entry).

Holding states never hide an escalation. While a registry is held (breaker, exemption, tag
exemption, remediation pending, a guard that blocks the write) its stored signature remembers the exposure already told:
the high-severity rules failing and the changes withheld. A *new* exposure (a rule failing
that was not, a withheld change set that grows: public access opened after exports) alerts
again, naming what is new, and is added to what was told; the identical state, or less of it,
stays quiet, so a revert war or a long-lived exemption is not announced on every event and an
attacker cannot use either to open more without a word.

A deferral whose drift is known (the registry was read) is "remediation pending" in enforce
mode, alerted at once with the next attempt's time; the retry's outcome then alerts as a
change (remediated, failed, blocked). A deferral before anything was read shows no state.
While the breaker or an exemption holds, a deferral stays quiet: the retry's outcome decides.
`gone` (deleted) and `left-scope` (moved away, or no longer listed by the sweep) are final states: each alerts
once, whatever the registry's state was (a compliant registry that leaves unseen takes its images out of the
monitored scope), and a second final notice for the same registry stays quiet. A registry re-created under the same
ID starts from them as if compliant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from dlp.domain.model import (
    A_BLOCKED,
    A_DEFERRED,
    A_ERROR,
    A_EXEMPT,
    A_FAILED,
    A_GONE,
    A_NONE,
    A_REMEDIATED,
    A_WOULD,
    GONE_MOVED,
    GONE_UNLISTED,
    Assessment,
    Evaluation,
    Finding,
)
from dlp.domain.remediation import R_BREAKER, needed_changes

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
S_LEFT = "left-scope"      # moved out of its ID (a moveResources action), or no longer listed by the sweep
S_UNDELIVERABLE = "undeliverable"   # not a registry state: the notice that an alert or a message was given up on
S_EXPOSED = "exposed"      # not a state the registry stays in: a window found in change history (never stored)
S_PENDING = "remediation-pending"
STATES = (S_COMPLIANT, S_NONCOMPLIANT, S_REMEDIATED, S_BLOCKED, S_BREAKER, S_FAILED, S_ERROR, S_EXEMPT,
          S_TAG_EXEMPT, S_GONE, S_LEFT, S_EXPOSED, S_PENDING)
# States in which a drift stays in place for a while: their signature carries the exposure already told.
HOLDS = frozenset({S_BREAKER, S_EXEMPT, S_TAG_EXEMPT, S_PENDING, S_BLOCKED})
_GUARDS = frozenset({S_BREAKER, S_EXEMPT, S_TAG_EXEMPT})      # a person's decision or the breaker, not a retry

# Not a registry's state: an optional output turned off at start (dlp/outputs/alerts/config.py); never in STATES
S_MISCONFIGURED = "output-misconfigured"
# Not a registry's state either: Event Grid dead-lettered events, replayed (dlp/outputs/alerts/dead_letters.py)
S_DEAD_LETTERED = "dead-lettered"
# Alerts about the responder itself: sent by AlertNotifier.announce, and (S_UNDELIVERABLE) by its kept notices
NOTICES = (S_MISCONFIGURED, S_DEAD_LETTERED, S_UNDELIVERABLE)

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
    S_LEFT: "left the monitored scope",
    S_UNDELIVERABLE: "not delivered",
    S_PENDING: "remediation pending",
    S_MISCONFIGURED: "output misconfigured",
    S_DEAD_LETTERED: "dead-lettered events replayed",
    S_EXPOSED: "was open",
}

# States after which compliant is not news: the registry was fine already.
_QUIET_BEFORE_COMPLIANT = frozenset({S_COMPLIANT, S_REMEDIATED, S_GONE, S_LEFT})
FINAL = frozenset({S_GONE, S_LEFT})     # told once: the registry is no longer at its ID


@dataclass(frozen=True)
class Observed:
    """What one evaluation says the registry's alert state is."""

    state: str
    signature: str = ""

    @property
    def exposure(self) -> frozenset[str]:
        return exposure_of(self.signature)


@dataclass(frozen=True)
class Stored:
    """The registry's alert state as last committed (Table row "alert"); `etag` guards the next update."""

    state: str
    signature: str
    alert_id: str = ""
    since: str = ""
    etag: str | None = None
    unsent: str = ""         # alert id whose kept copies (transactional outbox) may not all be delivered yet
    kept_etags: tuple[str | None, ...] = field(default=(), compare=False)   # of the copies this commit created
    tally: Any = field(default=None, compare=False)     # dlp.outputs.alerts.grouping.Tally of the registry's alerts


@dataclass(frozen=True)
class Decision:
    write: bool = False      # commit `observed` as the new stored state
    alert: bool = False      # send an alert once the commit succeeded
    signature: str = ""      # commit this signature instead of the observed one (a hold's exposure told so far)
    new: tuple[str, ...] = ()    # the exposure items that are news (an escalation while held)


NOTHING = Decision()


def _digest(*parts: str) -> str:
    """Short stable signature: rows stay small whatever a guard's sentence says."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


RULE_ITEM = "rule:"          # a high-severity rule failing
CHANGE_ITEM = "change:"      # a change the responder withholds (ARM property path)


def _held(guard: str, exposure: frozenset[str] | set[str]) -> str:
    """A holding state's signature: the guard's digest, then the exposure items (rule IDs and property paths:
    short, fixed vocabulary, never free text from outside)."""
    return guard + "|" + ",".join(sorted(exposure))


def guard_of(signature: str) -> str:
    return signature.split("|", 1)[0]


def exposure_of(signature: str) -> frozenset[str]:
    _, _, items = signature.partition("|")
    return frozenset(item for item in items.split(",") if item)


def exposure(evaluation: Evaluation) -> frozenset[str]:
    """What the registry exposes: the high-severity rules failing and the changes the responder holds back."""
    rules = {RULE_ITEM + f.rule_id for f in alerting_failures(evaluation.assessment)} \
        if evaluation.assessment is not None else set()
    changes = evaluation.outcome.changes
    if not changes and evaluation.assessment is not None:
        changes = needed_changes(evaluation.assessment)
    return frozenset(rules | {CHANGE_ITEM + c.property for c in changes})


def observe(evaluation: Evaluation) -> Observed | None:
    """The alert state an evaluation shows; None when it shows none (deferred, or nothing known)."""
    seen = _observe(evaluation)
    if seen is None or not evaluation.warnings or seen.state == S_COMPLIANT:
        return seen
    # a new warning is news: it joins the guard part (a hold's exposure items after "|" stay readable)
    guard, bar, items = seen.signature.partition("|")
    return Observed(seen.state, _digest(guard, *evaluation.warnings) + bar + items)


def _observe(evaluation: Evaluation) -> Observed | None:
    outcome = evaluation.outcome
    action = outcome.action
    if evaluation.out_of_scope:                             # out of scope: silent, no state at all
        return None
    if action == A_DEFERRED:
        return _deferred(evaluation)
    if action == A_GONE:
        return Observed(S_LEFT if outcome.reason in (GONE_MOVED, GONE_UNLISTED) else S_GONE)
    if action == A_ERROR:
        return Observed(S_ERROR, _digest(outcome.error_code or outcome.reason))
    if action == A_FAILED:
        return Observed(S_FAILED, _digest(outcome.reason, outcome.error_code))
    if action == A_REMEDIATED:
        return Observed(S_REMEDIATED, _digest(evaluation.evaluation_id))
    if action == A_BLOCKED:
        if outcome.reason == R_BREAKER:
            return Observed(S_BREAKER, _held(_digest(R_BREAKER), exposure(evaluation)))
        return Observed(S_BLOCKED, _held(_digest(outcome.reason, outcome.detail), exposure(evaluation)))
    if action == A_EXEMPT:
        state = S_TAG_EXEMPT if evaluation.tag_exemption else S_EXEMPT
        return Observed(state, _held(_digest(outcome.detail), exposure(evaluation)))
    if action in (A_NONE, A_WOULD):
        if evaluation.assessment is None:
            return None
        failing = sorted(f.rule_id for f in alerting_failures(evaluation.assessment))
        return Observed(S_NONCOMPLIANT, _digest(*failing)) if failing else Observed(S_COMPLIANT)
    return None


def _deferred(evaluation: Evaluation) -> Observed | None:
    """A deferral with a known drift: "remediation pending" when enforcing, else plain non-compliance (the same
    signature the audit-mode retry will show, so that one stays quiet)."""
    if evaluation.assessment is None:
        return None
    seen = exposure(evaluation)
    if evaluation.mode == "enforce" and any(item.startswith(CHANGE_ITEM) for item in seen):
        return Observed(S_PENDING, _held(_digest(S_PENDING), seen))
    failing = sorted(f.rule_id for f in alerting_failures(evaluation.assessment))
    return Observed(S_NONCOMPLIANT, _digest(*failing)) if failing else None


def alerting_failures(assessment: Assessment) -> tuple[Finding, ...]:
    """The failures that make a registry non-compliant for alerting: the high-severity rules.

    Every remediable rule is high; medium and low findings (trusted-services bypass, data
    endpoints, ...) fail on most registries by default and are for audits in Log Analytics.
    Counting them would leave nearly every registry "non-compliant" for ever, and turn each
    remediation into a second alert when the responder's own write is re-evaluated."""
    return tuple(f for f in assessment.failures if f.severity in ALERT_SEVERITIES)


def decide(previous: Stored | None, observed: Observed) -> Decision:
    """Whether to commit the observed state, and whether that commit is worth an alert."""
    if observed.state in FINAL:
        return NOTHING if previous is not None and previous.state in FINAL else Decision(write=True, alert=True)
    if previous is None:
        return NOTHING if observed.state == S_COMPLIANT else Decision(write=True, alert=True)
    if previous.state == observed.state and previous.signature == observed.signature:
        return NOTHING
    if observed.state == S_PENDING and previous.state in _GUARDS:
        return NOTHING              # held by a guard: the retry's outcome decides (and alerts a new exposure)
    if observed.state in HOLDS and previous.state == observed.state \
            and guard_of(previous.signature) == guard_of(observed.signature):
        return _escalation(previous, observed)
    if observed.state == S_COMPLIANT and previous.state in _QUIET_BEFORE_COMPLIANT:
        return Decision(write=True)
    return Decision(write=True, alert=True)


def _escalation(previous: Stored, observed: Observed) -> Decision:
    """The same hold, seen again: news only when it exposes something not told yet; what was told is kept
    (a rule that stops failing and fails again is not news twice)."""
    if "|" not in previous.signature:       # a row from before exposures were kept: take this as the baseline
        return Decision(write=True)
    told = exposure_of(previous.signature)
    new = observed.exposure - told
    if not new:
        return NOTHING
    return Decision(write=True, alert=True, signature=_held(guard_of(observed.signature), told | new),
                    new=tuple(sorted(new)))


def previous_label(previous: Stored | None) -> str:
    """A registry with no row has never been seen in an alerting state: it was compliant as far as we know."""
    return LABELS.get(previous.state, previous.state) if previous is not None else LABELS[S_COMPLIANT]
