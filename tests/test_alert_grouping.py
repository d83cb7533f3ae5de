"""Alert storms (issue 22): grouping per caller, caps with folding, fair draining, and the digest's crash and race
safety, through the Functions handlers with the real SDK clients against the emulators and Azurite.

The production values are set here (the other tests run ungrouped, dlp/emulator/local.py), with a short window so
that a digest is due within seconds. Every test has callers and registry names of its own: Azurite outlives tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.ids import fold
from dlp.outputs.alerting import DIGEST_KIND, FAR_FUTURE
from dlp.outputs.alerts.kept import group_partition
from dlp.outputs.alerts.store import TableAlertStore
from dlp.settings import RETRY_QUEUE
from tests.evaluation_log import Evaluations

ROOT = Path(__file__).resolve().parent.parent
SUB = "11111111-2222-3333-4444-555555555555"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
WINDOW_S = 3
BUDGET_S = 4
CRASHED = 17

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()
handle_drain = function_app.outbox_drain.build().get_user_function()


class World:
    def __init__(self, azure, azurite: str, evaluations: Evaluations):
        self.azure = azure
        self.azurite = azurite
        self.evaluations = evaluations
        self.rg = "rg-storm-" + uuid.uuid4().hex[:6]
        self.queue = QueueClient.from_connection_string(azurite, RETRY_QUEUE)
        try:
            self.queue.create_queue()
        except ResourceExistsError:
            pass

    @staticmethod
    def caller(label: str = "mallory") -> str:
        return f"{label}-{uuid.uuid4().hex[:6]}@contoso.com"

    def open(self, count: int, prefix: str = "acrs") -> list[str]:
        """Registries with exports re-enabled (the drift), names no other test uses."""
        tag = uuid.uuid4().hex[:6]
        return [self.azure.arm.create(SUB, self.rg, f"{prefix}{tag}n{i:02d}", export="enabled",
                                      public="Disabled")["id"] for i in range(count)]

    def storm(self, pairs: list[tuple[str, str]]) -> None:
        """One event per (registry, caller), all handled at once (the worker's thread pool)."""
        barrier = threading.Barrier(len(pairs))

        def one(pair: tuple[str, str]) -> None:
            barrier.wait(timeout=30)
            handle_event(event(*pair))

        with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
            for future in [pool.submit(one, pair) for pair in pairs]:
                future.result(timeout=120)

    def cards(self, *names: str) -> list[dict]:
        return [m for m in self.azure.teams.messages if any(n in json.dumps(m) for n in names)]

    def mails(self, *names: str) -> list[dict]:
        return [m for m in self.azure.email.sent if any(n in json.dumps(m) for n in names)]

    def digest_messages(self, caller: str, wait_s: float = WINDOW_S + 15) -> list:
        """The scheduled flush of the caller's group, once the queue makes it visible."""
        partition = group_partition("caller:" + fold(caller))
        deadline = time.monotonic() + wait_s
        while True:
            found = []
            for message in self.queue.receive_messages(max_messages=32, visibility_timeout=2):
                body = json.loads(base64.b64decode(message.content).decode())
                if body.get("kind") == DIGEST_KIND and body.get("group") == partition:
                    found.append((message, body))
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)

    def flush(self, caller: str) -> int:
        """The queue trigger takes the group's flush messages, as the host would."""
        messages = self.digest_messages(caller)
        for message, body in messages:
            handle_retry(func.QueueMessage(id=message.id, body=json.dumps(body).encode(),
                                           pop_receipt=message.pop_receipt))
            self.queue.delete_message(message)
        return len(messages)

    def store(self) -> TableAlertStore:
        return TableAlertStore(TableServiceClient.from_connection_string(self.azurite))

    def kept(self, *names: str) -> list:
        store = self.store()
        rows = store.backlog(10_000, FAR_FUTURE)
        return [k for k in rows if any(n in json.dumps(k.payload) for n in names)]

    def held(self, caller: str) -> list:
        return self.store().held(group_partition("caller:" + fold(caller)))


def event(registry_id: str, caller: str, event_id: str = "") -> func.EventGridEvent:
    data = {"claims": {UPN: caller, "ipaddr": "203.0.113.9"}, "correlationId": str(uuid.uuid4()),
            "resourceUri": registry_id, "operationName": "Microsoft.ContainerRegistry/registries/write",
            "status": "Succeeded", "httpRequest": {"clientIpAddress": "203.0.113.9", "method": "PATCH"}}
    return func.EventGridEvent(id=event_id or f"ev-{uuid.uuid4().hex[:10]}", data=data, topic=f"/subscriptions/{SUB}",
                               subject=registry_id, event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def name(registry_id: str) -> str:
    return registry_id.rsplit("/", 1)[-1]


@pytest.fixture
def world(azurite_env, local_azure, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", str(BUDGET_S))
    monkeypatch.setenv("DLP_ALERT_GROUP_WINDOW_S", str(WINDOW_S))
    monkeypatch.setenv("DLP_ALERT_CAP_PER_REGISTRY", "3")
    monkeypatch.setenv("DLP_ALERT_CAP_PER_CALLER", "20")
    local_azure.email.polls = 0
    runtime.reset()
    with Evaluations() as collector:
        yield World(local_azure, azurite_env, collector)
    runtime.reset()


def test_a_storm_by_one_caller_is_one_alert_at_once_and_one_digest_naming_every_registry(world):
    caller = world.caller()
    ids = world.open(12)
    names = [name(r) for r in ids]
    world.storm([(r, caller) for r in ids])

    assert {r["action"] for r in world.evaluations.take()} == {"remediated"}
    assert all(world.azure.arm.get(r)["properties"]["policies"]["exportPolicy"]["status"] == "disabled" for r in ids)
    # the first alert went out at once, on each channel; the other eleven wait for the digest, committed
    assert len(world.cards(*names)) == 1 and len(world.mails(*names)) == 1
    assert len(world.held(caller)) == 2 * 11

    assert world.flush(caller) >= 1
    cards, mails = world.cards(*names), world.mails(*names)
    assert len(cards) == 2 and len(mails) == 2
    assert all(any(n in json.dumps(m) for m in mails) for n in names)          # the mails name all twelve
    digest = next(m for m in mails if "Grouped alerts by" in m["content"]["plainText"])
    assert caller in digest["content"]["plainText"] and "11 changes" in digest["content"]["plainText"]
    assert sum(n in digest["content"]["plainText"] for n in names) == 11
    assert "Grouped alerts by" in json.dumps(cards[1]) and caller in json.dumps(cards[1])
    assert world.held(caller) == [] and world.kept(*names) == []


def test_different_callers_are_never_merged_each_gets_its_first_alert_and_its_own_digest(world):
    alice, bob = world.caller("alice"), world.caller("bob")
    mine, theirs = world.open(4, "acra"), world.open(4, "acrb")
    world.storm([pair for a, b in zip(mine, theirs, strict=True) for pair in ((a, alice), (b, bob))])

    assert len(world.cards(*map(name, mine))) == 1 and len(world.cards(*map(name, theirs))) == 1
    world.flush(alice)
    world.flush(bob)
    alice_mails, bob_mails = world.mails(*map(name, mine)), world.mails(*map(name, theirs))
    assert len(alice_mails) == 2 and len(bob_mails) == 2
    for mails, who, other in ((alice_mails, alice, theirs), (bob_mails, bob, mine)):
        digest = next(m for m in mails if "Grouped alerts" in m["content"]["plainText"])
        assert who in digest["content"]["plainText"]
        assert not any(name(r) in json.dumps(digest) for r in other)           # one caller's digest each


def test_repeats_over_the_registry_cap_are_folded_but_a_new_kind_of_exposure_goes_out_at_once(world, monkeypatch):
    """Audit mode, cap 2 per registry: drift, back, drift, back (each a state change), then public access opened
    as well. The first goes out at once, the second waits for the digest, the third and fourth are folded into it
    ("2 more changes on ..."), and the public access, a rule that was not failing, goes out at once."""
    monkeypatch.setenv("DLP_MODE", "audit")
    monkeypatch.setenv("DLP_ALERT_CAP_PER_REGISTRY", "2")
    monkeypatch.setenv("DLP_ALERT_GROUP_WINDOW_S", "6")
    runtime.reset()
    caller = world.caller()
    (registry,) = world.open(1, "acrf")
    steps = [("enabled", "Disabled"), ("disabled", "Disabled"), ("enabled", "Disabled"), ("disabled", "Disabled"),
             ("disabled", "Enabled")]
    for export, public in steps:
        current = world.azure.arm.get(registry)
        current["properties"]["policies"]["exportPolicy"]["status"] = export
        current["properties"]["publicNetworkAccess"] = public
        world.azure.arm.add(current)
        handle_event(event(registry, caller))
    assert [r["action"] for r in world.evaluations.take()] == ["would-remediate", "none", "would-remediate", "none",
                                                              "would-remediate"]
    at_once = world.cards(name(registry))
    assert len(at_once) == 2
    assert "Drift detected" in json.dumps(at_once[0]) and "PublicNetworkAccess" in json.dumps(at_once[1])

    world.flush(caller)
    cards, mails = world.cards(name(registry)), world.mails(name(registry))
    assert len(cards) == 3 and len(mails) == 3
    digest = mails[-1]["content"]["plainText"]
    assert "Back to compliant" in digest                                       # held: listed in full
    assert f"2 more changes on {name(registry)} by {caller}" in digest       # folded: summed up
    assert "Beyond the alert caps" in json.dumps(cards[-1])


def test_kept_alerts_are_drained_oldest_first_one_registry_at_a_time(world):
    """A registry in a resource group that sorts first has 25 kept alerts (older), three others one each: the
    outbox timer sends 20 per run, and those three are among them."""
    store = world.store()
    first = [f"/subscriptions/{SUB}/resourceGroups/aaaa-{uuid.uuid4().hex[:6]}/providers/"
             f"Microsoft.ContainerRegistry/registries/acrflood{uuid.uuid4().hex[:6]}"]
    others = [f"/subscriptions/{SUB}/resourceGroups/zzzz-{uuid.uuid4().hex[:6]}/providers/"
              f"Microsoft.ContainerRegistry/registries/acrwait{i}{uuid.uuid4().hex[:6]}" for i in range(3)]
    keep_alerts(store, first[0], 25)
    for registry in others:
        keep_alerts(store, registry, 1)
    runtime.reset()
    world.azure.teams.messages.clear()
    handle_drain(TimerRequest(past_due=False))
    sent = json.dumps(world.azure.teams.messages)
    assert all(name(r) in sent for r in others)
    left = [k for k in store.kept(first[0]) if not k.dead]
    assert len(left) == 25 - 17
    handle_drain(TimerRequest(past_due=False))
    assert store.kept(first[0]) == []


def keep_alerts(store: TableAlertStore, registry_id: str, count: int) -> None:
    """Alerts kept for Teams (as a failed send leaves them), committed one after the other."""
    from dlp.outputs.alerts.alert import Alert
    from dlp.outputs.alerts.batch import Batch
    from dlp.outputs.alerts.states import Stored

    previous = store.get(registry_id)
    for i in range(count):
        alert_id = str(uuid.uuid4())
        at = dt.datetime.now(dt.timezone.utc).isoformat()
        alert = Alert(alert_id=alert_id, registry_id=registry_id, registry_name=name(registry_id), resource_group="",
                      subscription_id=SUB, previous="compliant", state="non-compliant", at=at)
        previous = store.commit(registry_id, previous, Stored("non-compliant", f"s{i}", alert_id, at),
                                [("teams", Batch("teams", (alert,), False).to_json())], owner="", claim_until=0.0)
        assert previous is not None


# --- a digest raced by two instances, and an instance killed between committing a digest and sending it --------------

FLUSHER = """
import sys, json, os
sys.path.insert(0, ".")
import azure.functions as func
import function_app
from dlp import runtime
services = runtime.services()
crash = sys.argv[1] == "crash"
if crash:
    original = services.notifier._store.commit_digest
    def crashing(*args, **kwargs):
        made = original(*args, **kwargs)
        os._exit(17)
    services.notifier._store.commit_digest = crashing
print("ready", flush=True)
body = sys.stdin.readline()
function_app.retry_worker.build().get_user_function()(func.QueueMessage(id="m", body=body.encode()))
print("flushed", flush=True)
"""


def child(mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FLUSHER, mode], cwd=ROOT, env=dict(os.environ),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stormed(world: World, prefix: str) -> tuple[str, list[str], dict]:
    """Six registries opened by one caller: (caller, names, the digest's flush message, taken off the queue)."""
    caller = world.caller()
    ids = world.open(6, prefix)
    world.storm([(r, caller) for r in ids])
    (message, body), *_ = world.digest_messages(caller)
    world.queue.delete_message(message)
    return caller, [name(r) for r in ids], body


def test_two_instances_racing_on_one_digest_send_it_once(world):
    caller, names, body = stormed(world, "acrr")
    other = child("race")
    try:
        assert other.stdout.readline().strip() == "ready", other.stderr.read()[-2000:]
        runtime.reset()
        runtime.services()
        other.stdin.write(json.dumps(body) + "\n")           # both instances take the flush at the same moment
        other.stdin.flush()
        handle_retry(func.QueueMessage(id="m", body=json.dumps(body).encode()))
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0 and "flushed" in out, err[-3000:]
    assert len(world.cards(*names)) == 2 and len(world.mails(*names)) == 2
    assert world.held(caller) == [] and world.kept(*names) == []
    handle_drain(TimerRequest(past_due=False))                             # nothing left for the timer either
    assert len(world.cards(*names)) == 2 and len(world.mails(*names)) == 2


def test_a_digest_raced_in_one_process_is_composed_once(world):
    """The same race with the timing forced: two notifiers (two instances' composition roots) read the group's
    row before either locks it."""
    from dlp.settings import load

    caller = world.caller()
    ids = world.open(5, "acrq")
    names = [name(r) for r in ids]
    world.storm([(r, caller) for r in ids])
    time.sleep(WINDOW_S + 0.5)
    partition = group_partition("caller:" + fold(caller))
    barrier = threading.Barrier(2)
    notifiers = []
    for _ in range(2):
        notifier = runtime.build(load(os.environ)).notifier
        store = notifier._store
        original = store.group_at

        def together(part, original=original, waited=[]):       # noqa: B006 - one wait per store
            group = original(part)
            if not waited:
                waited.append(True)
                barrier.wait(timeout=30)
            return group

        store.group_at = together
        notifiers.append(notifier)
    with ThreadPoolExecutor(max_workers=2) as pool:
        sent = list(pool.map(lambda n: n.flush([partition]), notifiers))
    assert sorted(sent) == [0, 2]                                              # one instance sent both channels
    assert len(world.cards(*names)) == 2 and len(world.mails(*names)) == 2
    for message, _body in world.digest_messages(caller):                       # its scheduled flush finds nothing
        world.queue.delete_message(message)


def test_an_instance_killed_between_committing_a_digest_and_sending_it_loses_nothing(world):
    caller, names, body = stormed(world, "acrk")
    dying = child("crash")
    assert dying.stdout.readline().strip() == "ready", dying.stderr.read()[-2000:]
    dying.stdin.write(json.dumps(body) + "\n")
    dying.stdin.flush()
    out, err = dying.communicate(timeout=120)
    assert dying.returncode == CRASHED, (out, err[-3000:])
    assert len(world.cards(*names)) == 1                                       # the digest was kept, not sent
    digests = world.store().digests(group_partition("caller:" + fold(caller)))
    assert len(digests) == 2 and all(d.claimed_until > time.time() for d in digests)

    time.sleep(max(0.0, max(d.claimed_until for d in digests) - time.time()) + 0.5)   # the dead instance's claim
    runtime.reset()
    handle_drain(TimerRequest(past_due=False))
    handle_drain(TimerRequest(past_due=False))
    cards, mails = world.cards(*names), world.mails(*names)
    assert len(cards) == 2 and len(mails) == 2                                 # sent once, members never alone
    assert all(any(n in json.dumps(m) for m in mails) for n in names)
    assert world.held(caller) == [] and world.kept(*names) == []
    assert world.store().digests(group_partition("caller:" + fold(caller))) == []
