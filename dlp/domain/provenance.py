"""Provenance: who made a change, and did our write land. The one place that decides; every stage asks here.

The responder must tell its own writes from everyone else's: to skip the event its PATCH raises, to leave the
windows it closed to its `remediated` record, to record a remediation whose invocation died, to name who opened a
window. An attacker with Contributor reads the Activity Log, which shows the correlation ID and caller of every
write (ours included), and can attach the responder's user-assigned identity to a VM of theirs. So no single piece
of evidence is enough, and every consumer applies the same rules:

* **A change is the responder's** only when all hold: its caller (change history's `changedBy`, or an event's
  signed app/object ID claims) is the responder's identity; it carries the correlation ID of one of our intents;
  its time lies within that intent's [written, deadline] (with clock skew); it is the *first* change carrying that
  correlation ID; and its property and new value are the intent's. A correlation ID copied from the Activity Log
  and replayed later, or by someone else, fails one of these and is treated as anyone's write.
* **An event is our own write** when its signed claims name the responder, its correlation ID is an intent's, its
  time lies within [written - skew, deadline + skew], it arrives within the delivery slack, and the intent's one-shot
  skip is still unused (or was used by this very event, redelivered). The caller marks the intent under an ETag, so
  two instances cannot both skip.
* **An intent landed** when change history shows its change (the rule above), or, while history cannot cover it
  yet, when a read made after its writer ended finds its changes in effect. It did not land only when history
  covers its time and shows no such change: a later read that finds the registry drifted never decides, because
  the registry may have been re-opened since.
* **A window's opener** is change history's opening change when there is one, else the event that reported the
  write, else unknown.
* **A caller is verified** when the claims came from ARM (the live Event Grid trigger) or App Service
  Authentication vouched for the header; claims read from a file or a dead-letter blob are verified only when change
  history names the same caller for the same correlation ID.

Pure: evidence in, verdict out; no clock (callers pass `now`), no I/O, no settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from dlp.domain.exposure import ChangeRecord, PropertyChange, Window, parse_time
from dlp.domain.intent import Intent
from dlp.domain.model import Context
from dlp.ids import fold

SKEW = timedelta(seconds=60)               # ARM's, Resource Graph's and our instances' clocks may differ this much
# Resource Graph may stamp a change when it detected it rather than when ARM wrote it (a long-running PATCH, a slow
# snapshot): a change-history row of our write may lie this long after the intent's deadline.
HISTORY_SKEW = timedelta(minutes=5)
DELIVERY_SLACK = timedelta(minutes=15)     # our write's event reaches us within this of the intent's deadline
# Change history shows a write within this (Azure: "less than 5 minutes"; the sweep re-reads the same 30 minutes,
# dlp.responder.timeline.SWEEP_OVERLAP_S): before it, a write missing from history may only be late.
CHANGE_LAG = timedelta(minutes=30)
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Who closed a window, as provenance tells it
RESPONDER = "responder"            # a write the responder made (every rule above holds)
IMPERSONATED = "impersonated"      # the responder's identity, but not a write the responder made
ANYONE = "person"                  # anyone else

# How an intent's landing is known
BY_HISTORY = "change-history"
BY_OBSERVATION = "observed"


def guid(value: str) -> str:
    """`value` lower-cased when it is exactly a GUID, else "" (a claim that is not one names nobody)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    return text if _GUID.match(text) else ""


@dataclass(frozen=True)
class Responder:
    """The responder's own principal as far as this process knows it: app (client) IDs, object IDs, tenants.

    Learnt only from values nobody else can set: AZURE_CLIENT_ID and the claims of the tokens this process
    obtained (dlp.azure.credential). Free text (UPN, `name`, display names) never counts."""

    app_ids: frozenset[str] = field(default_factory=frozenset)
    object_ids: frozenset[str] = field(default_factory=frozenset)
    tenant_ids: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, app_ids: Iterable[str] = (), object_ids: Iterable[str] = (), tenant_ids: Iterable[str] = ()
           ) -> Responder:
        def ids(values: Iterable[str]) -> frozenset[str]:
            return frozenset(g for g in (guid(v) for v in values) if g)
        return cls(ids(app_ids), ids(object_ids), ids(tenant_ids))

    @property
    def known(self) -> bool:
        return bool(self.app_ids or self.object_ids)

    def signed(self, context: Context) -> bool:
        """The event's signed claims name this identity (app or object ID; a foreign tenant never does)."""
        app_id, object_id, tenant_id = guid(context.caller_app_id), guid(context.caller_object_id), \
            guid(context.caller_tenant_id)
        if tenant_id and self.tenant_ids and tenant_id not in self.tenant_ids:
            return False
        return bool((app_id and app_id in self.app_ids) or (object_id and object_id in self.object_ids))

    def named(self, changed_by: str) -> bool:
        """Change history's `changedBy` is one of this identity's IDs (compared as GUIDs: no display name, no
        Unicode folding, can make someone else's name equal to ours)."""
        who = guid(changed_by)
        return bool(who) and (who in self.app_ids or who in self.object_ids)


# --- 1. is this event our own write? ------------------------------------------------------------------------


def own_write(context: Context, intents: Sequence[Intent], responder: Responder, now: datetime) -> Intent | None:
    """The intent whose write raised this event (the caller then marks it used, under its ETag), or None: evaluate
    the event like anyone's."""
    if context.trigger != "event" or not context.caller_verified or not responder.signed(context):
        return None
    correlation = fold(context.correlation_id.strip())
    if not correlation:
        return None
    at = parse_time(context.event_time) or now
    for intent in intents:
        if fold(intent.evaluation_id) != correlation:
            continue
        written, deadline = intent.written, intent.deadline
        if written is None or deadline is None:
            return None
        if not written - SKEW <= at <= deadline + SKEW or now > deadline + DELIVERY_SLACK:
            return None
        if intent.own_event and intent.own_event != context.event_id:
            return None            # one-shot: a second event with our correlation ID is someone's replay
        return intent
    return None


# --- 2. was this change the responder's? --------------------------------------------------------------------


def _path(change_key: str) -> str:
    """"properties.policies.exportPolicy.status" -> "policies.exportpolicy.status" (lower-case ARM path)."""
    key = change_key.lower()
    return key[len("properties."):] if key.startswith("properties.") else key


def _intends(intent: Intent, path: str, value: str | None) -> bool:
    return any(c.property.lower() == path and value is not None and c.new.lower() == value.lower()
               for c in intent.changes)


def landing_intent(record: ChangeRecord, change: PropertyChange, history: Sequence[ChangeRecord],
                   intents: Sequence[Intent], responder: Responder) -> Intent | None:
    """The intent this property change is the landing of, or None: then someone else made it."""
    if not responder.named(record.changed_by):
        return None
    correlation = fold(record.correlation_id.strip())
    if not correlation:
        return None
    if any(r.at < record.at for r in history if fold(r.correlation_id.strip()) == correlation):
        return None                # a later change replaying our correlation ID
    for intent in intents:
        if fold(intent.evaluation_id) != correlation:
            continue
        written, deadline = intent.written, intent.deadline
        if written is None or deadline is None or not written - SKEW <= record.at <= deadline + HISTORY_SKEW:
            return None
        return intent if _intends(intent, _path(change.path), change.new) else None
    return None


def closer_of(window: Window, history: Sequence[ChangeRecord], intents: Sequence[Intent],
              responder: Responder) -> str:
    """Who closed a closed window: RESPONDER (our write), IMPERSONATED (our identity, not our write) or ANYONE."""
    record = next((r for r in history if r.at == window.closed_at and r.correlation_id == window.closed_correlation
                   and any(_path(c.path) == window.property.lower() for c in r.changes)), None)
    if record is not None:
        change = next(c for c in record.changes if _path(c.path) == window.property.lower())
        if landing_intent(record, change, history, intents, responder) is not None:
            return RESPONDER
    return IMPERSONATED if responder.named(window.closed_by) else ANYONE


def responder_closes(history: Sequence[ChangeRecord], intents: Sequence[Intent], responder: Responder
                     ) -> Callable[[ChangeRecord, PropertyChange], bool]:
    """A predicate for dlp.domain.exposure.windows: does this change close a window as a responder's write whose
    remediation is (or will be) recorded? The landing of an intent marked lapsed or not applied is not: its window has
    no record of ours, so it is recorded like anyone's."""
    def closes(record: ChangeRecord, change: PropertyChange) -> bool:
        intent = landing_intent(record, change, history, intents, responder)
        return intent is not None and intent.recorded_or_pending
    return closes


# --- 3. did intent X land, and when? ------------------------------------------------------------------------


@dataclass(frozen=True)
class Landing:
    """Whether an intent's write is in effect, from evidence: `landed` True / False, or None (not known yet)."""

    landed: bool | None
    at: datetime | None = None
    evidence: str = ""               # BY_HISTORY or BY_OBSERVATION when landed
    closed_by: str = ""              # changedBy of the landing change (display only)


def landing(intent: Intent, history: Sequence[ChangeRecord] | None, responder: Responder, now: datetime, *,
            later: Sequence[Intent] = (), in_effect_now: bool = False) -> Landing:
    """Did this intent's write land? `history`: the registry's change rows since before the intent (None when they
    could not be read); `later`: the registry's intents (any status; those written after this one count); and
    `in_effect_now`: a read made now, after the intent's writer ended, finds its changes in effect.

    History decides when it shows the write, or when it covers the intent's time and does not. It covers it once
    CHANGE_LAG has passed since the intent's deadline, or once it shows the landing of a later intent of ours: the
    lease serialises our writers, so a later intent's write went out after this intent's writer had ended. Until
    then, a read that finds the changes in effect counts as landing (at the intent's time), unless a later intent of
    ours, or a change history shows someone else making, could have put them there. A read can only confirm, never
    deny: the registry may have been re-opened since. Otherwise it is not known yet, and asked again later."""
    written, deadline = intent.written, intent.deadline
    newer = [i for i in later if i.written is not None and written is not None and i.written > written]
    explained = False
    if history is not None and written is not None:
        for record in sorted(history, key=lambda r: r.at):
            for change in record.changes:
                if landing_intent(record, change, history, (intent,), responder) is not None:
                    return Landing(True, record.at, BY_HISTORY, record.changed_by)
                if newer and landing_intent(record, change, history, newer, responder) is not None:
                    return Landing(False)      # a later write of ours landed first: ours never did
                if record.at >= written - SKEW and _intends(intent, _path(change.path), change.new):
                    explained = True           # someone else put the intent's value there
        if deadline is not None and now >= deadline + CHANGE_LAG:
            return Landing(False)
    if in_effect_now and not newer and not explained:
        return Landing(True, written, BY_OBSERVATION)
    return Landing(None)


# --- 4. who opened this window? ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opening:
    """When and by whom a drift was opened; `source` says how it is known ("" when it is not)."""

    at: datetime | None = None
    by: str = ""
    correlation: str = ""
    source: str = ""
    window: Window | None = None     # change history's window, when that is the source


def opening(properties: Iterable[str], windows: Sequence[Window], context: Context, closed_by: str = "") -> Opening:
    """The opening of the drift a remediation of `properties` closes: change history's window for one of them that
    is still open, or that the remediation's own write (correlation ID `closed_by`) closed if history shows it
    already (the earliest such), else the event that reported the write, else unknown."""
    wanted = {p.lower() for p in properties}
    ours = fold(closed_by.strip())
    still_open = [w for w in windows if w.property.lower() in wanted and w.opened_at is not None
                  and (not w.closed or (ours and fold(w.closed_correlation.strip()) == ours))]
    if still_open:
        first = min(still_open, key=lambda w: w.opened_at)
        openers = {w.property: w.opened_by for w in sorted(still_open, key=lambda w: w.opened_at)}
        if len(set(openers.values())) > 1:      # one write closed windows two people opened: name them all
            first = replace(first, opened_by=", ".join(f"{by} ({prop})" for prop, by in openers.items()))
        return Opening(first.opened_at, first.opened_by, first.opened_correlation, BY_HISTORY, first)
    at = parse_time(context.event_time) if context.event_type else None
    if at is not None:
        return Opening(at, context.caller, context.correlation_id, "event")
    return Opening()


# --- 5. is this caller verified? -----------------------------------------------------------------------------


CONFIRM_WINDOW = timedelta(minutes=10)     # a replayed event's write is in change history around the event's time


def confirmed(context: Context, history: Sequence[ChangeRecord]) -> bool:
    """Whether the caller an unverified context names is the one change history names for its correlation ID, in a
    change around the event's time (a forged blob cannot borrow a real change of that caller from days before)."""
    if context.caller_verified:
        return True
    correlation = fold(context.correlation_id.strip())
    at = parse_time(context.event_time)
    if not correlation or not context.caller or at is None:
        return False
    names = {fold(v.strip()) for v in (context.caller, context.caller_object_id, context.caller_app_id) if v.strip()}
    names |= {fold(context.caller.split(":", 1)[1])} if context.caller.startswith(("app:", "object:")) else set()
    return any(fold(r.correlation_id.strip()) == correlation and fold(r.changed_by.strip()) in names
               and abs(r.at - at) <= CONFIRM_WINDOW for r in history)


__all__ = [
    "ANYONE",
    "BY_HISTORY",
    "BY_OBSERVATION",
    "CHANGE_LAG",
    "DELIVERY_SLACK",
    "HISTORY_SKEW",
    "IMPERSONATED",
    "RESPONDER",
    "SKEW",
    "Landing",
    "Opening",
    "Responder",
    "closer_of",
    "confirmed",
    "guid",
    "landing",
    "landing_intent",
    "opening",
    "own_write",
    "responder_closes",
]
