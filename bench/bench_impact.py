"""Exposure impact benchmark: what the pull looks of a window cost (issue 25).

Every closed exposure window gets looks at the registry's resource logs (dlp/responder/impact.py): one query each.
Measured here, per window, with the real handlers against the HTTPS emulators (the Log Analytics query API
serving registry log rows, Resource Graph's change history, Logs Ingestion) and Azurite for queues and tables:

* flip-and-restore: found by the delayed check 7+ minutes after the write (the first look is due: done at once),
  then the +20 minute look from the queue;
* remediation: the responder closed the window just now: both looks come from the queue;
* old window: found long after it closed (a sweep, a late check): both looks are due, one query.

Figures: Log Analytics queries per window (target <= 2, the worst window counts), table operations are not
counted; the time of one look handled from the queue (query, re-record, alert).

    .venv/bin/python -m bench.bench_impact [--windows 10]

The last line is machine-readable: `BENCH impact {json}`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-bench"
EXPORT_ON = {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}}
EXPORT_OFF = {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}


def _queued_looks(connection: str, registry_id: str) -> list[dict[str, Any]]:
    from azure.storage.queue import QueueClient

    from dlp.responder.impact import LOOK_KIND
    from dlp.settings import RETRY_QUEUE

    queue = QueueClient.from_connection_string(connection, RETRY_QUEUE)
    found = []
    for message in queue.receive_messages(max_messages=32, visibility_timeout=1):
        body = json.loads(base64.b64decode(message.content).decode())
        if body.get("kind") == LOOK_KIND and body.get("registryId", "").lower() == registry_id.lower():
            found.append(body)
            queue.delete_message(message)
    return found


def _window(azure: Any, name: str, closed_ago: dt.timedelta) -> tuple[str, dt.datetime]:
    registry_id = azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")["id"]
    opened = dt.datetime.now(dt.timezone.utc) - closed_ago - dt.timedelta(seconds=90)
    azure.arm.write(registry_id, EXPORT_ON, caller="mallory@contoso.com", at=opened)
    for seconds in (10, 20, 30):
        azure.logs_query.add_pull(registry_id, opened + dt.timedelta(seconds=seconds), "payments/api", f"1.{seconds}",
                                  identity="mallory@contoso.com", caller_ip="198.51.100.7")
    azure.arm.write(registry_id, EXPORT_OFF, caller="mallory@contoso.com", at=opened + dt.timedelta(seconds=90))
    return registry_id, opened


def _queries(azure: Any, registry_id: str) -> int:
    return sum(1 for q in azure.logs_query.queries if registry_id.lower() in q["query"].lower())


def _event(registry_id: str, index: int, when: dt.datetime) -> Any:
    import azure.functions as func

    data = {"claims": {"name": "mallory"}, "correlationId": f"bench-{index}", "operationName":
            "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id, "status": "Succeeded"}
    return func.EventGridEvent(id=f"bench-impact-{index}", data=data, topic=f"/subscriptions/{SUB}",
                               subject=registry_id, event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=when, data_version="2")


def _case(azure: Any, services: Any, connection: str, label: str, windows: int) -> dict[str, Any]:
    from dlp.responder import impact, timeline
    from dlp.triggers import handlers

    queries, looks_ms, pulls = [], [], []
    for index in range(windows):
        name = f"acr{label.replace(' ', '').replace('-', '')[:4]}{index:03d}x"
        if label == "remediation":
            registry_id = azure.arm.create(SUB, RG, name, export="enabled", public="Disabled")["id"]
            opened = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
            azure.logs_query.add_pull(registry_id, opened + dt.timedelta(seconds=5), "payments/api", "1.4",
                                      identity="mallory@contoso.com", caller_ip="198.51.100.7")
            handlers.on_event(_event(registry_id, index, opened))
        else:
            closed_ago = dt.timedelta(minutes=8) if label == "flip-and-restore" else dt.timedelta(hours=2)
            registry_id, opened = _window(azure, name, closed_ago)
            body = {"kind": timeline.CHECK_KIND, "checkId": f"bench-{label}-{index}", "registryId": registry_id,
                    "eventTime": (opened + dt.timedelta(seconds=90)).isoformat()}
            timeline.run_check(body, services)
        for body in _queued_looks(connection, registry_id):
            started = time.perf_counter()
            impact.run_look(body, services)
            looks_ms.append((time.perf_counter() - started) * 1000)
        queries.append(_queries(azure, registry_id))
        rows = [r for r in azure.logs.rows() if r["RegistryId"].lower() == registry_id.lower()
                and r.get("ExposurePulls") is not None]
        pulls.append(max((r["ExposurePulls"] for r in rows), default=-1))
    return {"windows": windows, "queries_per_window_median": statistics.median(queries),
            "max_queries_per_window": max(queries), "queued_look_ms_median":
            round(statistics.median(looks_ms), 2) if looks_ms else 0.0, "queued_looks": len(looks_ms),
            "all_pulls_counted": all(p >= 1 for p in pulls)}


def run(windows: int = 10) -> dict[str, Any]:
    from dlp import runtime
    from dlp.emulator import LocalAzure
    from dlp.emulator.azurite import Azurite
    from dlp.settings import load

    azurite = Azurite()
    azurite.start()
    try:
        with LocalAzure() as azure, azure.environ():
            os.environ.update({"DLP_MODE": "enforce", "AzureWebJobsStorage": azurite.connection_string,
                               "DLP_MAX_REMEDIATIONS": "100", **azure.registry_logs_env()})
            for name in ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
                os.environ.pop(name, None)
            services = runtime.build(load(os.environ))
            services.retry.look_delay_s = 0
            services.retry.check_delay_s = 0
            runtime.reset(services)
            results = {label: _case(azure, services, azurite.connection_string, label, windows)
                       for label in ("flip-and-restore", "remediation", "old window")}
            runtime.reset()
    finally:
        azurite.stop()
    return {"results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=10)
    args = parser.parse_args(argv)
    report = run(args.windows)
    for label, row in report["results"].items():
        print(f"{label:>17}: {row['queries_per_window_median']} queries/window (max {row['max_queries_per_window']}), "
              f"queued look {row['queued_look_ms_median']} ms, pulls counted: {row['all_pulls_counted']}")
    print("BENCH impact " + json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
