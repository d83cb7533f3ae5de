"""The pure parts of alert grouping (issue 22): who goes out at once, who waits, who is folded; the fair drain order;
the one-line summaries; the settings. Fast: no I/O."""

from __future__ import annotations

import json

import pytest

from dlp.outputs.alerts import bodies, card, summary
from dlp.outputs.alerts.alert import Alert, FailingRule
from dlp.outputs.alerts.grouping import (
    FIRST,
    FOLDED,
    HELD,
    NEW_KIND,
    OFF,
    Burst,
    Limits,
    Tally,
    decide,
    kinds_of,
)
from dlp.outputs.alerts.kept import Kept, fair_order
from dlp.settings import load

LIMITS = Limits(window_s=60, registry_cap=3, caller_cap=5, cap_window_s=3600)
EXPORTS = frozenset({"rule:DLP.ACR.ExportPolicy", "change:policies.exportPolicy.status"})
PUBLIC = frozenset({"rule:DLP.ACR.PublicNetworkAccess"})


def run(steps, limits=LIMITS):
    """Alerts of one group: (seconds, registry, kinds) -> the reasons, with the registries' and group's state kept."""
    registries: dict[str, Tally] = {}
    burst = Burst()
    out = []
    for at, registry, kinds in steps:
        delivery, registries[registry], burst = decide(1000.0 + at, limits, kinds, registries.get(registry, Tally()),
                                                       burst)
        out.append((delivery.reason, delivery.hold_until - 1000.0 if delivery.held else 0.0))
    return out, burst


def test_a_burst_is_its_first_alert_at_once_and_the_rest_in_one_window():
    out, burst = run([(0, f"r{i}", EXPORTS) for i in range(1)] + [(1 + i * 0.1, f"r{i + 1}", EXPORTS) for i in range(4)])
    assert out[0] == (FIRST, 0.0)
    assert out[1:] == [(HELD, 61.0)] * 4            # one window, opened by the second alert
    assert burst.window_end == 1061.0 and burst.scheduled == 1061.0


def test_quiet_for_a_window_makes_the_next_alert_first_again():
    out, _ = run([(0, "a", EXPORTS), (61, "b", EXPORTS), (200, "c", EXPORTS)])
    assert [reason for reason, _ in out] == [FIRST, FIRST, FIRST]


def test_a_new_kind_for_the_group_goes_out_at_once_even_inside_a_burst():
    out, _ = run([(0, "a", EXPORTS), (1, "b", EXPORTS), (2, "c", EXPORTS | PUBLIC), (3, "d", PUBLIC)])
    assert [reason for reason, _ in out] == [FIRST, HELD, NEW_KIND, HELD]


def test_a_burst_that_goes_on_gets_longer_windows():
    steps = [(0, "a", EXPORTS)] + [(t, f"r{t}", EXPORTS) for t in (1, 55, 63, 110, 160, 190)]
    out, _ = run(steps, Limits(window_s=60, registry_cap=100, caller_cap=100))
    assert out == [(FIRST, 0.0), (HELD, 61.0), (HELD, 61.0), (HELD, 183.0), (HELD, 183.0), (HELD, 183.0),
                   (HELD, 430.0)]


def test_repeats_beyond_the_registry_cap_are_folded_until_the_window_or_the_cap_window_ends():
    flips = [(t, "acrx", EXPORTS if i % 2 == 0 else frozenset()) for i, t in enumerate((0, 600, 1200, 1800, 1900))]
    out, _ = run(flips)
    assert [reason for reason, _ in out] == [FIRST, FIRST, FIRST, FOLDED, FOLDED]
    assert out[3][1] == 3600.0 and out[4][1] == 3600.0                   # the end of the registry's cap window


def test_a_kind_the_registry_was_not_told_is_never_folded_even_over_every_cap():
    """Tripping the caps with harmless flips on one registry cannot hide opening exports on another."""
    steps = [(t, "junk", EXPORTS if i % 2 == 0 else frozenset()) for i, t in enumerate(range(0, 700, 100))]
    steps.append((800, "prod", EXPORTS))
    out, _ = run(steps)
    assert out[-1][0] == FIRST                          # quiet before, and new for `prod`: never folded


def test_without_a_window_every_alert_goes_at_once_and_caps_still_fold():
    limits = Limits(window_s=0, registry_cap=2, caller_cap=100)
    out, _ = run([(0, "a", EXPORTS), (1, "a", frozenset()), (2, "a", EXPORTS)], limits)
    assert [reason for reason, _ in out] == [FIRST, OFF, FOLDED]


def test_kinds_name_the_rules_the_changes_and_the_notable_states():
    alert = Alert(alert_id="1", registry_id="", registry_name="r", resource_group="", subscription_id="",
                  previous="compliant", state="left-scope", at="",
                  failing=(FailingRule("DLP.ACR.ExportPolicy", "high", "x"), FailingRule("DLP.ACR.DataEndpoint", "low", "y")),
                  changes=(("publicNetworkAccess", "Enabled", "Disabled"),))
    assert kinds_of(alert) == {"rule:DLP.ACR.ExportPolicy", "change:publicNetworkAccess", "state:left-scope"}


def test_fair_order_takes_the_oldest_of_each_registry_in_turn():
    rows = [Kept("aaa", f"out|{i}|teams", "teams", None, created=f"2026-01-01T00:00:{i:02d}") for i in range(10)]
    rows += [Kept(p, "out|x|teams", "teams", None, created=f"2026-01-01T00:01:0{n}") for n, p in enumerate("bcd")]
    assert [k.partition for k in fair_order(rows, 6)] == ["aaa", "b", "c", "d", "aaa", "aaa"]


def test_a_digest_mail_names_every_registry_and_sums_up_the_folded():
    alerts = [Alert(alert_id=f"a{i}", registry_id=f"/x/r{i}", registry_name=f"acr{i:03}", resource_group="rg",
                    subscription_id="s", previous="compliant", state="remediated", at="2026-03-01T10:00:00+00:00",
                    caller="mallory@contoso.com", trigger="event") for i in range(120)]
    folded = [Alert(alert_id=f"f{i}", registry_id="/x/flip", registry_name="acrflip", resource_group="rg",
                    subscription_id="s", previous="compliant", state="non-compliant" if i % 2 else "compliant",
                    at=f"2026-03-01T10:{i:02d}:00+00:00", caller="mallory@contoso.com", trigger="event")
              for i in range(7)]
    mail = bodies.render(alerts + folded, digest_=True, note="Grouped alerts by mallory", folded=[a.alert_id for a in folded])
    assert all(f"acr{i:03}" in mail.plain and f"acr{i:03}" in mail.html for i in range(120))
    assert "7 more changes on acrflip by mallory@contoso.com, 10:00–10:06 UTC" in mail.plain
    assert mail.subject == "[ACR DLP] 127 changes on 121 registries"
    message = card.message(alerts + folded, digest=True, note="Grouped alerts by mallory",
                           folded=[a.alert_id for a in folded])
    assert len(card.encode(message)) < card.MAX_MESSAGE_BYTES
    text = json.dumps(message)
    assert "the email lists every registry" in text and "7 more changes on acrflip" in text
    assert summary.title(alerts[:3]) == "3 registries changed state"


@pytest.mark.parametrize(("name", "value"), [("DLP_ALERT_GROUP_WINDOW_S", "-1"), ("DLP_ALERT_CAP_PER_REGISTRY", "0"),
                                             ("DLP_ALERT_CAP_PER_CALLER", "many"), ("DLP_ALERT_CAP_WINDOW_MIN", "2")])
def test_an_unusable_grouping_setting_keeps_its_default_and_is_reported_never_stopping_anything(name, value):
    settings = load({name: value})
    assert [n for n, _ in settings.degraded] == [name]
    assert (settings.alert_group_window_s, settings.alert_cap_per_registry, settings.alert_cap_per_caller,
            settings.alert_cap_window_min) == (60.0, 3, 20, 60)


def test_grouping_settings_are_read():
    settings = load({"DLP_ALERT_GROUP_WINDOW_S": "0", "DLP_ALERT_CAP_PER_REGISTRY": "7",
                     "DLP_ALERT_CAP_PER_CALLER": "70", "DLP_ALERT_CAP_WINDOW_MIN": "30"})
    assert (settings.alert_group_window_s, settings.alert_cap_per_registry, settings.alert_cap_per_caller,
            settings.alert_cap_window_min, settings.degraded) == (0.0, 7, 70, 30, ())

