"""Concurrency: many invocations at once, as the Python worker runs a sync function on its thread pool, and
two app instances (two processes) sharing storage.

64 Event Grid invocations start together (a barrier) over 16 registries, half of them drifted, in enforce
mode, through the real handler with the real SDK clients against the emulators and Azurite. Afterwards:
every registry is compliant, each drift cost exactly one PATCH, each state change exactly one Teams card and
one email, the breaker's Table rows count one remediation per drift (so it trips exactly when it should),
every evaluation's rows reached Log Analytics exactly once, and the shared clients still work.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient

import function_app
from dlp import runtime
from dlp.azure.state import LEASE_ROW, REMEDIATION_PREFIX, partition_of
from dlp.settings import STATE_TABLE
from tests.evaluation_log import Evaluations

pytestmark = pytest.mark.slow  # concurrency: CI runs it; `pytest -m "not slow"` skips it locally

ROOT = Path(__file__).resolve().parent.parent
SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-concurrency"
REGISTRIES = 16
EVENTS = 64

handle_event = function_app.on_registry_event.build().get_user_function()


@pytest.fixture
def responder(azurite_env, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "15")
    monkeypatch.setenv("DLP_MAX_REMEDIATIONS", "2")
    runtime.reset()
    with Evaluations() as collector:
        yield collector
    runtime.reset()


def event(registry_id: str, index: int):
    data = {"claims": {"name": f"pipeline-{index}"}, "correlationId": str(uuid.uuid4()), "resourceUri": registry_id,
            "operationName": "Microsoft.ContainerRegistry/registries/write", "status": "Succeeded"}
    return func.EventGridEvent(id=f"ev-{index}-{uuid.uuid4().hex[:6]}", data=data, topic=f"/subscriptions/{SUB}",
                               subject=registry_id, event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def all_at_once(calls: list) -> list:
    """Run the calls on a thread pool of their size, released together; re-raise the first failure."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="worker") as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [future.result(timeout=120) for future in futures]


class Estate:
    """16 registries with names no other test uses (Azurite outlives tests) and the emulators' view of them."""

    def __init__(self, azure, azurite: str):
        self.azure = azure
        self.tag = uuid.uuid4().hex[:8]
        self.names = [f"acrc{self.tag}n{i:02d}" for i in range(REGISTRIES)]
        self.ids = [azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")["id"] for name in self.names]
        self.drifted = self.ids[::2]
        self.table = TableServiceClient.from_connection_string(azurite).get_table_client(STATE_TABLE)

    def drift(self) -> None:
        for registry_id in self.drifted:
            current = self.azure.arm.get(registry_id)
            current["properties"]["policies"]["exportPolicy"]["status"] = "enabled"
            self.azure.arm.add(current)

    def events(self, count: int = EVENTS) -> list:
        """`count` events spread evenly over the registries, interleaved."""
        return [event(self.ids[i % REGISTRIES], i) for i in range(count)]

    def name(self, registry_id: str) -> str:
        return registry_id.rsplit("/", 1)[-1]

    def compliant(self) -> bool:
        return all(self.azure.arm.get(r)["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
                   for r in self.ids)

    def patches(self) -> Counter:
        return Counter(self.name(r.path) for r in self.azure.arm.log.filter(method="PATCH"))

    def teams_cards(self) -> Counter:
        """Cards per registry name: each card names the registries it is about."""
        return Counter(name for message in self.azure.teams.messages for name in self.names
                       if name in json.dumps(message))

    def emails(self) -> Counter:
        return Counter(name for mail in self.azure.email.sent for name in self.names if name in json.dumps(mail))

    def rows(self, registry_id: str) -> list[dict]:
        return list(self.table.query_entities("PartitionKey eq @pk", parameters={"pk": partition_of(registry_id)}))

    def remediation_rows(self) -> Counter:
        return Counter({self.name(r): sum(1 for row in self.rows(r) if row["RowKey"].startswith(REMEDIATION_PREFIX))
                        for r in self.ids})

    def leases(self) -> int:
        return sum(1 for r in self.ids for row in self.rows(r) if row["RowKey"] == LEASE_ROW)

    def logged_evaluations(self) -> Counter:
        """Rows per EvaluationId+RuleId in Log Analytics, for this estate's registries."""
        return Counter((row["EvaluationId"], row["RuleId"]) for row in self.azure.logs.rows()
                       if row.get("RegistryName") in self.names)


def by_registry(records: list[dict], estate: Estate) -> dict[str, Counter]:
    result: dict[str, Counter] = {estate.name(r): Counter() for r in estate.ids}
    for record in records:
        result[estate.name(record["registryId"])][(record["action"], record["reason"])] += 1
    return result


def answered(records: list[dict]) -> Counter:
    """Events answered, over all evaluations (a burst of one registry is answered by one evaluation)."""
    return Counter(event_id for record in records for event_id in record["eventIds"])


def ids_of(events: list) -> Counter:
    return Counter(e.id for e in events)


def registry_gets(azure) -> int:
    return sum(1 for r in azure.arm.log.filter(service="arm", method="GET") if "exportpipelines" not in r.path.lower())


def check_logs(estate: Estate, records: list[dict]) -> None:
    """Every evaluation's rows are in Log Analytics, each row once."""
    logged = estate.logged_evaluations()
    assert {evaluation for evaluation, _rule in logged} == {r["evaluationId"] for r in records}
    assert max(logged.values()) == 1


def test_64_concurrent_invocations_over_16_registries(responder, azurite, local_azure):
    estate = Estate(local_azure, azurite)
    drifted = {estate.name(r) for r in estate.drifted}
    clean = set(estate.names) - drifted
    seen: list[dict] = []

    # round 1: half the registries drifted, 4 events each, all at once
    estate.drift()
    events = estate.events()
    gets = registry_gets(local_azure)
    assert all(result is None for result in all_at_once([lambda e=e: handle_event(e) for e in events]))
    records = responder.take()
    seen += records
    # every event answered exactly once; events of one registry that arrive while its read is in flight share
    # the next read (how many do depends on thread scheduling; tests/test_responder.py pins a burst down)
    assert answered(records) == ids_of(events)
    assert len(records) == registry_gets(local_azure) - gets     # one GET per evaluation (a first drift: no re-read)
    assert estate.compliant()
    assert estate.patches() == Counter({name: 1 for name in drifted})
    outcomes = by_registry(records, estate)
    for name in drifted:
        assert outcomes[name][("remediated", "-")] == 1, (name, outcomes[name])
        assert set(outcomes[name]) <= {("remediated", "-"), ("none", "-")}, (name, outcomes[name])
    for name in clean:
        assert set(outcomes[name]) == {("none", "-")}, (name, outcomes[name])
    assert estate.teams_cards() == Counter({name: 1 for name in drifted})
    assert estate.emails() == Counter({name: 1 for name in drifted})
    assert estate.remediation_rows() == Counter({name: 1 for name in drifted}) + Counter({name: 0 for name in clean})
    assert estate.leases() == 0

    # round 2: nothing drifted; the shared clients (ARM, tables, queue, Logs, Teams, email) still serve everyone
    events = estate.events()
    gets = registry_gets(local_azure)
    all_at_once([lambda e=e: handle_event(e) for e in events])
    records = responder.take()
    seen += records
    assert answered(records) == ids_of(events)
    assert {(r["action"], r["reason"]) for r in records} == {("none", "-")}
    assert len(records) == registry_gets(local_azure) - gets           # one GET per evaluation, nothing else
    assert estate.patches() == Counter({name: 1 for name in drifted})
    assert estate.teams_cards() == Counter({name: 1 for name in drifted})

    # round 3: the same registries drift again: one more PATCH and one more alert each (a new state change)
    estate.drift()
    all_at_once([lambda e=e: handle_event(e) for e in estate.events()])
    seen += responder.take()
    assert estate.compliant()
    assert estate.patches() == Counter({name: 2 for name in drifted})
    assert estate.teams_cards() == Counter({name: 2 for name in drifted})
    assert estate.emails() == Counter({name: 2 for name in drifted})
    assert estate.remediation_rows() == Counter({name: 2 for name in drifted})

    # round 4: a third drift within the hour; DLP_MAX_REMEDIATIONS=2 trips the breaker exactly now, once
    estate.drift()
    all_at_once([lambda e=e: handle_event(e) for e in estate.events()])
    records = responder.take()
    seen += records
    outcomes = by_registry(records, estate)
    for name in drifted:
        assert set(outcomes[name]) == {("blocked", "revert-war")}, (name, outcomes[name])
    assert estate.patches() == Counter({name: 2 for name in drifted})
    assert estate.teams_cards() == Counter({name: 3 for name in drifted})       # "breaker tripped", once
    assert estate.remediation_rows() == Counter({name: 2 for name in drifted})
    assert estate.leases() == 0
    check_logs(estate, seen)


CHILD = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, ".")
from tests.evaluation_log import Evaluations
from tests.test_concurrency import all_at_once, event
import function_app

handler = function_app.on_registry_event.build().get_user_function()
collector = Evaluations().__enter__()
ids = json.loads(sys.argv[1])
events = [event(ids[i % len(ids)], 1000 + i) for i in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.readline()
all_at_once([lambda e=e: handler(e) for e in events])
print(json.dumps(collector.take()), flush=True)
"""


def test_two_app_instances_sharing_storage(responder, azurite, local_azure):
    """A second Function App instance is a second process with its own clients, locks and lease owner; only
    Azurite (and Azure) are shared. Both fire 32 invocations at the same moment over the same registries."""
    estate = Estate(local_azure, azurite)
    drifted = {estate.name(r) for r in estate.drifted}
    estate.drift()
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(estate.ids), str(EVENTS // 2)], cwd=ROOT,
                             env=dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        mine = estate.events(EVENTS // 2)
        child.stdin.write("go\n")
        child.stdin.flush()
        all_at_once([lambda e=e: handle_event(e) for e in mine])
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err[-3000:]
    theirs = json.loads(out.strip().splitlines()[-1])
    ours = responder.take()
    records = ours + theirs
    # each instance answers each of its events exactly once (a burst within one instance shares a read)
    assert answered(ours) == ids_of(mine)
    assert sum(answered(theirs).values()) == EVENTS // 2 and max(answered(theirs).values()) == 1
    assert estate.compliant()
    assert estate.patches() == Counter({name: 1 for name in drifted})
    actions = Counter(r["action"] for r in records)
    assert actions["remediated"] == len(drifted) and set(actions) == {"remediated", "none"}, actions
    assert estate.teams_cards() == Counter({name: 1 for name in drifted})
    assert estate.emails() == Counter({name: 1 for name in drifted})
    assert estate.remediation_rows() == Counter({name: 1 for name in drifted}) + Counter(
        {name: 0 for name in set(estate.names) - drifted})
    assert estate.leases() == 0
    check_logs(estate, records)
