"""The per-registry alert state machine: one alert per state change, none for repeats, one alert
when two instances see the same change, and one Table query (not one per registry) for a sweep.

Pure rules first; then through AlertNotifier with Azurite tables and the Teams Workflows emulator.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from dataclasses import replace

import pytest
from azure.data.tables import TableServiceClient
from hypothesis import given, settings
from hypothesis import strategies as st

from dlp.azure.budget import Budget
from dlp.azure.state import partition_of
from dlp.domain.model import Context
from dlp.domain.rules import evaluate
from dlp.emulator import LocalAzure
from dlp.outputs.alerting import AlertNotifier, NullNotifier, build_notifier
from dlp.outputs.alerts.batch import MemoryOutbox
from dlp.outputs.alerts.states import (
    S_BLOCKED,
    S_BREAKER,
    S_COMPLIANT,
    S_ERROR,
    S_EXEMPT,
    S_FAILED,
    S_GONE,
    S_LEFT,
    S_NONCOMPLIANT,
    S_REMEDIATED,
    S_TAG_EXEMPT,
    Observed,
    Stored,
    decide,
    observe,
)
from dlp.outputs.alerts.store import MemoryAlertStore, TableAlertStore
from dlp.settings import Settings, load
from tests.alerts_support import (
    evaluation,
    locked,
    notifier,
    racing_instances,
    registry_id,
    table_name,
    tables,
    unique_name,
)

# --- pure: what each evaluation means, and what each change does ---------------------------------------


@pytest.mark.parametrize(("kind", "state"), [
    ("compliant", S_COMPLIANT), ("non-compliant", S_NONCOMPLIANT), ("remediated", S_REMEDIATED),
    ("blocked", S_BLOCKED), ("pipelines", S_BLOCKED), ("breaker", S_BREAKER), ("failed", S_FAILED),
    ("error", S_ERROR), ("tag-exempt", S_TAG_EXEMPT), ("exempt", S_EXEMPT), ("gone", S_GONE)])
def test_each_outcome_maps_to_one_alert_state(kind, state):
    assert observe(evaluation(registry_id("acr1"), kind)).state == state


def test_a_deferred_evaluation_is_not_a_state():
    assert observe(evaluation(registry_id("acr1"), "deferred")) is None


def test_only_high_severity_failures_make_a_registry_non_compliant_for_alerts():
    """The responder's own write leaves low findings (trusted services, data endpoint) failing; that
    re-evaluation must read as compliant, or every remediation would alert twice."""
    rid = registry_id("acr1")
    after_revert = evaluation(rid, "compliant")
    weak = evaluate(replace(locked(rid), network_bypass_options="AzureServices", data_endpoint_enabled=False))
    assert not weak.compliant and {f.severity for f in weak.failures} == {"low", "medium"}
    assert observe(replace(after_revert, assessment=weak)) == Observed(S_COMPLIANT)


def test_guard_sentence_and_failing_rules_are_part_of_the_state():
    rid = registry_id("acr1")
    assert observe(evaluation(rid, "blocked")) != observe(evaluation(rid, "pipelines"))
    other_pipeline = evaluation(rid, "pipelines", detail="delete export pipeline(s) weekly, then re-check")
    assert observe(other_pipeline).state == S_BLOCKED and observe(other_pipeline) != observe(evaluation(rid, "pipelines"))
    # a breaker's sentence carries a count that may differ: the same breaker is the same state
    assert observe(evaluation(rid, "breaker")) == observe(evaluation(rid, "breaker", detail="remediated 4 times"))
    # each remediation is its own write: never "the same state again"
    assert observe(evaluation(rid, "remediated")) != observe(evaluation(rid, "remediated"))


def _stored(state: str, signature: str = "") -> Stored:
    return Stored(state, signature, "a1", "2026-03-01T00:00:00+00:00", "etag")


@pytest.mark.parametrize(("previous", "observed", "write", "alert"), [
    (None, Observed(S_COMPLIANT), False, False),                       # never seen, compliant: no row at all
    (None, Observed(S_NONCOMPLIANT, "x"), True, True),
    (_stored(S_NONCOMPLIANT, "x"), Observed(S_NONCOMPLIANT, "x"), False, False),   # the same state again
    (_stored(S_NONCOMPLIANT, "x"), Observed(S_NONCOMPLIANT, "y"), True, True),     # other rules now fail
    (_stored(S_NONCOMPLIANT, "x"), Observed(S_COMPLIANT), True, True),              # back to compliant
    (_stored(S_REMEDIATED, "e1"), Observed(S_COMPLIANT), True, False),              # own write re-read: quiet
    (_stored(S_REMEDIATED, "e1"), Observed(S_REMEDIATED, "e2"), True, True),        # a second revert
    (_stored(S_REMEDIATED, "e1"), Observed(S_BREAKER, "b"), True, True),            # breaker always alerts...
    (_stored(S_BREAKER, "b"), Observed(S_BREAKER, "b"), False, False),              # ...once
    (_stored(S_NONCOMPLIANT, "x"), Observed(S_TAG_EXEMPT, "t"), True, True),        # tag exemption always alerts...
    (_stored(S_TAG_EXEMPT, "t"), Observed(S_TAG_EXEMPT, "t"), False, False),        # ...once per tag value
    (_stored(S_TAG_EXEMPT, "t"), Observed(S_TAG_EXEMPT, "t2"), True, True),
    (_stored(S_ERROR, "403"), Observed(S_ERROR, "403"), False, False),
    (_stored(S_ERROR, "403"), Observed(S_COMPLIANT), True, True),
    (_stored(S_BLOCKED, "pe"), Observed(S_GONE), True, True),                       # deleted while blocked: final notice
    (_stored(S_COMPLIANT), Observed(S_GONE), True, True),                           # deleted while fine: once too
    (None, Observed(S_GONE), True, True),                                           # (issue 22: scope exits)
    (_stored(S_GONE), Observed(S_GONE), False, False),                              # ...once
    (_stored(S_LEFT), Observed(S_GONE), False, False),                              # moved, then deleted: told
    (None, Observed(S_LEFT), True, True),                                           # left the monitored scope
    (_stored(S_GONE), Observed(S_LEFT), False, False),
    (_stored(S_GONE), Observed(S_COMPLIANT), True, False),                          # re-created, compliant
    (_stored(S_GONE), Observed(S_NONCOMPLIANT, "x"), True, True),
])
def test_decide(previous, observed, write, alert):
    decision = decide(previous, observed)
    assert (decision.write, decision.alert) == (write, alert)


class _Recorder:
    """A channel that keeps what it is given (the state machine's tests need no HTTP)."""

    name = "teams"

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, alerts, *, digest=False):
        self.sent.append(tuple(alerts))


KINDS = ["compliant", "non-compliant", "remediated", "blocked", "pipelines", "breaker", "failed", "error",
         "tag-exempt", "exempt", "deferred", "gone"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(KINDS), max_size=25))
def test_alerts_match_the_changes_of_state_for_any_sequence(kinds):
    """An alert exactly when decide() says so; repeating an evaluation never alerts."""
    rid = registry_id("acr1")
    channel = _Recorder()
    alerting = AlertNotifier(MemoryAlertStore(), [channel], MemoryOutbox())
    previous: Stored | None = None
    expected = 0
    for kind in kinds:
        ev = evaluation(rid, kind)
        seen = observe(ev)
        if seen is not None:
            decision = decide(previous, seen)
            expected += decision.alert
            if decision.write:
                previous = Stored(seen.state, seen.signature)
        alerting.notify([ev])
        before = len(channel.sent)
        if kind != "remediated":
            alerting.notify([ev])                       # the same evaluation again: silence
        assert len(channel.sent) == before
    assert len(channel.sent) == expected


# --- through Azurite and the Teams Workflows emulator -----------------------------------------------------


def _titles(azure: LocalAzure) -> list[str]:
    return [m["attachments"][0]["content"]["body"][0]["text"] for m in azure.teams.messages]


def test_one_alert_per_state_change_and_none_for_repeats(azurite_env: str, local_azure: LocalAzure):
    service = tables(azurite_env)
    alerting, outbox = notifier(service, teams_url=local_azure.teams.webhook_url())
    rid = registry_id(unique_name())
    script = [("compliant", 0), ("non-compliant", 1), ("non-compliant", 0), ("remediated", 1), ("compliant", 0),
              ("compliant", 0), ("non-compliant", 1), ("blocked", 1), ("blocked", 0), ("pipelines", 1),
              ("breaker", 1), ("breaker", 0), ("error", 1), ("error", 0), ("compliant", 1), ("tag-exempt", 1),
              ("tag-exempt", 0), ("deferred", 0), ("gone", 1), ("gone", 0)]
    for step, (kind, alerts) in enumerate(script):
        before = len(local_azure.teams.messages)
        with Budget.of(10).active():
            alerting.notify([evaluation(rid, kind)])
        assert len(local_azure.teams.messages) - before == alerts, f"step {step}: {kind}"
    assert outbox.count("alerts") == 0
    name = rid.rsplit("/", 1)[-1]
    assert _titles(local_azure) == [
        f"Drift detected: {name} (compliant → non-compliant)",
        f"Drift remediated: {name} (non-compliant → drift remediated)",
        f"Drift detected: {name} (compliant → non-compliant)",
        f"Remediation blocked: {name} (non-compliant → remediation blocked)",
        f"Remediation blocked: {name} (remediation blocked → remediation blocked)",
        f"Revert-war breaker tripped: {name} (remediation blocked → revert-war breaker tripped)",
        f"Evaluation error: {name} (revert-war breaker tripped → evaluation error)",
        f"Back to compliant: {name} (evaluation error → compliant)",
        f"Tag exemption used: {name} (compliant → tag exemption used)",
        f"Registry deleted: {name} (tag exemption used → deleted)",
    ]


def test_a_registry_that_stays_compliant_never_gets_a_row(azurite_env: str, local_azure: LocalAzure):
    service = tables(azurite_env)
    state = table_name("state")
    alerting, _ = notifier(service, teams_url=local_azure.teams.webhook_url(), state_table=state)
    rid = registry_id(unique_name())
    for _ in range(3):
        alerting.notify([evaluation(rid, "compliant")])
    assert TableAlertStore(service, state).get_all() == {} and local_azure.teams.messages == []


@pytest.mark.parametrize("kind", ["non-compliant", "breaker", "tag-exempt"])
def test_two_concurrent_invocations_for_one_change_send_one_alert(azurite_env: str, local_azure: LocalAzure, kind):
    """Two app instances (own Table clients, own notifiers) evaluate the same drift at the same moment."""
    instances = racing_instances(azurite_env, local_azure.teams.webhook_url(), table_name("state"))
    rid = registry_id(unique_name())
    errors: list[BaseException] = []

    def invoke(alerting: AlertNotifier) -> None:
        try:
            with Budget.of(10).active():
                alerting.notify([evaluation(rid, kind)])
        except BaseException as exc:       # notify must not raise; if it did, fail the test
            errors.append(exc)

    threads = [threading.Thread(target=invoke, args=(alerting,)) for alerting, _ in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(store.lost for _, store in instances) == 1          # both tried; the ETag let one win
    assert len(local_azure.teams.messages) == 1
    for alerting, _ in instances:                                  # and the state holds for both afterwards
        alerting.notify([evaluation(rid, kind)])
    assert len(local_azure.teams.messages) == 1


def _counting_service(connection_string: str) -> tuple[TableServiceClient, Counter]:
    calls: Counter = Counter()

    def count(request) -> None:
        http = request.http_request
        calls[(http.method, "query" if "$filter" in http.url else "point")] += 1

    return TableServiceClient.from_connection_string(connection_string, raw_request_hook=count), calls


def test_a_sweep_reads_every_alert_state_with_one_query(azurite_env: str, local_azure: LocalAzure):
    service, calls = _counting_service(azurite_env)
    state = table_name("state")
    store = TableAlertStore(service, state)
    store.get("/warm/up")                                  # table creation out of the count
    alerting, _ = notifier(tables(azurite_env), teams_url=local_azure.teams.webhook_url())
    alerting = AlertNotifier(store, [alerting._channels["teams"]], MemoryOutbox())
    names = [unique_name() for _ in range(60)]
    drifted = set(names[:3])
    evaluations = [evaluation(registry_id(n), "non-compliant" if n in drifted else "compliant") for n in names]
    calls.clear()
    with Budget.of(20).active():
        alerting.notify(evaluations, digest=True)
    assert calls[("GET", "query")] == 1                     # all alert rows at once
    assert calls[("GET", "point")] == 0                     # no read per registry
    assert calls[("POST", "point")] == 3                    # one insert per changed registry, none for compliant ones
    assert len(local_azure.teams.messages) == 1             # one digest card for the sweep
    rows = store.get_all()
    assert set(rows) == {partition_of(registry_id(n)) for n in drifted}
    assert all(r.state == S_NONCOMPLIANT for r in rows.values())
    calls.clear()
    with Budget.of(20).active():                            # next sweep: the three are fixed
        alerting.notify([evaluation(registry_id(n), "compliant") for n in names], digest=True)
    assert calls[("GET", "query")] == 1 and calls[("GET", "point")] == 0
    # updates with the ETags the query returned, each in one transaction with the alert it owes
    assert calls[("POST", "point")] == 3 and calls[("PUT", "point")] == 0
    assert len(local_azure.teams.messages) == 2
    assert "3 registries changed state" in json.dumps(local_azure.teams.messages[1], ensure_ascii=False)
    assert {r.state for r in store.get_all().values()} == {S_COMPLIANT}


def test_an_event_costs_one_point_read_and_nothing_more_when_nothing_changed(azurite_env: str,
                                                                            local_azure: LocalAzure):
    service, calls = _counting_service(azurite_env)
    store = TableAlertStore(service, table_name("state"))
    store.get("/warm/up")
    alerting = AlertNotifier(store, [_Recorder()], MemoryOutbox())
    rid = registry_id(unique_name())
    calls.clear()
    alerting.notify([evaluation(rid, "compliant")])
    assert sum(calls.values()) == 1 and calls[("GET", "point")] == 1


def test_state_storage_down_still_alerts_rather_than_losing_it(local_azure: LocalAzure, caplog):
    dead = TableServiceClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;", retry_total=0, connection_timeout=1)
    channel = _Recorder()
    alerting = AlertNotifier(TableAlertStore(dead, table_name("state")), [channel], MemoryOutbox())
    with caplog.at_level(logging.WARNING, logger="dlp.alerting"):
        alerting.notify([evaluation(registry_id("acr1"), "non-compliant")])
        alerting.notify([evaluation(registry_id("acr1"), "compliant")])
    assert [a.state for batch in channel.sent for a in batch] == [S_NONCOMPLIANT]
    assert "without de-duplication" in caplog.text


def test_with_neither_channel_alerts_are_off_and_said_once(caplog):
    with caplog.at_level(logging.INFO, logger="dlp.alerting"):
        result = build_notifier(Settings(), credential=None, table_service=None)
    assert isinstance(result, NullNotifier)
    assert [r.getMessage() for r in caplog.records if "alerts are off" in r.getMessage()] == [
        "alerts are off: neither DLP_TEAMS_WEBHOOK_URL nor DLP_EMAIL_ENDPOINT/SENDER/TO is set"]
    result.notify([evaluation(registry_id("acr1"), "non-compliant")])      # and notifying is a no-op


def test_the_composition_root_wires_tables_and_channels(azurite_env: str, local_azure: LocalAzure):
    """dlp.runtime's path: settings from the environment, the app's Table client, both channels."""
    settings_ = load(os.environ)
    built = build_notifier(settings_, credential=local_azure.credential(), table_service=tables(azurite_env))
    assert isinstance(built, AlertNotifier) and built.channels == ("teams", "email")
    rid = registry_id(unique_name())
    with Budget.of(15).active():
        built.notify([evaluation(rid, "breaker", context=Context(trigger="event", caller="bob@contoso.com"))])
    assert len(local_azure.teams.messages) == 1 and len(local_azure.email.sent) == 1
