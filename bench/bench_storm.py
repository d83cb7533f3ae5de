"""Alert-storm benchmark (issue 22): 30 registries opened by one caller within 5 s, in enforce mode.

The production alert settings (a 60 s grouping window, caps 3 per registry and 20 per caller per hour), Teams and
email both on, the real handlers with the real SDK clients against the HTTPS emulators and Azurite. Event Grid is
played by a thread pool: each drift's event is handled as soon as the registry is written (one every 5/29 s). The
Functions host is played by a poller of the durable-retry queue (what `retry_worker` would take: the digest
flush scheduled for the end of the window). A monitor samples the emulators every 50 ms.

Measured: every registry closed (and when the last one was); Teams cards and emails in all; whether the emails
name all 30 registries; the time from the first drift to the first message on each channel and to the last.

    .venv/bin/python -m bench.bench_storm [--registries 30] [--spread 5] [--window 60]

The last line is machine-readable: `BENCH storm {json}`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-bench-storm"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
SAMPLE_S = 0.05
POLL_S = 0.5


def _event(registry_id: str, caller: str) -> Any:
    import azure.functions as func

    data = {"claims": {UPN: caller, "ipaddr": "203.0.113.66"}, "correlationId": str(uuid.uuid4()),
            "resourceUri": registry_id, "operationName": "Microsoft.ContainerRegistry/registries/write",
            "status": "Succeeded", "httpRequest": {"clientIpAddress": "203.0.113.66", "method": "PATCH"}}
    return func.EventGridEvent(id=f"storm-{uuid.uuid4().hex[:10]}", data=data, topic=f"/subscriptions/{SUB}",
                               subject=registry_id, event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


class Monitor(threading.Thread):
    """Samples what the emulators received and which registries are closed."""

    def __init__(self, azure: Any, ids: list[str], names: list[str]):
        super().__init__(daemon=True)
        self.azure, self.ids, self.names = azure, ids, names
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.closed_at: float | None = None
        self.counts = {"teams": 0, "email": 0}
        self.opened = 0                    # registries drifted so far (set by the storm)
        self.stop = threading.Event()

    def _mine(self, messages: list[Any]) -> int:
        return sum(1 for m in messages if any(n in json.dumps(m) for n in self.names))

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.perf_counter()
            for channel, messages in (("teams", list(self.azure.teams.messages)), ("email", list(self.azure.email.sent))):
                count = self._mine(messages)
                if count > self.counts[channel]:
                    self.first.setdefault(channel, now)
                    self.last[channel] = now
                    self.counts[channel] = count
            if self.closed_at is None and self.opened == len(self.ids) and all(
                    self.azure.arm.get(r)["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
                    for r in self.ids):
                self.closed_at = now
            time.sleep(SAMPLE_S)


def _host(queue: Any, handler: Any, stop: threading.Event) -> None:
    """The Functions host's queue trigger: take what is visible, hand it to retry_worker, delete it."""
    import azure.functions as func

    while not stop.is_set():
        for message in queue.receive_messages(max_messages=32, visibility_timeout=30):
            body = base64.b64decode(message.content).decode()
            try:
                handler(func.QueueMessage(id=message.id, body=body.encode(), pop_receipt=message.pop_receipt))
            finally:
                queue.delete_message(message)
        stop.wait(POLL_S)


def run(registries: int = 30, spread_s: float = 5.0, window_s: int = 60) -> dict[str, Any]:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    from dlp import runtime
    from dlp.emulator import LocalAzure
    from dlp.emulator.azurite import Azurite
    from dlp.settings import BY_NAME, RETRY_QUEUE, load

    with Azurite() as azurite, LocalAzure() as azure, azure.environ():
        os.environ.update({"DLP_MODE": "enforce", "AzureWebJobsStorage": azurite.connection_string,
                           "DLP_TIME_BUDGET_S": "20", "DLP_ALERT_GROUP_WINDOW_S": str(window_s),
                           **{name: BY_NAME[name].default for name in ("DLP_ALERT_CAP_PER_REGISTRY",
                                                                      "DLP_ALERT_CAP_PER_CALLER",
                                                                      "DLP_ALERT_CAP_WINDOW_MIN")}})
        runtime.reset(runtime.build(load(os.environ)))
        import function_app

        handle_event = function_app.on_registry_event.build().get_user_function()
        handle_retry = function_app.retry_worker.build().get_user_function()
        queue = QueueClient.from_connection_string(azurite.connection_string, RETRY_QUEUE)
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        warm = azure.arm.create(SUB, "rg-bench-warm", "acrstormwarm", export="enabled", public="Disabled")["id"]
        handle_event(_event(warm, "warm-up@contoso.com"))             # token, clients, tables: not measured

        tag = uuid.uuid4().hex[:6]
        names = [f"acrstorm{tag}n{i:02d}" for i in range(registries)]
        ids = [azure.arm.create(SUB, RG, n, export="disabled", public="Disabled")["id"] for n in names]
        caller = f"mallory-{tag}@contoso.com"
        monitor = Monitor(azure, ids, names)
        stop = threading.Event()
        host = threading.Thread(target=_host, args=(queue, handle_retry, stop), daemon=True)
        host.start()
        monitor.start()
        gap = spread_s / max(1, registries - 1)
        started = time.perf_counter()
        futures = []
        with ThreadPoolExecutor(max_workers=registries) as pool:
            for index, registry_id in enumerate(ids):
                time.sleep(max(0.0, started + index * gap - time.perf_counter()))
                current = azure.arm.get(registry_id)
                current["properties"]["policies"]["exportPolicy"]["status"] = "enabled"     # the drift
                azure.arm.add(current)
                monitor.opened = index + 1
                futures.append(pool.submit(handle_event, _event(registry_id, caller)))
            last_drift = time.perf_counter() - started
            for future in futures:
                future.result(timeout=120)
        deadline = started + window_s * 3 + 60
        store = runtime.services().notifier._store
        while time.perf_counter() < deadline:           # until every digest went out (or the deadline)
            if monitor.closed_at is not None and time.perf_counter() - started > window_s + 2 and not _pending(store):
                break
            time.sleep(1.0)
        time.sleep(2 * SAMPLE_S)
        monitor.stop.set()
        stop.set()
        monitor.join()
        host.join()
        mails = [m for m in azure.email.sent if any(n in json.dumps(m) for n in names)]
        named = sum(1 for n in names if any(n in json.dumps(m) for m in mails))
        runtime.reset()
    since = {channel: round(at - started, 2) for channel, at in monitor.first.items()}
    last = {channel: round(at - started, 2) for channel, at in monitor.last.items()}
    report = {
        "benchmark": "storm", "registries": registries, "spread_s": spread_s, "window_s": window_s,
        "last_drift_s": round(last_drift, 2),
        "all_closed": monitor.closed_at is not None,
        "last_close_s": round(monitor.closed_at - started, 2) if monitor.closed_at is not None else None,
        "teams_cards": monitor.counts["teams"], "emails": monitor.counts["email"], "emails_name": named,
        "first_message_s": min(since.values()) if since else None, "first_by_channel_s": since,
        "last_message_s": max(last.values()) if last else None,
    }
    report["targets_met"] = {
        "all_closed": report["all_closed"],
        "at_most_5_cards": report["teams_cards"] <= 5, "at_most_5_emails": report["emails"] <= 5,
        "emails_name_all": named == registries,
        "first_message_within_60_s": report["first_message_s"] is not None and report["first_message_s"] <= 60,
    }
    return report


def _pending(store: Any) -> bool:
    """Anything held for a digest or kept for a send, anywhere in the state table."""
    rows = store.backlog(10_000, 4.0e9)
    return bool(rows) or bool(store.due_groups(4.0e9))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registries", type=int, default=30)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which the registries are opened")
    parser.add_argument("--window", type=int, default=60, help="DLP_ALERT_GROUP_WINDOW_S (default: the default)")
    args = parser.parse_args(argv)
    report = run(args.registries, args.spread, args.window)
    print(f"{report['registries']} registries opened by one caller over {report['last_drift_s']} s "
          f"(window {report['window_s']} s): all closed {report['all_closed']} (last at {report['last_close_s']} s); "
          f"{report['teams_cards']} Teams cards, {report['emails']} emails naming {report['emails_name']} registries; "
          f"first message at {report['first_message_s']} s, last at {report['last_message_s']} s")
    print("BENCH storm " + json.dumps(report))
    return 0 if all(report["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
