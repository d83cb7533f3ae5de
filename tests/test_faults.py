"""The fault matrix: every external dependency x every fault, through the Functions handlers, against the
emulators and Azurite; then the faults clear, the deferred work is replayed, and nothing is lost.

Dependencies: ARM, Resource Graph, Logs Ingestion, Teams (Workflows webhook), ACS email, Table storage.
Faults (persistent for the whole first invocation): a connection that is accepted and never answered
(`hang`), connection refused, 429 with `Retry-After: 1`, 429 without it, 500, 503, 403, 404, and a body that
is not JSON (`200` with a cut-off body; for Logs and Teams, whose success carries no body, a 503 HTML page).

Each case drives one drifted registry in enforce mode with a short budget (DLP_TIME_BUDGET_S=4.5):

1. the invocation returns (or, where documented, raises so that Event Grid delivers it again) within the
   budget plus the recorder's outbox reserve and a little slack: a correctness check that timeouts work with
   each dependency hanging, not a speed test;
2. its outcome is the documented one (`EXPECTED`): retried within the budget, handed to the durable retry
   (`deferred`, a message on `dlp-retry`), recorded (`error` with the service's code, `gone` for a registry
   ARM says is not there), kept in the outbox (findings Log Analytics did not take, alerts no channel took),
   or, for the Resource Graph row, the re-check's 502;
3. the faults clear and the replay runs as Azure would run it, on another instance (so only what was made
   durable counts): Event Grid redelivers what raised, the queue trigger (`retry_worker`) takes the
   durable-retry messages, the outbox timer (`outbox_drain`) re-sends what was kept, the next sweep runs;
   then the first instance handles a later event for the same registry (it must not be wedged);
4. nothing was lost: every evaluation's rows are in Log Analytics, each row exactly once (the faults here
   never let a service keep what it then failed: at-least-once never had to repeat anything); every
   state change produced exactly one Teams card and one email; the registry ends compliant.

Resource Graph is used by the scope re-check and the sweep only, so its row goes through the HTTP
re-check (`POST /api/recheck {"scope": ...}`) and its replay is the scheduled sweep (`sweep` timer).

Table storage: Azurite runs once per session, so its faults come from a small forwarding proxy in front
of Azurite's Table endpoint (below), which reuses the emulators' fault queue; the app's AzureWebJobsStorage
points its TableEndpoint at the proxy, and the Queue endpoint (the durable retry) stays direct, so "Table
storage fails" and "the durable retry fails too" are separate cases: the latter puts a second proxy in
front of the Queue endpoint (refused: both proxies stopped; hang: both hold every request).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

import function_app
from dlp import runtime
from dlp.emulator.base import FaultQueue, drop_connection
from dlp.outputs.alerting import FAR_FUTURE
from dlp.outputs.alerts.store import TableAlertStore
from dlp.outputs.outbox import Outbox
from dlp.outputs.recording import OUTBOX_RESERVE_S
from dlp.settings import RETRY_QUEUE
from tests.evaluation_log import Evaluations

pytestmark = pytest.mark.slow  # the fault matrix: CI runs it; `pytest -m "not slow"` skips it locally

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-faults"
BUDGET_S = 4.5
DEPENDENCIES = ("arm", "graph", "logs", "teams", "email", "table")
FAULTS = ("hang", "refused", "429-retry-after", "429", "500", "503", "403", "404", "malformed")

handle_event = function_app.on_registry_event.build().get_user_function()
handle_retry = function_app.retry_worker.build().get_user_function()
handle_recheck = function_app.recheck.build().get_user_function()
handle_sweep = function_app.sweep.build().get_user_function()
handle_drain = function_app.outbox_drain.build().get_user_function()


# --- Table storage behind a fault-injecting proxy -------------------------------------------------------

class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy.requests += 1
        fault = proxy.faults.take(self.command, unquote(urlsplit(self.path).path), proxy.service)
        if fault is not None and fault.mode != "respond":
            drop_connection(self, fault.mode, proxy.release, self.server.stopping)
            return
        if fault is not None:
            response = fault.response()
            status, headers, payload = response.status, response.headers, response.body
        else:
            upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            upstream.request(self.command, self.path, body=body, headers=forwarded)
            answer = upstream.getresponse()
            payload = answer.read()
            status = answer.status
            headers = {k: v for k, v in answer.getheaders()
                       if k.lower() not in ("transfer-encoding", "connection", "content-length")}
            upstream.close()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = do_HEAD = do_GET


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: TableProxy, port: int):
        self.proxy = proxy
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), _ProxyHandler)

    def process_request_thread(self, request, client_address):
        self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.discard(request)


class TableProxy:
    """An Azurite endpoint (Table; Queue for the durable retry), forwarded, with the emulators' FaultQueue
    (respond / hang / close)."""

    def __init__(self, upstream_port: int, service: str = "table"):
        self.upstream_port = upstream_port
        self.service = service
        self.faults = FaultQueue()
        self.release = threading.Event()
        self.requests = 0
        self.port = 0
        self._server: _ProxyServer | None = None

    def start(self) -> TableProxy:
        if self._server is None:
            self._server = _ProxyServer(self, self.port)
            self.port = self._server.server_address[1]
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        for conn in list(server.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset(self) -> None:
        self.faults.clear()
        self.release.set()
        self.release = threading.Event()
        self.start()


def _port_of(connection_string: str, service: str) -> int:
    return int(re.search(rf"{service}Endpoint=http://127\.0\.0\.1:(\d+)/", connection_string).group(1))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def table_proxy(azurite):
    proxy = TableProxy(_port_of(azurite, "Table")).start()
    yield proxy
    proxy.release.set()
    proxy.stop()


@pytest.fixture(scope="module")
def queue_proxy(azurite):
    proxy = TableProxy(_port_of(azurite, "Queue"), "queue").start()
    yield proxy
    proxy.release.set()
    proxy.stop()


# --- one case -------------------------------------------------------------------------------------------

@pytest.fixture
def world(azurite_env, azurite, table_proxy, local_azure, monkeypatch):
    """Enforce mode, a short budget, Table storage through the proxy, the durable retry without delay."""
    table_proxy.reset()
    proxied = azurite.replace(f"TableEndpoint=http://127.0.0.1:{_port_of(azurite, 'Table')}/",
                              f"TableEndpoint=http://127.0.0.1:{table_proxy.port}/")
    monkeypatch.setenv("AzureWebJobsStorage", proxied)
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", str(BUDGET_S))
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}/resourceGroups/{RG}")
    local_azure.email.polls = 0            # no LRO poll wait per mail: the email LRO has its own tests
    runtime.reset()
    with Evaluations() as collector:
        yield World(local_azure, table_proxy, azurite, proxied, collector, monkeypatch)
    table_proxy.reset()
    runtime.reset()


@dataclass
class World:
    azure: Any
    proxy: TableProxy
    azurite: str
    storage: str
    evaluations: Evaluations
    monkeypatch: Any
    queue: Any = None

    def __post_init__(self):
        self.queue = QueueClient.from_connection_string(self.azurite, RETRY_QUEUE)
        try:
            self.queue.create_queue()
        except ResourceExistsError:
            pass

    def services(self):
        runtime.reset()
        services = runtime.services()
        if services.retry is not None:
            services.retry.base_delay_s = 0          # replayed at once instead of in a minute
        return services

    def retry_messages(self, registry_id: str) -> list[Any]:
        """This registry's durable-retry messages (others' are left alone, visible again in a second)."""
        found = []
        for message in self.queue.receive_messages(max_messages=32, visibility_timeout=1):
            body = base64.b64decode(message.content).decode()
            if json.loads(body).get("kind") == "exposure-check":      # delayed exposure checks: not retries
                continue
            if json.loads(body).get("registryId", "").lower() == registry_id.lower():
                found.append((message, body))
        return found

    def kept(self, kind: str) -> int:
        """Outbox items of `kind`; for "alerts" also the copies kept with the state change (dlp.outputs.alerts.store)."""
        service = TableServiceClient.from_connection_string(self.azurite)
        transactional = len(TableAlertStore(service).backlog(100_000, FAR_FUTURE)) if kind == "alerts" else 0
        return Outbox(service).count(kind) + transactional


def event(registry_id: str, event_id: str) -> func.EventGridEvent:
    data = {"claims": {"name": "fault-matrix"}, "correlationId": str(uuid.uuid4()), "resourceUri": registry_id,
            "operationName": "Microsoft.ContainerRegistry/registries/write", "status": "Succeeded"}
    return func.EventGridEvent(id=event_id, data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


FAULT_SPECS: dict[str, dict[str, Any]] = {
    "hang": {"mode": "hang"},
    "429-retry-after": {"status": 429, "headers": {"Retry-After": "1"}},
    "429": {"status": 429},
    "500": {"status": 500},
    "503": {"status": 503},
    "403": {"status": 403},
    "404": {"status": 404},
}


def inject(world: World, dependency: str, fault: str) -> None:
    azure = world.azure
    emulator = {"arm": azure.arm, "graph": azure.arm, "logs": azure.logs, "teams": azure.teams,
                "email": azure.email, "table": world.proxy}[dependency]
    service = {"arm": "arm", "graph": "graph", "table": "table"}.get(dependency)
    if fault == "refused":
        emulator.stop()
        return
    if fault == "malformed":
        if dependency in ("logs", "teams"):     # success has no body: a gateway's HTML error page instead
            spec = {"status": 503, "headers": {"Content-Type": "text/html"}, "body": "<html><body>503 Service "
                                                                                      "Unavailable</body></html>"}
        else:
            spec = {"status": 200, "headers": {"Content-Type": "application/json"}, "body": '{"value": [{"id": "/sub'}
    else:
        spec = FAULT_SPECS[fault]
    emulator.faults.add(times=None, service=service, **spec)


def clear(world: World) -> None:
    for emulator in (*world.azure.emulators, world.proxy):
        emulator.faults.clear()
        emulator.start()


@dataclass
class Case:
    dependency: str
    fault: str
    registry_id: str = ""
    elapsed: float = 0.0
    raised: str = ""
    status: int | None = None          # the HTTP re-check's answer (Resource Graph row)
    first: list[tuple[str, str]] = field(default_factory=list)
    hits: int = 0                      # requests the fault answered (or held, or dropped)
    kept_findings: int = 0             # outbox items added by the first invocation
    kept_alerts: int = 0
    retry_messages: int = 0            # durable-retry messages the replay found for this registry
    replay: list[tuple[str, str]] = field(default_factory=list)
    alerts_after_replay: tuple[int, int] = (0, 0)
    later: list[tuple[str, str]] = field(default_factory=list)
    first_ids: set[str] = field(default_factory=set)
    records: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if k not in ("records", "first_ids")}, default=str)


def alerts_for(world: World, registry_id: str) -> tuple[int, int]:
    """(Teams cards, emails) that name this registry."""
    name = registry_id.rsplit("/", 1)[-1]
    return (sum(1 for message in world.azure.teams.messages if name in json.dumps(message)),
            sum(1 for mail in world.azure.email.sent if name in json.dumps(mail)))


def run_case(world: World, dependency: str, fault: str) -> Case:
    azure = world.azure
    name = f"acrf{uuid.uuid4().hex[:10]}"
    registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    case = Case(dependency, fault, registry_id)
    instance_a = world.services()
    findings_before, alerts_before = world.kept("findings"), world.kept("alerts")
    inject(world, dependency, fault)
    first_event = event(registry_id, f"ev-{name}")
    started = time.monotonic()
    try:
        if dependency == "graph":           # only the scope re-check and the sweep use Resource Graph
            request = func.HttpRequest(method="POST", url="/api/recheck", params={"remediate": "true"}, headers={},
                                       body=json.dumps({"scope": f"/subscriptions/{SUB}/resourceGroups/{RG}"}).encode())
            case.status = handle_recheck(request).status_code
        else:
            handle_event(first_event)
    except Exception as exc:
        case.raised = f"{type(exc).__name__}: {exc}"[:300]
    case.elapsed = time.monotonic() - started
    emulator = {"arm": azure.arm, "graph": azure.arm, "logs": azure.logs, "teams": azure.teams, "email": azure.email,
                "table": world.proxy}[dependency]
    case.hits = sum(f.hits for f in emulator.faults.pending)
    records = world.evaluations.take(registry_id)
    case.records += records
    case.first = [(r["action"], r["reason"]) for r in records]
    case.first_ids = {r["evaluationId"] for r in records}
    case.kept_findings = world.kept("findings") - findings_before
    case.kept_alerts = world.kept("alerts") - alerts_before

    # The faults clear. The replay runs on another instance: only what was made durable counts.
    clear(world)
    world.proxy.release.set()
    world.proxy.release = threading.Event()
    world.services()
    if case.raised:                                   # Event Grid redelivers what failed
        handle_event(first_event)
    if dependency == "graph":                         # the next scheduled sweep
        handle_sweep(TimerRequest(past_due=False, schedule_status={"Last": "2026-11-21T06:00:00+00:00"}))
    for _ in range(5):                                # the queue trigger takes the durable retry
        messages = world.retry_messages(registry_id)
        if not messages:
            break
        case.retry_messages += len(messages)
        for message, body in messages:
            handle_retry(func.QueueMessage(id=message.id, body=body.encode(), pop_receipt=message.pop_receipt))
            world.queue.delete_message(message)
    handle_drain(TimerRequest(past_due=False))        # the outbox timer
    records = world.evaluations.take(registry_id)
    case.records += records
    case.replay = [(r["action"], r["reason"]) for r in records]
    case.alerts_after_replay = alerts_for(world, registry_id)

    # The first instance lives on: the next write to the registry is handled there.
    runtime.reset(instance_a)
    handle_event(event(registry_id, f"ev-{name}-later"))
    records = world.evaluations.take(registry_id)
    case.records += records
    case.later = [(r["action"], r["reason"]) for r in records]
    return case


def state_changes(records: list[dict]) -> int:
    """How many alerts a sequence of evaluations is worth (dlp.outputs.alerts.states, for the outcomes seen here): each
    remediation; each change into an error/failed/blocked state; a deferral after the registry was read (its
    drift known: `compliant` is false) is "remediation pending" (enforce mode here); compliant only after one of
    those; gone (deleted) once."""
    state, alerts = "compliant", 0
    for record in records:
        action, reason = record["action"], record["reason"]
        if action == "deferred":
            if record.get("compliant") is False and state != "pending":
                state, alerts = "pending", alerts + 1
            continue
        if action == "remediated":
            state, alerts = "remediated", alerts + 1
        elif action == "gone":                  # a final notice, once, whatever came before (issue 22)
            if state != "gone":
                alerts += 1
            state = "gone"
        elif action == "none":
            if state not in ("compliant", "remediated", "gone"):
                alerts += 1
            state = "compliant"
        elif (action, reason) != state:
            state, alerts = (action, reason), alerts + 1
    return alerts


def check_nothing_lost(world: World, case: Case) -> None:
    """Rows of every evaluation in Log Analytics, each once (an invocation that raised is redone by Event Grid:
    its own evaluation may be missing, the redelivery's may not); one alert per state change on each channel,
    all of them there once the replay ran on another instance; the registry compliant in the end."""
    azure = world.azure
    required = {r["evaluationId"] for r in case.records} - (case.first_ids if case.raised else set())
    rows = Counter((row["EvaluationId"], row["RuleId"]) for row in azure.logs.rows()
                   if row["EvaluationId"] in required | case.first_ids)
    assert required <= {evaluation for evaluation, _rule in rows}, "evaluations missing in Log Analytics"
    assert max(rows.values()) == 1, [key for key, count in rows.items() if count > 1]
    # Alerts go out even when the record could not be kept (the invocation then raises so that Event Grid
    # redelivers it; its alert says the record is pending), if the budget the failing storage left allows a send
    # (dlp.outputs.alerts.sending.MIN_SEND_S): such an invocation's own alert may be there or not, on each channel; all others
    # are there exactly once.
    def expected(records: list[dict]) -> set[int]:
        told = records[len(case.first):] if case.raised else records
        return {state_changes(told), state_changes(records)}

    replayed = expected(case.records[:len(case.records) - len(case.later)])
    assert set(case.alerts_after_replay) <= replayed, (case.first + case.replay, case.alerts_after_replay)
    assert set(alerts_for(world, case.registry_id)) <= expected(case.records)
    assert azure.arm.get(case.registry_id)["properties"]["policies"]["exportPolicy"]["status"] == "disabled"


@dataclass(frozen=True)
class Expect:
    """The documented outcome of the first invocation under a fault."""

    first: tuple[tuple[str, str], ...] = (("remediated", "-"),)   # the evaluation's (action, reason)
    retried: bool = False        # the SDK asked again within the budget (the fault answered more than once)
    deferred: bool = False       # a durable-retry message was waiting for the replay
    kept_findings: bool = False  # Log Analytics did not take the rows: they went to the outbox
    kept_alerts: bool = False    # no channel took the alert: it went to the outbox
    raised: str = ""             # the invocation failed on purpose, so that Event Grid redelivers
    status: int | None = None    # the HTTP re-check's answer


def deferred(code: str, **extra: Any) -> Expect:
    return Expect(first=(("deferred", code),), deferred=True, **extra)


CODES = {"429-retry-after": "TooManyRequests", "429": "TooManyRequests", "500": "InternalServerError",
         "503": "ServiceUnavailable"}
RETRYABLE = tuple(CODES)
EXPECTED: dict[tuple[str, str], Expect] = {
    # ARM: transient faults are retried within the budget, then handed to the durable retry (and with the
    # budget spent, the rows of that evaluation go to the outbox rather than start an upload); 403 is recorded
    # with its code; 404 means the registry is gone (recorded); a body that cannot be read is transient.
    ("arm", "hang"): deferred("ServiceResponseTimeoutError", kept_findings=True),
    ("arm", "refused"): deferred("ServiceRequestError", kept_findings=True),
    **{("arm", f): deferred(CODES[f], retried=True, kept_findings=True) for f in RETRYABLE},
    ("arm", "403"): Expect(first=(("error", "AuthorizationFailed"),)),
    ("arm", "404"): Expect(first=(("gone", "not-found"),)),
    ("arm", "malformed"): deferred("InvalidResponseBody"),
    # Resource Graph (scope re-check): 502 with the error code, within the budget; the next sweep does the work.
    **{("graph", f): Expect(first=(), status=502, retried=f in RETRYABLE) for f in FAULTS},
    # Logs Ingestion: the remediation is not held up; the rows wait in the outbox.
    **{("logs", f): Expect(kept_findings=True, retried=f in (*RETRYABLE[:1], "500", "503", "malformed")) for f in FAULTS},
    # Teams and email: the remediation is not held up; the alert waits in the outbox.
    **{("teams", f): Expect(kept_alerts=True, retried=f in (*RETRYABLE[:1], "500", "503", "malformed")) for f in FAULTS},
    **{("email", f): Expect(kept_alerts=True, retried=f in (*RETRYABLE[:1], "500", "503")) for f in FAULTS},
    # Table storage (lease, breaker, alert state, outbox): no write without the lease, so the work is deferred;
    # when the storage's retries used the time an upload needed, the rows could be neither sent nor kept (the
    # outbox is the same storage) and the invocation fails so that Event Grid delivers it again. A refusal
    # (403, 404) is the responder's own storage failing, not the registry: deferred too, never an error record.
    ("table", "hang"): deferred("ServiceResponseTimeoutError", raised="RecordingError"),
    ("table", "refused"): deferred("ServiceRequestError"),
    ("table", "429-retry-after"): deferred("BudgetExhausted", raised="RecordingError", retried=True),
    ("table", "429"): deferred("TooManyRequests"),
    ("table", "500"): deferred("InternalServerError", raised="RecordingError", retried=True),
    ("table", "503"): deferred("ServiceUnavailable", raised="RecordingError", retried=True),
    ("table", "403"): deferred("AuthorizationFailed"),
    ("table", "404"): deferred("NotFound"),
    ("table", "malformed"): deferred("InvalidResponseBody"),
}
# A spent budget still lets the recorder take OUTBOX_RESERVE_S to keep rows it could not send (dlp/outputs/recording.py):
# the wide margin covers that and scheduling noise. Correctness (timeouts work), not speed.
LIMIT_S = BUDGET_S + OUTBOX_RESERVE_S + 0.5
MATRIX = [(d, f) for d in DEPENDENCIES for f in FAULTS]


@pytest.mark.parametrize(("dependency", "fault"), MATRIX, ids=[f"{d}-{f}" for d, f in MATRIX])
def test_fault_matrix(world, dependency, fault):
    case = run_case(world, dependency, fault)
    expect = EXPECTED[(dependency, fault)]
    assert case.elapsed < LIMIT_S, case.summary()
    assert tuple(case.first) == expect.first, case.summary()
    assert case.raised.split(":")[0] == expect.raised, case.summary()
    assert case.status == expect.status, case.summary()
    if fault not in ("refused", "hang") and dependency != "table":    # one operation faulted: more hits = retries
        assert (case.hits >= 2) == expect.retried, case.summary()
    assert (case.retry_messages > 0) == expect.deferred, case.summary()
    assert (case.kept_findings > 0) == expect.kept_findings, case.summary()
    assert (case.kept_alerts > 0) == expect.kept_alerts, case.summary()
    check_nothing_lost(world, case)


def test_every_cell_of_the_matrix_has_a_documented_outcome():
    assert set(EXPECTED) == set(MATRIX)


@pytest.mark.parametrize("fault", ["refused", "hang"])
def test_storage_down_altogether_fails_the_invocation_so_event_grid_delivers_it_again(world, queue_proxy, fault):
    """Table and Queue both unreachable: no lease, so no write, and not even the durable retry can take the
    work. The one documented case where the invocation raises: Event Grid delivers the event again, and that
    delivery (storage back) does the work. Still within the budget."""
    queue_proxy.reset()
    world.monkeypatch.setenv("AzureWebJobsStorage", world.storage.replace(
        f"QueueEndpoint=http://127.0.0.1:{_port_of(world.azurite, 'Queue')}/",
        f"QueueEndpoint=http://127.0.0.1:{queue_proxy.port}/"))
    azure = world.azure
    name = f"acrf{uuid.uuid4().hex[:10]}"
    registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    world.services()
    for proxy in (world.proxy, queue_proxy):
        if fault == "refused":
            proxy.stop()
        else:
            proxy.faults.add(times=None, service=proxy.service, mode="hang")
    delivery = event(registry_id, f"ev-{name}")
    started = time.monotonic()
    with pytest.raises(Exception) as raised:        # whatever the storage SDK raised
        handle_event(delivery)
    assert time.monotonic() - started < LIMIT_S
    assert world.evaluations.take(registry_id) == []          # nothing claimed to be done or recorded
    assert azure.arm.log.count(method="PATCH") == 0
    # the hand-over's own error: refused, or (hang) the budget spent waiting for storage to answer
    assert type(raised.value).__name__ == {"refused": "ServiceRequestError", "hang": "BudgetExhausted"}[fault]

    for proxy in (world.proxy, queue_proxy):
        proxy.reset()
    world.services()
    handle_event(delivery)                                     # Event Grid's redelivery
    (record,) = world.evaluations.take(registry_id)
    assert (record["action"], record["reason"]) == ("remediated", "-")
    rows = Counter(row["RuleId"] for row in azure.logs.rows() if row["RegistryName"] == name)
    assert rows and set(rows.values()) == {1}
    assert {row["EvaluationId"] for row in azure.logs.rows() if row["RegistryName"] == name} == {record["evaluationId"]}
    assert alerts_for(world, registry_id) == (1, 1)
    assert azure.arm.get(registry_id)["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
    queue_proxy.reset()


def test_the_http_recheck_answers_within_its_budget_when_arm_hangs(world):
    """The re-check of one registry (the HTTP handler) under a hanging ARM: 502 in time, and the work is with the
    durable retry, which finishes it once ARM answers again."""
    azure = world.azure
    name = f"acrf{uuid.uuid4().hex[:10]}"
    registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
    world.services()
    azure.arm.faults.add(times=None, service="arm", mode="hang")
    request = func.HttpRequest(method="POST", url="/api/recheck", params={"remediate": "true"}, headers={},
                               body=json.dumps({"registryId": registry_id}).encode())
    started = time.monotonic()
    response = handle_recheck(request)
    assert time.monotonic() - started < LIMIT_S
    assert response.status_code == 502
    assert json.loads(response.get_body())["error"]["code"] == "ServiceResponseTimeoutError"
    clear(world)
    world.services()
    (message, body), = world.retry_messages(registry_id)
    handle_retry(func.QueueMessage(id=message.id, body=body.encode(), pop_receipt=message.pop_receipt))
    world.queue.delete_message(message)
    assert azure.arm.get(registry_id)["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
