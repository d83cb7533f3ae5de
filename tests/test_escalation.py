"""Adversarial safety (issue 11, items 1, 2 and 6), through the Functions handlers, the ARM and Teams emulators and
Azurite (Table state, the durable-retry queue):

1. the mode in force when a write happens decides: a durable retry (or a scheduled re-check) writes only when
   DLP_MODE is `enforce` then AND the trigger that queued it was allowed to write; switching to audit stops
   every pending write at once;
2. the revert-war breaker and exemptions (list or tag) never hide an escalation: a new exposure while held alerts
   again, naming what is new and who did it; identical repeats stay quiet; the breaker's window end is re-checked
   from a scheduled message on the durable-retry queue;
6. a drift that cannot be fixed now alerts now ("remediation pending", with the next attempt's time), the outcome
   later alerts as a state change, and the retry schedule starts within 10 s and covers at least two hours.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import time
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.azure.retryqueue import BACKOFF_S, MAX_ATTEMPTS, backoff_s
from dlp.emulator.base import arm_error
from dlp.outputs.alerts.states import (
    S_BLOCKED,
    S_BREAKER,
    S_EXEMPT,
    S_NONCOMPLIANT,
    S_PENDING,
    S_TAG_EXEMPT,
    Observed,
    Stored,
    decide,
)
from dlp.settings import RETRY_QUEUE
from tests.evaluation_log import Evaluations

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-escalation"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()


def rid(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/{name}"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"      # storage (breaker rows, alert state) outlives a test


@pytest.fixture
def app(azurite_env, azurite, monkeypatch):
    """Enforce mode, 5 s budget, Teams alerts on (email off: it has its own tests), the retry queue at hand."""
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "5")
    for name in ("DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)
    queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    runtime.reset()
    with Evaluations() as collector:
        yield App(collector, queue)
    runtime.reset()
    for message in queue.receive_messages(max_messages=32, visibility_timeout=1):    # leave no work of ours behind
        if f"/resourceGroups/{RG}/".lower() in base64.b64decode(message.content).decode().lower():
            queue.delete_message(message)


class App:
    def __init__(self, evaluations: Evaluations, queue: QueueClient):
        self.evaluations = evaluations
        self.queue = queue

    @staticmethod
    def instance(*, at_once: bool = True, clock: Any = None):
        """A fresh Function App instance (new composition root, same storage)."""
        runtime.reset()
        services = runtime.services()
        if at_once:
            services.retry.base_delay_s = 0     # durable-retry messages visible at once instead of on schedule
        if clock is not None:
            services.clock = clock
        return services

    def messages(self, *registry_ids: str, wait_s: float = 0.0) -> list[tuple[Any, dict]]:
        """These registries' durable-retry messages (others' reappear a second later), waiting up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        wanted = {registry_id.lower() for registry_id in registry_ids}
        while True:
            found = []
            for message in self.queue.receive_messages(max_messages=32, visibility_timeout=1):
                body = json.loads(base64.b64decode(message.content).decode())
                if body.get("registryId", "").lower() in wanted:
                    found.append((message, body))
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)

    def replay(self, messages: list[tuple[Any, dict]]) -> None:
        """The queue trigger takes each message (as the host would, then deletes it)."""
        for message, body in messages:
            handle_retry(func.QueueMessage(id=message.id, body=json.dumps(body).encode(),
                                           pop_receipt=message.pop_receipt))
            self.queue.delete_message(message)

    def outcomes(self, registry_id: str) -> list[tuple[str, str]]:
        return [(r["action"], r["reason"]) for r in self.evaluations.take(registry_id)]


def event(registry_id: str, *, caller: str = "mallory@contoso.com", event_id: str = "") -> func.EventGridEvent:
    data = {"claims": {UPN: caller}, "correlationId": str(uuid.uuid4()), "resourceUri": registry_id,
            "operationName": "Microsoft.ContainerRegistry/registries/write", "status": "Succeeded",
            "subscriptionId": SUB}
    return func.EventGridEvent(id=event_id or str(uuid.uuid4()), data=data, topic=f"/subscriptions/{SUB}",
                               subject=registry_id, event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def drifted(azure, prefix: str) -> tuple[str, str]:
    """A new Premium registry (approved private endpoint, public access off) whose exports someone turned on."""
    name = unique(prefix)
    return name, azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]


def set_props(azure, registry_id: str, **props: Any) -> None:
    """What the attacker does with Contributor: change the registry's properties (and tags) directly."""
    current = azure.arm.get(registry_id)
    properties = dict(current["properties"])
    if "export" in props:
        properties["policies"] = {**properties["policies"], "exportPolicy": {"status": props.pop("export")}}
    tags = props.pop("tags", current.get("tags"))
    properties.update(props)
    azure.arm.add({**current, "properties": properties, "tags": tags})


def cards(azure, name: str) -> list[str]:
    """The Teams cards that name this registry, as text."""
    return [text for text in (json.dumps(m, ensure_ascii=False) for m in azure.teams.messages) if name in text]


def title(card: str) -> str:
    return json.loads(card)["attachments"][0]["content"]["body"][0]["text"]


def patches(azure) -> int:
    return azure.arm.log.count(method="PATCH")


def export_and_public(azure, registry_id: str) -> tuple[str, str]:
    props = azure.arm.get(registry_id)["properties"]
    return props["policies"]["exportPolicy"]["status"], props["publicNetworkAccess"]


# --- item 1: the mode in force when the write happens decides ---------------------------------------------------


def test_switching_to_audit_stops_every_pending_write_at_once(app, local_azure, monkeypatch):
    """Writes deferred in enforce mode (ARM refusing the PATCH) must not happen after the operator switches the app
    to audit, even though the work was queued while enforcing: the retries report, they do not write."""
    names = [unique("acrmode"), unique("acrmode")]
    registries = [local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"] for name in names]
    local_azure.arm.faults.add(method="PATCH", status=503, times=None, body=arm_error("ServiceUnavailable", "later"))
    app.instance()
    for registry_id in registries:
        handle_event(event(registry_id))
        assert app.outcomes(registry_id) == [("deferred", "ServiceUnavailable")]
    queued = app.messages(*registries)
    assert sorted(body["registryId"] for _, body in queued) == sorted(registries)
    assert all(body["enforce"] is True and body["pending"] for _, body in queued)

    local_azure.arm.faults.clear()
    monkeypatch.setenv("DLP_MODE", "audit")       # an app-setting change restarts the host: a fresh instance
    app.instance()
    local_azure.arm.log.reset()
    app.replay(queued)
    records = app.evaluations.take()
    for registry_id in registries:
        assert [(r["action"], r["reason"]) for r in records if r["registryId"] == registry_id] == \
            [("would-remediate", "audit-mode")]
        assert export_and_public(local_azure, registry_id) == ("enabled", "Disabled")
    assert patches(local_azure) == 0


@pytest.mark.parametrize(("flag", "mode", "writes"), [
    (True, "enforce", True),          # queued while enforcing, still enforcing: the retry writes
    (False, "enforce", False),        # a plan-only re-check stays plan-only
    ("missing", "enforce", False),    # a message that does not say it may write, may not
    ("true", "enforce", False),       # nor one that says so in anything but JSON true
    (1, "enforce", False),
    (True, "audit", False),           # the mode now decides: audit never writes
])
def test_a_retry_may_narrow_what_its_trigger_was_allowed_never_widen_it(app, local_azure, monkeypatch, flag, mode,
                                                                        writes):
    _, registry_id = drifted(local_azure, "acrflag")
    monkeypatch.setenv("DLP_MODE", mode)
    app.instance()
    body: dict[str, Any] = {"registryId": registry_id, "attempt": 1, "context": {"trigger": "event"}}
    if flag != "missing":
        body["enforce"] = flag
    handle_retry(func.QueueMessage(id="m1", body=json.dumps(body).encode(), pop_receipt="r1"))
    expected = ("remediated", "-") if writes else ("would-remediate", "audit-mode")
    assert app.outcomes(registry_id) == [expected]
    assert (patches(local_azure) == 1) == writes
    assert export_and_public(local_azure, registry_id)[0] == ("disabled" if writes else "enabled")


# --- item 6: a drift that cannot be fixed now is alerted now ------------------------------------------------------


def test_a_deferred_drift_alerts_now_with_the_next_attempt_then_its_outcome_alerts_as_a_change(app, local_azure):
    """ARM refuses the PATCH (503 on every try): the first deferral alerts "remediation pending" with the next
    attempt's time, within 10 s; a second deferral is the same state (quiet); the retry that works alerts
    "remediated" as a change from "remediation pending"."""
    name, registry_id = drifted(local_azure, "acrpend")
    fault = local_azure.arm.faults.add(method="PATCH", status=503, times=None,
                                       body=arm_error("ServiceUnavailable", "later"))
    app.instance(at_once=False)                   # the real schedule: the first attempt within 10 s
    before = dt.datetime.now(dt.timezone.utc)
    handle_event(event(registry_id, caller="mallory@contoso.com"))
    after = dt.datetime.now(dt.timezone.utc)
    assert app.outcomes(registry_id) == [("deferred", "ServiceUnavailable")] and fault.hits >= 1
    (card,) = cards(local_azure, name)
    assert title(card) == f"Drift detected, remediation pending: {name} (compliant → remediation pending)"
    assert "mallory@contoso.com" in card and "policies.exportPolicy.status enabled → disabled" in card
    (attempt_at,) = [fact["value"] for fact in _facts(card) if fact["title"] == "Next attempt"]
    # deferred between `before` and `after`, then at most 10 s (the alert's time is cut to the second)
    assert before.replace(microsecond=0) < dt.datetime.fromisoformat(attempt_at) <= after + dt.timedelta(seconds=10)
    assert app.messages(registry_id) == []         # invisible until then...
    found = app.messages(registry_id, wait_s=12)   # ...and visible by then
    assert [body["attempt"] for _, body in found] == [1]

    app.instance()                                 # another instance takes the retry; ARM still refuses
    app.replay(found)
    assert app.outcomes(registry_id) == [("deferred", "ServiceUnavailable")]
    assert len(cards(local_azure, name)) == 1      # the same pending drift again: quiet

    local_azure.arm.faults.clear()
    app.replay(app.messages(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "-")]
    last = cards(local_azure, name)[-1]
    assert len(cards(local_azure, name)) == 2
    assert title(last) == f"Drift remediated: {name} (remediation pending → drift remediated)"


def _facts(card: str) -> list[dict]:
    found: list[dict] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "FactSet":
                found.extend(node.get("facts", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(card))
    return found


def test_a_pending_drift_whose_retries_run_out_alerts_failed(app, local_azure):
    name, registry_id = drifted(local_azure, "acrgive")
    local_azure.arm.faults.add(method="PATCH", status=503, times=None, body=arm_error("ServiceUnavailable", "later"))
    app.instance()
    handle_event(event(registry_id))
    assert app.outcomes(registry_id) == [("deferred", "ServiceUnavailable")]
    ((message, body),) = app.messages(registry_id)
    body["attempt"] = MAX_ATTEMPTS                 # the last attempt the schedule allows
    app.replay([(message, body)])
    assert app.outcomes(registry_id) == [("failed", "retries-exhausted")]
    assert app.messages(registry_id) == []
    assert [title(card) for card in cards(local_azure, name)] == [
        f"Drift detected, remediation pending: {name} (compliant → remediation pending)",
        f"Remediation failed: {name} (remediation pending → remediation failed)"]


def test_a_registry_still_updating_alerts_pending_at_once(app, local_azure, monkeypatch):
    """A registry that stays `Updating` past the responder's short wait: the drift is known (it was read), so it
    alerts now; the retry that finds the update finished remediates and alerts the change."""
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "4")
    name = unique("acrupd")
    registry_id = local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled",
                                         provisioningState="Updating")["id"]
    app.instance()
    handle_event(event(registry_id))
    assert app.outcomes(registry_id) == [("deferred", "registry-updating")]
    assert [title(card) for card in cards(local_azure, name)] == [
        f"Drift detected, remediation pending: {name} (compliant → remediation pending)"]
    set_props(local_azure, registry_id, provisioningState="Succeeded")
    app.replay(app.messages(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "-")]
    assert title(cards(local_azure, name)[-1]) == f"Drift remediated: {name} (remediation pending → drift remediated)"


def test_a_busy_lease_alerts_pending_at_once(app, local_azure, azurite):
    """Another instance holds the registry's lease (here: a lease row that does not expire soon) past the budget:
    the drift is known, so "remediation pending" goes out now."""
    from azure.data.tables import TableServiceClient

    from dlp.azure.state import LEASE_ROW, partition_of
    from dlp.settings import STATE_TABLE

    name, registry_id = drifted(local_azure, "acrbusy")
    table = TableServiceClient.from_connection_string(azurite).create_table_if_not_exists(STATE_TABLE)
    table.upsert_entity({"PartitionKey": partition_of(registry_id), "RowKey": LEASE_ROW, "Owner": "other-instance",
                         "Expires": time.time() + 600})
    app.instance()
    handle_event(event(registry_id))
    assert app.outcomes(registry_id) == [("deferred", "lease-busy")]
    (card,) = cards(local_azure, name)
    assert title(card) == f"Drift detected, remediation pending: {name} (compliant → remediation pending)"
    assert "Next attempt" in card and patches(local_azure) == 0
    table.delete_entity(partition_of(registry_id), LEASE_ROW)
    app.replay(app.messages(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "-")]
    assert len(cards(local_azure, name)) == 2


def test_a_write_still_running_at_the_deadline_alerts_pending_then_remediated(app, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "4")
    name, registry_id = drifted(local_azure, "acrlro")
    local_azure.arm.set_lro(registry_id, mode="async", polls=30, retry_after=None)      # longer than the budget
    app.instance()
    handle_event(event(registry_id))
    assert app.outcomes(registry_id) == [("deferred", "lro-pending")]
    assert [title(card) for card in cards(local_azure, name)] == [
        f"Drift detected, remediation pending: {name} (compliant → remediation pending)"]
    local_azure.arm.complete_operations()
    app.replay(app.messages(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "verified-later")]
    assert title(cards(local_azure, name)[-1]) == f"Drift remediated: {name} (remediation pending → drift remediated)"


def test_arm_failing_the_reread_under_the_lease_alerts_pending(app, local_azure, monkeypatch):
    """Written earlier in the hour, so the registry is read again under the lease; ARM refuses that second read
    (503 until the budget is spent). The drift was known from the first read: it alerts now."""
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "4")
    name, registry_id = drifted(local_azure, "acrreread")
    app.instance()
    handle_event(event(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "-")]
    set_props(local_azure, registry_id, export="enabled")
    local_azure.arm.faults.add(method="GET", path=f"registries/{name}$", status=503, times=None, skip=1,
                               body=arm_error("ServiceUnavailable", "later"))
    handle_event(event(registry_id, caller="eve@contoso.com"))
    ((action, _reason),) = app.outcomes(registry_id)
    assert action == "deferred"
    assert [title(card) for card in cards(local_azure, name)] == [
        f"Drift remediated: {name} (compliant → drift remediated)",
        f"Drift detected, remediation pending: {name} (drift remediated → remediation pending)"]
    local_azure.arm.faults.clear()
    app.replay(app.messages(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "-")]


def test_a_deferral_before_anything_was_read_shows_no_state(app, local_azure):
    """ARM failing the read: nothing is known about the registry (it may be compliant): no alert yet."""
    name, registry_id = drifted(local_azure, "acrnoread")
    local_azure.arm.faults.add(method="GET", status=503, times=None, body=arm_error("ServiceUnavailable", "later"))
    app.instance()
    handle_event(event(registry_id))
    assert app.outcomes(registry_id)[0][0] == "deferred"
    assert cards(local_azure, name) == []
    local_azure.arm.faults.clear()
    app.replay(app.messages(registry_id))
    assert app.outcomes(registry_id) == [("remediated", "-")]
    assert [title(card) for card in cards(local_azure, name)] == [
        f"Drift remediated: {name} (compliant → drift remediated)"]


def test_the_retry_schedule_starts_within_ten_seconds_and_covers_two_hours():
    rng = random.Random(11)
    for _ in range(500):
        schedule = [backoff_s(attempt, rng=rng) for attempt in range(1, MAX_ATTEMPTS + 1)]
        assert 0 < schedule[0] <= 10                                   # the first attempt, with jitter
        assert all(later >= base for later, base in zip(schedule[1:], BACKOFF_S, strict=True))   # never sooner
        assert sum(schedule) >= 2 * 3600 + 45 * 60      # the last retry runs 2 h 49 min (or later) after the deferral
    firsts = {backoff_s(1, rng=rng) for _ in range(50)}
    assert len(firsts) > 10                                            # jittered: a burst does not come back as one
    assert BACKOFF_S[:8] == (10, 30, 60, 120, 300, 600, 1800, 3600)


# --- item 2: the breaker and exemptions never hide an escalation --------------------------------------------------


def _trip_breaker(app, azure, registry_id: str, monkeypatch) -> None:
    """Two reverts, then the attacker turns exports on a third time: the breaker (2 an hour) holds."""
    monkeypatch.setenv("DLP_MAX_REMEDIATIONS", "2")
    for round_ in range(3):
        app.instance()
        set_props(azure, registry_id, export="enabled")
        handle_event(event(registry_id, caller=f"mallory-{round_}@contoso.com"))
    assert app.outcomes(registry_id) == [("remediated", "-"), ("remediated", "-"), ("blocked", "revert-war")]


def test_the_breaker_does_not_hide_public_access_opened_after_exports(app, local_azure, monkeypatch):
    """The attacker trips the breaker on purpose (exports, three times), then opens public access too. That is a
    new exposure: it alerts again with what is withheld and who did it; repeating either stays quiet; when the
    breaker's window ends the scheduled re-check reverts everything."""
    name = unique("acrwar")
    registry_id = local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")["id"]
    _trip_breaker(app, local_azure, registry_id, monkeypatch)
    assert [title(c) for c in cards(local_azure, name)][-1] == \
        f"Revert-war breaker tripped: {name} (drift remediated → revert-war breaker tripped)"
    told = len(cards(local_azure, name))
    local_azure.arm.log.reset()

    app.instance()
    handle_event(event(registry_id, caller="mallory-3@contoso.com"))       # exports again: the same exposure
    assert app.outcomes(registry_id) == [("blocked", "revert-war")]
    assert len(cards(local_azure, name)) == told

    set_props(local_azure, registry_id, publicNetworkAccess="Enabled")      # the escalation
    handle_event(event(registry_id, caller="eve@contoso.com"))
    assert app.outcomes(registry_id) == [("blocked", "revert-war")]
    (card,) = cards(local_azure, name)[told:]
    assert title(card) == (f"New exposure while the revert-war breaker holds: {name} "
                           "(revert-war breaker tripped → revert-war breaker tripped)")
    assert "eve@contoso.com" in card                                         # who opened it
    assert "DLP.ACR.PublicNetworkAccess fails" in card                        # what is new
    assert "publicNetworkAccess is Enabled (withheld: → Disabled)" in card
    assert "Withheld: publicNetworkAccess Enabled → Disabled, policies.exportPolicy.status enabled → disabled" in card
    assert "mallory-0@contoso.com" in card                                   # who fought the reverts

    for caller in ("eve@contoso.com", "mallory-4@contoso.com"):              # identical repeats: quiet
        handle_event(event(registry_id, caller=caller))
    assert len(cards(local_azure, name)) == told + 1
    assert patches(local_azure) == 0

    # the window ends: the message scheduled when the breaker tripped re-checks the registry (an hour later)
    ((message, body),) = app.messages(registry_id)
    assert (body["attempt"], body["enforce"], body["context"]["trigger"]) == (0, True, "retry")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1, minutes=2)
    app.instance(clock=lambda: later)
    app.evaluations.take()
    app.replay([(message, body)])
    assert app.outcomes(registry_id) == [("remediated", "-")]
    assert export_and_public(local_azure, registry_id) == ("disabled", "Disabled")
    assert title(cards(local_azure, name)[-1]).startswith(f"Drift remediated: {name} (revert-war breaker tripped")


def test_the_breaker_recheck_is_scheduled_once_per_window(app, local_azure, monkeypatch):
    """Every breaker-held evaluation of the same window computes the same moment: one message, however many
    events the attacker causes."""
    name = unique("acronce")
    registry_id = local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")["id"]
    _trip_breaker(app, local_azure, registry_id, monkeypatch)
    for round_ in range(4):
        app.instance()
        handle_event(event(registry_id, caller=f"noise-{round_}@contoso.com"))
    assert len(app.messages(registry_id)) == 1
    assert app.outcomes(registry_id) == [("blocked", "revert-war")] * 4


def test_a_breaker_recheck_after_the_switch_to_audit_does_not_write(app, local_azure, monkeypatch):
    name = unique("acrwaraudit")
    registry_id = local_azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")["id"]
    _trip_breaker(app, local_azure, registry_id, monkeypatch)
    found = app.messages(registry_id)
    monkeypatch.setenv("DLP_MODE", "audit")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1, minutes=2)
    app.instance(clock=lambda: later)
    local_azure.arm.log.reset()
    app.replay(found)
    assert app.outcomes(registry_id) == [("would-remediate", "audit-mode")]
    assert patches(local_azure) == 0


@pytest.mark.parametrize("how", ["tag", "list"])
def test_an_exemption_does_not_hide_an_escalation(app, local_azure, monkeypatch, how):
    """An exempt registry (the attacker set the tag; or an operator listed it) with exports on: alerted once.
    Opening public access afterwards is a new exposure: alerted again with the caller; repeats stay quiet."""
    name = unique("acrexempt")
    tags = {"dlp-exempt": "true"} if how == "tag" else None
    registry_id = local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled", tags=tags)["id"]
    if how == "tag":
        monkeypatch.setenv("DLP_EXEMPT_TAG", "dlp-exempt")
    else:
        monkeypatch.setenv("DLP_EXEMPTIONS", registry_id)
    state, label = (S_TAG_EXEMPT, "tag exemption used") if how == "tag" else (S_EXEMPT, "exempt")
    app.instance()
    handle_event(event(registry_id, caller="mallory@contoso.com"))
    handle_event(event(registry_id, caller="mallory@contoso.com"))
    assert app.outcomes(registry_id) == [("exempt", f"{'tag-' if how == 'tag' else ''}exemption")] * 2
    assert len(cards(local_azure, name)) == 1

    set_props(local_azure, registry_id, publicNetworkAccess="Enabled")
    handle_event(event(registry_id, caller="eve@contoso.com"))
    handle_event(event(registry_id, caller="eve@contoso.com"))
    new = cards(local_azure, name)[1:]
    assert len(new) == 1, [title(c) for c in new]
    headline = "New exposure on a tag-exempt registry" if state == S_TAG_EXEMPT else "New exposure on an exempt registry"
    assert title(new[0]) == f"{headline}: {name} ({label} → {label})"
    assert "eve@contoso.com" in new[0] and "DLP.ACR.PublicNetworkAccess fails" in new[0]
    assert patches(local_azure) == 0

    # closing public access and opening it again is not news twice (what was told is kept)
    set_props(local_azure, registry_id, publicNetworkAccess="Disabled")
    handle_event(event(registry_id))
    set_props(local_azure, registry_id, publicNetworkAccess="Enabled")
    handle_event(event(registry_id))
    assert len(cards(local_azure, name)) == 2


def test_an_escalation_whose_event_never_came_is_found_by_the_sweep(app, local_azure, monkeypatch):
    """The attacker's second write raises no event the responder sees (a lost delivery, a dropped subscription):
    the scheduled sweep reads the exempt registry from Resource Graph and alerts the new exposure."""
    from azure.functions.timer import TimerRequest

    monkeypatch.setenv("DLP_EXEMPT_TAG", "dlp-exempt")
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/{RG}")
    name = unique("acrsweep")
    registry_id = local_azure.arm.create(SUB, RG, name, export="enabled", public="Disabled",
                                         tags={"dlp-exempt": "true"})["id"]
    app.instance()
    handle_event(event(registry_id))
    assert len(cards(local_azure, name)) == 1
    set_props(local_azure, registry_id, publicNetworkAccess="Enabled")          # no event for this one
    sweep = function_app.sweep.build().get_user_function()
    sweep(TimerRequest(past_due=False, schedule_status={"Last": "2026-11-21T06:00:00+00:00"}))
    (card,) = cards(local_azure, name)[1:]
    assert "New exposure on a tag-exempt registry" in card and patches(local_azure) == 0
    sweep(TimerRequest(past_due=False, schedule_status={"Last": "2026-11-21T06:00:00+00:00"}))
    assert len(cards(local_azure, name)) == 2                                   # the next sweep: nothing new


def test_a_blocking_guard_does_not_hide_an_escalation(app, local_azure):
    """No approved private endpoint blocks closing public access; opening exports as well is a new exposure."""
    name = unique("acrnope")
    registry_id = local_azure.arm.create(SUB, RG, name, export="disabled", public="Enabled", private_endpoints=[])["id"]
    app.instance()
    handle_event(event(registry_id))
    handle_event(event(registry_id))
    assert app.outcomes(registry_id) == [("blocked", "no-private-endpoint")] * 2
    assert len(cards(local_azure, name)) == 1
    set_props(local_azure, registry_id, export="enabled")
    handle_event(event(registry_id, caller="eve@contoso.com"))
    handle_event(event(registry_id, caller="eve@contoso.com"))
    (card,) = cards(local_azure, name)[1:]
    assert title(card) == (f"New exposure while remediation is blocked: {name} "
                           "(remediation blocked → remediation blocked)")
    assert "eve@contoso.com" in card and "policies.exportPolicy.status is enabled (withheld: → disabled)" in card
    assert patches(local_azure) == 0


@pytest.mark.parametrize("kind", ["breaker", "tag-exempt", "exempt"])
def test_two_instances_seeing_the_same_escalation_send_one_alert(azurite_env, local_azure, kind):
    """Both read the held state before either commits: the ETag lets one commit the grown exposure and alert;
    the other re-reads, finds it told, and stays quiet."""
    import threading

    from dlp.azure.budget import Budget
    from dlp.outputs.alerting import AlertNotifier
    from tests import alerts_support as support

    state = support.table_name("state")
    registry = support.registry_id(support.unique_name())
    first, _ = support.notifier(support.tables(azurite_env), teams_url=local_azure.teams.webhook_url(),
                                state_table=state)
    with Budget.of(10).active():       # held with exports withheld
        first.notify([support.evaluation(registry, kind, changes=support.CHANGES[1:])])
    instances = support.racing_instances(azurite_env, local_azure.teams.webhook_url(), state)

    def invoke(alerting: AlertNotifier) -> None:
        with Budget.of(10).active():   # public access withheld too
            alerting.notify([support.evaluation(registry, kind)])

    threads = [threading.Thread(target=invoke, args=(alerting,)) for alerting, _ in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(store.lost for _, store in instances) == 1
    titles = [m["attachments"][0]["content"]["body"][0]["text"] for m in local_azure.teams.messages]
    assert len(titles) == 2 and titles[1].startswith("New exposure")
    assert "publicNetworkAccess is Enabled (withheld: → Disabled)" in json.dumps(local_azure.teams.messages[1],
                                                                                 ensure_ascii=False)


# --- the state machine's rules for holds (pure) -------------------------------------------------------------------


def _held(state: str, *items: str, guard: str = "g") -> str:
    return guard + "|" + ",".join(sorted(items))


@pytest.mark.parametrize("state", [S_BREAKER, S_EXEMPT, S_TAG_EXEMPT, S_PENDING, S_BLOCKED])
def test_a_hold_alerts_only_what_is_new_and_keeps_what_was_told(state):
    told = Stored(state, _held(state, "rule:A", "change:x"))
    assert decide(told, Observed(state, _held(state, "rule:A", "change:x"))).write is False
    assert decide(told, Observed(state, _held(state, "rule:A"))).write is False           # less: quiet
    grown = decide(told, Observed(state, _held(state, "rule:A", "rule:B", "change:x", "change:y")))
    assert (grown.write, grown.alert, grown.new) == (True, True, ("change:y", "rule:B"))
    assert grown.signature == _held(state, "rule:A", "rule:B", "change:x", "change:y")
    other = decide(told, Observed(state, _held(state, "rule:B")))                           # one gone, one new
    assert other.alert and other.new == ("rule:B",)
    assert other.signature == _held(state, "rule:A", "rule:B", "change:x")                 # the union is kept
    assert decide(told, Observed(state, _held(state, "rule:A", guard="other"))).alert      # another guard


def test_a_row_from_before_exposures_were_kept_is_taken_as_the_baseline_quietly():
    decision = decide(Stored(S_BREAKER, "g"), Observed(S_BREAKER, _held(S_BREAKER, "rule:A", guard="g")))
    assert (decision.write, decision.alert) == (True, False)


@pytest.mark.parametrize("guard", [S_BREAKER, S_EXEMPT, S_TAG_EXEMPT])
def test_a_deferral_while_a_guard_holds_is_quiet(guard):
    assert decide(Stored(guard, _held(guard, "rule:A")), Observed(S_PENDING, _held(S_PENDING, "rule:A", "rule:B"))) \
        .write is False


def test_pending_then_audit_is_a_change_of_state():
    """The operator switched to audit while a write was pending: remediation is not coming, say so."""
    decision = decide(Stored(S_PENDING, _held(S_PENDING, "rule:A")), Observed(S_NONCOMPLIANT, "x"))
    assert (decision.write, decision.alert) == (True, True)
