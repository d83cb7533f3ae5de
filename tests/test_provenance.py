"""dlp.domain.provenance on its own (pure): who made a change, and did our write land.

Every rule is tested by taking away one piece of evidence at a time: a verdict for the responder needs all of them,
so an attacker who can fake or replay one (a correlation ID read from the Activity Log, the responder's identity
attached to their VM, a display name) gets nothing. The same rules through the real handlers, the emulators and
Azurite: tests/test_provenance_flow.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from dlp.domain import exposure, provenance
from dlp.domain.exposure import ChangeRecord, PropertyChange
from dlp.domain.intent import LAPSED, NOT_APPLIED, PENDING, RECORDED, Intent
from dlp.domain.model import Change, Context
from dlp.domain.provenance import Responder

REG = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/"
       "Microsoft.ContainerRegistry/registries/acr1")
APP = "5a5a5a5a-1b1b-4c4c-8d8d-9e9e9e9e9e9e"
OID = "6b6b6b6b-2c2c-4d4d-8e8e-0f0f0f0f0f0f"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
US = Responder.of(app_ids=[APP], object_ids=[OID], tenant_ids=[TENANT])
EXPORT_OFF = Change("policies.exportPolicy.status", "enabled", "disabled")
PUBLIC_OFF = Change("publicNetworkAccess", "Enabled", "Disabled")


def intent(eid: str = "intent-1", at: datetime = T0, *, changes=(EXPORT_OFF,), seconds: float = 30.0, **extra) -> Intent:
    return Intent(at.isoformat(), "mallory@contoso.com", eid, tuple(changes), status=PENDING,
                  until=(at + timedelta(seconds=seconds)).timestamp(), **extra)


def event(correlation: str = "intent-1", at: datetime = T0 + timedelta(seconds=1), **fields) -> Context:
    base = {"trigger": "event", "event_id": "ev-1", "event_type": "Microsoft.Resources.ResourceWriteSuccess",
            "correlation_id": correlation, "event_time": at.isoformat(),
            "caller": f"app:{APP}", "caller_app_id": APP, "caller_object_id": OID, "caller_tenant_id": TENANT,
            "caller_verified": True}
    return Context(**{**base, **fields})


def record(correlation: str = "intent-1", at: datetime = T0 + timedelta(seconds=1), *, by: str = APP,
           path: str = "properties.policies.exportPolicy.status", previous: str = "enabled", new: str = "disabled",
           change_id: str = "c1") -> ChangeRecord:
    return ChangeRecord(REG, at, "update", by, "azure-sdk-for-python", "write", correlation, change_id,
                        (PropertyChange(path.lower(), previous, new),))


# --- 1. own writes -----------------------------------------------------------------------------------------


def test_our_event_is_our_own_write():
    assert provenance.own_write(event(), [intent()], US, T0 + timedelta(seconds=2)) == intent()


def test_an_event_is_ours_only_with_every_piece_of_evidence():
    now = T0 + timedelta(seconds=2)
    cases = {
        "another correlation ID": event("intent-2"),
        "no correlation ID": event(""),
        "not our identity": event(caller_app_id="0badc0de-0000-4000-8000-000000000001",
                                  caller_object_id="0badc0de-0000-4000-8000-000000000002"),
        "our app ID in another tenant": event(caller_tenant_id="0badc0de-0000-4000-8000-00000000beef"),
        "claims nobody vouched for (a file, a dead-letter blob)": event(caller_verified=False),
        "not an Event Grid event": event(trigger="dead-letter"),
        "before the intent was written": event(at=T0 - provenance.SKEW - timedelta(seconds=1)),
        "after the intent's deadline (a replay of our correlation ID)": event(at=T0 + timedelta(minutes=10)),
    }
    for why, context in cases.items():
        assert provenance.own_write(context, [intent()], US, now) is None, why
    late = T0 + timedelta(seconds=30) + provenance.DELIVERY_SLACK + timedelta(seconds=1)
    assert provenance.own_write(event(), [intent()], US, late) is None, "delivered after the slack"


def test_the_skip_is_one_shot_a_redelivery_of_the_same_event_still_skips():
    used = intent(own_event="ev-1")
    now = T0 + timedelta(seconds=2)
    assert provenance.own_write(event(), [used], US, now) == used                       # the same event again
    assert provenance.own_write(event(event_id="ev-2"), [used], US, now) is None        # a second event: evaluated


# --- 2. changes made by the responder ---------------------------------------------------------------------


def test_a_change_is_ours_with_every_piece_of_evidence():
    ours = record()
    assert provenance.landing_intent(ours, ours.changes[0], [ours], [intent()], US) == intent()


def test_a_change_is_not_ours_when_any_piece_is_missing():
    ours = record()
    cases = {
        "someone else wrote it": record(by="mallory@contoso.com"),
        "a display name equal to ours is no GUID": record(by=f"app:{APP}"),
        "another correlation ID": record("intent-2"),
        "outside the intent's time (a replay minutes later)": record(at=T0 + timedelta(minutes=10)),
        "before the intent": record(at=T0 - timedelta(minutes=2)),
        "another property than the intent's": record(path="properties.publicNetworkAccess", previous="enabled"),
        "another value than the intent's": record(new="enabled", previous="disabled"),
    }
    for why, change in cases.items():
        assert provenance.landing_intent(change, change.changes[0], [change], [intent()], US) is None, why
    replay = record(at=T0 + timedelta(seconds=5), change_id="c2")          # our correlation ID, ours, in time...
    assert provenance.landing_intent(replay, replay.changes[0], [ours, replay], [intent()], US) is None  # not first


@given(by_us=st.booleans(), correlation_ok=st.booleans(), in_time=st.booleans(), first=st.booleans(),
       property_ok=st.booleans(), value_ok=st.booleans())
def test_no_subset_of_the_evidence_makes_a_change_ours(by_us, correlation_ok, in_time, first, property_ok, value_ok):
    at = T0 + (timedelta(seconds=3) if in_time else timedelta(minutes=10))
    change = record("intent-1" if correlation_ok else "intent-x", at, by=APP if by_us else "eve@contoso.com",
                    path="properties.policies.exportPolicy.status" if property_ok else "properties.publicNetworkAccess",
                    new="disabled" if value_ok else "enabled", previous="enabled" if value_ok else "disabled",
                    change_id="later")
    history = [change] if first else [record("intent-1" if correlation_ok else "intent-x", T0 + timedelta(seconds=2),
                                             change_id="earlier"), change]
    verdict = provenance.landing_intent(change, change.changes[0], history, [intent()], US)
    assert (verdict is not None) == all((by_us, correlation_ok, in_time, first, property_ok, value_ok))


def test_who_closed_a_window():
    opened = record("theirs", T0 - timedelta(seconds=30), by="mallory@contoso.com", previous="disabled", new="enabled",
                    change_id="c0")
    for closing, expected in ((record(), provenance.RESPONDER),
                              (record(at=T0 + timedelta(minutes=10)), provenance.IMPERSONATED),
                              (record(by="bob@contoso.com"), provenance.ANYONE)):
        history = [opened, closing]
        (window,) = exposure.registry_windows(history)
        assert provenance.closer_of(window, history, [intent()], US) == expected
        closes = provenance.responder_closes(history, [intent()], US)
        (judged,) = exposure.registry_windows(history, closes)
        assert (judged.closer == exposure.CLOSED_BY_RESPONDER) == (expected == provenance.RESPONDER)


# --- 3. did an intent land? -------------------------------------------------------------------------------


def test_history_that_shows_the_write_decides_it_landed():
    verdict = provenance.landing(intent(), [record()], US, T0 + timedelta(minutes=1))
    assert verdict == provenance.Landing(True, T0 + timedelta(seconds=1), provenance.BY_HISTORY, APP)


def test_a_later_read_that_finds_drift_never_decides():
    """The registry was re-opened after our write landed: only history may say our write never landed."""
    soon = T0 + timedelta(minutes=1)
    assert provenance.landing(intent(), [], US, soon).landed is None               # history may lag
    assert provenance.landing(intent(), None, US, soon).landed is None             # history unreadable
    covered = T0 + timedelta(seconds=30) + provenance.CHANGE_LAG
    assert provenance.landing(intent(), [], US, covered) == provenance.Landing(False)
    assert provenance.landing(intent(), None, US, covered).landed is None          # unreadable: still unknown


def test_a_later_write_of_ours_in_history_covers_an_earlier_intent():
    """The lease serialises our writers: a later intent's landing means an earlier write that is not before it
    never landed, with no clock to wait for."""
    later = intent("intent-2", T0 + timedelta(seconds=40))
    theirs = record("intent-2", T0 + timedelta(seconds=41), change_id="c2")
    soon = T0 + timedelta(minutes=1)
    assert provenance.landing(intent(), [theirs], US, soon, later=[later]) == provenance.Landing(False)
    both = [record(), theirs]
    assert provenance.landing(intent(), both, US, soon, later=[later]).landed is True


def test_a_read_finding_the_changes_in_effect_confirms_only_when_nothing_else_of_ours_explains_it():
    soon = T0 + timedelta(minutes=1)
    assert provenance.landing(intent(), None, US, soon, in_effect_now=True) == provenance.Landing(
        True, T0, provenance.BY_OBSERVATION)                    # at the intent's time, not the settling read's
    later = replace(intent("intent-2", T0 + timedelta(seconds=40)), status=RECORDED)
    assert provenance.landing(intent(), None, US, soon, later=[later], in_effect_now=True).landed is None
    # history shows someone else putting the intent's value there: the read proves nothing about our write
    theirs = record("bob-fix", T0 + timedelta(seconds=2), by="bob@contoso.com")
    assert provenance.landing(intent(), [theirs], US, soon, in_effect_now=True).landed is None
    covered = T0 + timedelta(seconds=30) + provenance.CHANGE_LAG
    assert provenance.landing(intent(), [theirs], US, covered, in_effect_now=True) == provenance.Landing(False)


def test_the_landing_of_a_lapsed_intent_hides_no_window():
    """An intent marked lapsed (history did not show its write in time) whose write shows up after all: its close
    has no record of ours, so the window is recorded like anyone's instead of being skipped as ours."""
    opened = record("theirs", T0 - timedelta(seconds=30), by="mallory@contoso.com", previous="disabled", new="enabled",
                    change_id="c0")
    history = [opened, record()]
    for status, closer in ((PENDING, exposure.CLOSED_BY_RESPONDER), (RECORDED, exposure.CLOSED_BY_RESPONDER),
                           (LAPSED, exposure.CLOSED_BY_PERSON), (NOT_APPLIED, exposure.CLOSED_BY_PERSON)):
        closes = provenance.responder_closes(history, [replace(intent(), status=status)], US)
        (window,) = exposure.registry_windows(history, closes)
        assert window.closer == closer, status


# --- 4. who opened a window? ------------------------------------------------------------------------------


def test_the_opener_comes_from_history_then_the_event_then_nobody():
    opened = record("theirs", T0 - timedelta(seconds=30), by="mallory@contoso.com", previous="disabled",
                    new="enabled")
    (window,) = exposure.registry_windows([opened])
    found = provenance.opening(["policies.exportPolicy.status"], [window], Context(trigger="retry"))
    assert (found.by, found.at, found.source) == ("mallory@contoso.com", T0 - timedelta(seconds=30), "change-history")
    other_property = provenance.opening(["publicNetworkAccess"], [window], event())
    assert (other_property.by, other_property.source) == (f"app:{APP}", "event")
    assert provenance.opening(["publicNetworkAccess"], [window], Context(trigger="retry")) == provenance.Opening()


def test_one_write_closing_windows_two_people_opened_names_both():
    exports = record("m", T0 - timedelta(seconds=30), by="mallory@contoso.com", previous="disabled", new="enabled",
                     change_id="c0")
    public = record("e", T0 - timedelta(seconds=20), by="eve@contoso.com", path="properties.publicNetworkAccess",
                    previous="disabled", new="enabled", change_id="c1")
    windows = exposure.registry_windows([exports, public])
    found = provenance.opening(["policies.exportPolicy.status", "publicNetworkAccess"], windows, Context())
    assert found.at == T0 - timedelta(seconds=30)
    assert found.by == "mallory@contoso.com (policies.exportPolicy.status), eve@contoso.com (publicNetworkAccess)"
    assert found.window is not None and found.window.opened_by == found.by


# --- 5. is a caller verified? -----------------------------------------------------------------------------


def test_claims_from_a_file_are_verified_only_by_change_history():
    when = (T0 + timedelta(seconds=1)).isoformat()
    forged = Context(trigger="dead-letter", caller="alice@contoso.com", correlation_id="corr-9", event_time=when)
    assert not provenance.confirmed(forged, [])
    assert not provenance.confirmed(forged, [record("corr-9", by="mallory@contoso.com")])     # history names another
    assert not provenance.confirmed(forged, [record("corr-8", by="alice@contoso.com")])       # another write
    assert provenance.confirmed(forged, [record("corr-9", by="ALICE@contoso.com")])
    borrowed = replace(forged, event_time=(T0 + timedelta(days=3)).isoformat())               # a real change, days away
    assert not provenance.confirmed(borrowed, [record("corr-9", by="alice@contoso.com")])
    assert not provenance.confirmed(replace(forged, event_time=""), [record("corr-9", by="alice@contoso.com")])
    app = Context(trigger="dead-letter", caller=f"app:{APP}", caller_app_id=APP, correlation_id="corr-9", event_time=when)
    assert provenance.confirmed(app, [record("corr-9", by=APP)])
    assert not provenance.confirmed(Context(trigger="dead-letter", caller="alice@contoso.com", event_time=when),
                                    [record("", by="alice@contoso.com")])        # no correlation ID: nothing to match
