"""Concurrency benchmark: 64 Event Grid invocations at once over 16 registries, half drifted, enforce mode.

As the Python worker runs a sync function: a thread pool of 64, all released together, each calling the
real handler (`function_app.on_registry_event`) with the process's shared clients, against the HTTPS
emulators (ARM, identity, Logs, Teams) and Azurite. Email is off: each send waits for ACS to confirm the
mail (an LRO poll), which would measure that interval rather than the responder (bench_cold_start shows it).

Printed per round, at 0 ms and 50 ms injected latency: wall time of the round, handler latency (median,
95th percentile, max), ARM requests in all and PATCHes (must equal the drifted registries: one per drift),
Teams cards (one per drift), Table lease conflicts resolved without a second write.

    .venv/bin/python -m bench.bench_concurrency [--rounds 3] [--invocations 64] [--registries 16]

The last line is machine-readable: `BENCH concurrency {json}`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
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
RG = "rg-bench-concurrency"


def _event(registry_id: str, index: int) -> Any:
    import azure.functions as func

    data = {"claims": {"name": "bench"}, "correlationId": str(uuid.uuid4()), "resourceUri": registry_id,
            "operationName": "Microsoft.ContainerRegistry/registries/write", "status": "Succeeded"}
    return func.EventGridEvent(id=f"bench-{index}", data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime.now(dt.timezone.utc), data_version="2")


def _round(azure: Any, handler: Any, ids: list[str], drifted: list[str], invocations: int) -> dict[str, Any]:
    for registry_id in drifted:                                   # a person re-enables exports on half of them
        current = azure.arm.get(registry_id)
        current["properties"]["policies"]["exportPolicy"]["status"] = "enabled"
        azure.arm.add(current)
    for emulator in azure.emulators:
        emulator.log.reset()
    teams_before = len(azure.teams.messages)
    events = [_event(ids[i % len(ids)], i) for i in range(invocations)]
    barrier = threading.Barrier(invocations + 1)
    latencies: list[float] = []
    lock = threading.Lock()

    def invoke(event: Any) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        handler(event)
        with lock:
            latencies.append((time.perf_counter() - t0) * 1000)

    with ThreadPoolExecutor(max_workers=invocations) as pool:
        futures = [pool.submit(invoke, e) for e in events]
        barrier.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        wall_ms = (time.perf_counter() - started) * 1000
    patches = azure.arm.log.count(method="PATCH")
    compliant = all(azure.arm.get(r)["properties"]["policies"]["exportPolicy"]["status"] == "disabled" for r in ids)
    latencies.sort()
    return {
        "wall_ms": round(wall_ms, 1),
        "handler_ms_median": round(statistics.median(latencies), 1),
        "handler_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "handler_ms_max": round(latencies[-1], 1),
        "invocations_per_s": round(invocations / (wall_ms / 1000), 1),
        "arm_requests": azure.arm.log.count(service="arm") + azure.arm.log.count(service="arm-op"),
        "patches": patches,
        "teams_cards": len(azure.teams.messages) - teams_before,
        "all_compliant": compliant,
    }


def run(rounds: int = 3, invocations: int = 64, registries: int = 16,
        latencies: tuple[float, ...] = (0.0, 0.05)) -> dict[str, Any]:
    from dlp import runtime
    from dlp.emulator import LocalAzure
    from dlp.emulator.azurite import Azurite
    from dlp.settings import load

    results = []
    with Azurite() as azurite, LocalAzure() as azure, azure.environ():
        os.environ.update({"DLP_MODE": "enforce", "AzureWebJobsStorage": azurite.connection_string,
                           "DLP_MAX_REMEDIATIONS": "100", "DLP_TIME_BUDGET_S": "20"})
        for name in ("DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
            os.environ.pop(name, None)
        runtime.reset(runtime.build(load(os.environ)))
        import function_app

        handler = function_app.on_registry_event.build().get_user_function()
        warm = azure.arm.create(SUB, RG, "acrbenchwarm", export="enabled", public="Disabled")["id"]
        handler(_event(warm, -1))                                # token, clients, tables: not measured
        for latency in latencies:
            azure.set_latency(latency)
            tag = f"{int(latency * 1000):03d}"
            ids = [azure.arm.create(SUB, RG, f"acrbc{tag}n{i:02d}", export="disabled", public="Disabled")["id"]
                   for i in range(registries)]
            drifted = ids[::2]
            samples = [_round(azure, handler, ids, drifted, invocations) for _ in range(rounds)]
            summary: dict[str, Any] = {"latency_ms": latency * 1000, "rounds": rounds, "drifted": len(drifted)}
            for key in ("wall_ms", "handler_ms_median", "handler_ms_p95", "handler_ms_max", "invocations_per_s",
                        "arm_requests"):
                summary[key] = round(statistics.median(s[key] for s in samples), 1)
            summary["patches_per_round"] = [s["patches"] for s in samples]
            summary["teams_cards_per_round"] = [s["teams_cards"] for s in samples]
            summary["one_patch_per_drift"] = all(s["patches"] == len(drifted) for s in samples)
            summary["one_alert_per_drift"] = all(s["teams_cards"] == len(drifted) for s in samples)
            summary["all_compliant"] = all(s["all_compliant"] for s in samples)
            results.append(summary)
        runtime.reset()
    return {"benchmark": "concurrency", "invocations": invocations, "registries": registries, "results": results,
            "target_met": all(r["one_patch_per_drift"] and r["one_alert_per_drift"] and r["all_compliant"]
                              for r in results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--invocations", type=int, default=64)
    parser.add_argument("--registries", type=int, default=16)
    args = parser.parse_args(argv)
    report = run(args.rounds, args.invocations, args.registries)
    print(f"{report['invocations']} invocations at once over {report['registries']} registries, half drifted "
          f"(median of {args.rounds} rounds)")
    for r in report["results"]:
        print(f"  {r['latency_ms']:>4.0f} ms latency: round {r['wall_ms']:7.1f} ms, handler median "
              f"{r['handler_ms_median']:6.1f} ms p95 {r['handler_ms_p95']:6.1f} ms, {r['arm_requests']:.0f} ARM requests, "
              f"PATCH per round {r['patches_per_round']}, Teams cards {r['teams_cards_per_round']}, "
              f"compliant {r['all_compliant']}")
    print("BENCH concurrency " + json.dumps(report))
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
