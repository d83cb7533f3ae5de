"""Event responder benchmark: ARM requests per event, time per event, and the drift window.

Drives the Event Grid handler (same code path as Azure) against the HTTPS ARM emulator with
0 ms and 50 ms of injected latency, Azurite for Table/Queue storage, Log Analytics on.

* requests/event: counted by the emulator (targets: 1 for a compliant registry; at most 4 for a
  remediation whose PATCH answers 200; the 201 path adds only the polls the service asks for).
  Each remediation is the first drift of a registry; a registry already remediated within the hour
  (a revert war) is re-read once more under the lease before the write.
* drift window: from the event reaching the handler to the verified compliant state (the
  evaluation's own duration), divided by the unavoidable ARM round trips (GET registry, GET
  export pipelines, PATCH) each timed as a bare SDK GET. Target: ratio <= 1.15 at 50 ms.

    .venv/bin/python -m bench.bench_events [--events 30]

The last line is machine-readable: `BENCH events {json}`.
"""

from __future__ import annotations

import argparse
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
UNAVOIDABLE = 3     # GET registry, GET exportPipelines (to know a write is safe), PATCH


def _event(registry_id: str, index: int) -> Any:
    import azure.functions as func

    data = {"claims": {"name": "bench"}, "correlationId": f"bench-{index}", "operationName":
            "Microsoft.ContainerRegistry/registries/write", "resourceUri": registry_id, "status": "Succeeded"}
    return func.EventGridEvent(id=f"bench-{index}", data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def _bare_rtt_ms(services: Any, registry_id: str, samples: int = 15) -> float:
    """One SDK GET of the registry, no pipeline: what an ARM round trip costs here."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        services.arm.get_registry(registry_id)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _measure(azure: Any, services: Any, latency_s: float, events: int) -> dict[str, Any]:
    from dlp import handlers

    azure.set_latency(latency_s)
    compliant = azure.arm.create(SUB, RG, f"acrok{int(latency_s * 1000):04d}", export="disabled", public="Disabled")["id"]
    drifted = azure.arm.create(SUB, RG, f"acrdr{int(latency_s * 1000):04d}", export="enabled", public="Disabled")["id"]
    rtt = _bare_rtt_ms(services, compliant)

    result: dict[str, Any] = {"latency_ms": latency_s * 1000, "bare_arm_rtt_ms": round(rtt, 2)}
    for label in ("compliant", "remediated"):
        handler_ms, window_ms, requests = [], [], []
        for index in range(events):
            registry_id = compliant
            if label == "remediated":
                # a first drift of a registry: one remediated earlier in the hour is the revert-war path,
                # which re-reads under the lease (one GET more) before writing again
                registry_id = drifted if index == 0 else azure.arm.create(
                    SUB, RG, f"acrdr{int(latency_s * 1000):04d}x{index:03d}", export="enabled", public="Disabled")["id"]
            azure.arm.log.reset()
            started = time.perf_counter()
            (evaluation,) = handlers.on_event(_event(registry_id, index))
            handler_ms.append((time.perf_counter() - started) * 1000)
            window_ms.append(evaluation.duration_ms)
            requests.append(len([r for r in azure.arm.log.filter() if r.service in ("arm", "arm-op")]))
            expected = "none" if label == "compliant" else "remediated"
            if evaluation.outcome.action != expected:
                raise RuntimeError(f"{label}: expected {expected}, got {evaluation.outcome}")
        result[label] = {
            "arm_requests_per_event": statistics.median(requests),
            "max_arm_requests": max(requests),
            "handler_ms_median": round(statistics.median(handler_ms), 1),
            "drift_window_ms_median": round(statistics.median(window_ms), 1),
        }
    window = result["remediated"]["drift_window_ms_median"]
    result["remediated"]["unavoidable_ms"] = round(UNAVOIDABLE * rtt, 1)
    result["remediated"]["window_ratio"] = round(window / (UNAVOIDABLE * rtt), 3)
    return result


def run(events: int = 30, latencies: tuple[float, ...] = (0.0, 0.05)) -> dict[str, Any]:
    from dlp import runtime
    from dlp.emulator import LocalAzure
    from dlp.emulator.azurite import Azurite
    from dlp.settings import load

    azurite = Azurite()
    azurite.start()
    try:
        with LocalAzure() as azure, azure.environ():
            os.environ.update({"DLP_MODE": "enforce", "AzureWebJobsStorage": azurite.connection_string,
                               "DLP_MAX_REMEDIATIONS": "100"})
            for name in ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
                os.environ.pop(name, None)
            services = runtime.build(load(os.environ))
            runtime.reset(services)
            warm = azure.arm.create(SUB, RG, "acrwarmup01", export="enabled")["id"]
            from dlp import handlers

            handlers.on_event(_event(warm, -1))          # token, clients, tables: not part of the figures
            results = [_measure(azure, services, latency, events) for latency in latencies]
            runtime.reset()
    finally:
        azurite.stop()
    return {"events_per_case": events, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30)
    args = parser.parse_args(argv)
    report = run(args.events)
    print(f"{'latency':>8} {'case':>11} {'ARM req/event':>14} {'handler ms':>11} {'window ms':>10} {'ratio':>6}")
    for result in report["results"]:
        for case in ("compliant", "remediated"):
            row = result[case]
            ratio = row.get("window_ratio", "")
            print(f"{result['latency_ms']:>6.0f}ms {case:>11} {row['arm_requests_per_event']:>14} "
                  f"{row['handler_ms_median']:>11} {row['drift_window_ms_median']:>10} {ratio:>6}")
    print("BENCH events " + json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
