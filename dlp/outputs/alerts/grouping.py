"""Alert grouping and caps: which alert goes out at once, which waits for its burst's digest, which is folded. Pure.

A storm (one Terraform apply or one attacker touching thirty registries) must reach people as a handful of
messages that name everything, without delaying the first one and without letting anyone use the grouping to
make a change quieter. Every alert of a registry state change is counted twice: for its **registry** (in the
registry's alert row, committed with the state change) and for its **group**: the caller who made the change
(`Evaluation.context.caller`, from ARM's claims), or the registry itself when no caller is known (a sweep, a
retry, a manual re-check). Then, in order:

1. **A new kind of exposure goes out at once**: an alert whose kinds (the high-severity rules failing, the
   properties changed, and for guard and final states the state itself: `kinds_of`) are not all among the kinds
   its group was told within the cap window. The first alert of a burst is always new.
2. **Quiet before: at once.** No alert of this group or this registry within the grouping window
   (`DLP_ALERT_GROUP_WINDOW_S`): the alert is the first of a new burst (unless a cap folds it, 3).
3. **Over a cap: folded.** Beyond `DLP_ALERT_CAP_PER_REGISTRY` alerts of one registry, or
   `DLP_ALERT_CAP_PER_CALLER` of one group, within `DLP_ALERT_CAP_WINDOW_MIN`, an alert that brings nothing new
   *for its registry* is folded: it waits for the group's open digest, else for the end of the cap window, and the
   digest sums it up ("7 more changes on acrX by mallory, 14:00-15:00") instead of listing it in full. A kind the
   registry was not told in the window is never folded (tripping a cap with harmless flips cannot hide the next
   real opening).
4. **Otherwise held**: it joins its group's open digest window, or opens one (`window_s` long; while the burst
   goes on, each next window is twice as long as the last, up to the cap window, so a ten-minute apply costs a
   few digests, not ten).

`window_s == 0` turns grouping off (every alert at once); the caps still fold. Times are wall-clock seconds
(`time.time()`), the same clock as the outbox's claims: several instances compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dlp.outputs.alerts.alert import Alert
from dlp.outputs.alerts.states import (
    CHANGE_ITEM,
    RULE_ITEM,
    S_BREAKER,
    S_ERROR,
    S_EXEMPT,
    S_EXPOSED,
    S_FAILED,
    S_GONE,
    S_LEFT,
    S_TAG_EXEMPT,
)

STATE_ITEM = "state:"
# States whose entry is news in itself (a guard that stops enforcement, a failure, a final notice, a window found)
NOTABLE = frozenset({S_BREAKER, S_TAG_EXEMPT, S_EXEMPT, S_ERROR, S_FAILED, S_GONE, S_LEFT, S_EXPOSED})
MAX_TOLD = 64                 # kinds remembered per tally: rule IDs, property paths and states are a short list
FIRST, NEW_KIND, HELD, FOLDED, OFF = "first", "new-kind", "held", "folded", "off"


@dataclass(frozen=True)
class Limits:
    """The settings (dlp.settings: DLP_ALERT_GROUP_WINDOW_S, DLP_ALERT_CAP_PER_REGISTRY, DLP_ALERT_CAP_PER_CALLER,
    DLP_ALERT_CAP_WINDOW_MIN)."""

    window_s: float = 60.0
    registry_cap: int = 3
    caller_cap: int = 20
    cap_window_s: float = 3600.0

    @property
    def grouping(self) -> bool:
        return self.window_s > 0


@dataclass(frozen=True)
class Tally:
    """What was counted for one registry or one group in its current cap window."""

    last: float = 0.0             # when its last alert was counted
    start: float = 0.0            # start of the cap window (0: none open)
    count: int = 0                # alerts counted in the cap window
    told: frozenset[str] = frozenset()

    def current(self, now: float, limits: Limits) -> Tally:
        """The tally as it stands at `now`: an expired cap window counts nothing."""
        if self.start and now - self.start < limits.cap_window_s:
            return self
        return Tally(last=self.last)

    def counted(self, now: float, kinds: frozenset[str], limits: Limits) -> Tally:
        base = self.current(now, limits)
        told = base.told | kinds
        if len(told) > MAX_TOLD:
            told = frozenset(sorted(told)[:MAX_TOLD])
        return Tally(last=max(now, base.last), start=base.start or now, count=base.count + 1, told=told)

    def end(self, limits: Limits) -> float:
        return self.start + limits.cap_window_s

    def to_text(self) -> str:
        return ",".join(sorted(self.told))

    @staticmethod
    def told_from(text: str) -> frozenset[str]:
        return frozenset(item for item in (text or "").split(",") if item)


@dataclass(frozen=True)
class Burst:
    """A group's state (its row in the alert store): its tally and its digest window."""

    tally: Tally = field(default_factory=Tally)
    window_end: float = 0.0       # end of the latest digest window (open while in the future)
    span: float = 0.0             # that window's length
    scheduled: float = 0.0        # the latest flush time a message was scheduled for


@dataclass(frozen=True)
class Delivery:
    """What to do with one alert: send it now (`hold_until` 0), or keep it for the group's digest until then."""

    hold_until: float = 0.0
    folded: bool = False
    schedule: float = 0.0         # > 0: have the group flushed at this time (a queue message)
    reason: str = FIRST

    @property
    def held(self) -> bool:
        return self.hold_until > 0


NOW = Delivery()


def kinds_of(alert: Alert) -> frozenset[str]:
    """What kind of exposure an alert tells: the high-severity rules failing, the properties changed or withheld,
    and the state itself when entering it is news (a guard, a failure, a deletion, a scope exit, a window)."""
    items = {RULE_ITEM + rule.rule_id for rule in alert.failing if rule.severity == "high"}
    items |= {CHANGE_ITEM + prop for prop, _old, _new in alert.changes}
    if alert.state in NOTABLE:
        items.add(STATE_ITEM + alert.state)
    return frozenset(items)


def decide(now: float, limits: Limits, kinds: frozenset[str], registry: Tally, burst: Burst
           ) -> tuple[Delivery, Tally, Burst]:
    """The delivery of one alert, and the registry's and the group's state once it is counted."""
    reg = registry.current(now, limits)
    group = burst.tally.current(now, limits)
    new_registry = reg.counted(now, kinds, limits)
    new_burst = replace(burst, tally=group.counted(now, kinds, limits))
    quiet = not limits.grouping or now - max(reg.last, group.last) >= limits.window_s
    capped = reg.count >= limits.registry_cap or group.count >= limits.caller_cap
    if not kinds <= group.told:
        return Delivery(reason=NEW_KIND if group.count else FIRST), new_registry, new_burst
    if capped and kinds <= reg.told:
        if burst.window_end > now:
            hold = burst.window_end
        else:
            ends = [t.end(limits) for t, cap in ((reg, limits.registry_cap), (group, limits.caller_cap))
                    if t.count >= cap]
            hold = min(ends)
        return _held(now, hold, new_burst, registry=new_registry, folded=True)
    if quiet:
        return Delivery(reason=FIRST if limits.grouping else OFF), new_registry, new_burst
    if burst.window_end > now:
        return _held(now, burst.window_end, new_burst, registry=new_registry)
    going_on = burst.window_end > 0 and now - burst.window_end < limits.window_s
    span = min(max(burst.span, limits.window_s) * 2, limits.cap_window_s) if going_on else limits.window_s
    opened = replace(new_burst, window_end=now + span, span=span)
    return _held(now, now + span, opened, registry=new_registry)


def _held(now: float, hold: float, burst: Burst, *, registry: Tally, folded: bool = False
          ) -> tuple[Delivery, Tally, Burst]:
    schedule = hold if hold > burst.scheduled else 0.0
    if schedule:
        burst = replace(burst, scheduled=hold)
    return Delivery(hold, folded, schedule, FOLDED if folded else HELD), registry, burst


__all__ = ["FIRST", "FOLDED", "HELD", "NEW_KIND", "NOW", "OFF", "Burst", "Delivery", "Limits", "Tally", "decide",
           "kinds_of"]
