"""Sweep benchmark: Resource Graph and ARM requests, and wall time, for a sweep of N emulated registries.

Runs the timer function's code (`dlp.triggers.timers.sweep`, with the process's Services as in Azure)
against the HTTPS ARM + Resource Graph emulator at the given injected latency, with Azurite for
the app's storage (leases, breaker) and Log Analytics on, so recording the N evaluations is part
of the time. A fraction of the registries is drifted (exports and public access on, an approved
private endpoint: each is re-read and remediated); the rest are fully compliant.

Targets: ceil(N / 1000) Resource Graph requests, at most 4 ARM requests per drifted registry, and
10,000 registries in under 10 s at 0 ms latency.

    .venv/bin/python -m bench.bench_sweep [--registries 10000] [--drifted 0.01] [--latency-ms 0]

The last line is machine-readable: `BENCH sweep {json}`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUB = "11111111-2222-3333-4444-555555555555"
WARMUP_SUB = "00000000-0000-0000-0000-00000000beef"      # outside DLP_SCOPES: warms clients and tokens only
COMPLIANT = {"export": "disabled", "public": "Disabled", "dataEndpointEnabled": True, "networkRuleBypassOptions": "None"}
DRIFTED = {"export": "enabled", "public": "Enabled", "dataEndpointEnabled": True, "networkRuleBypassOptions": "None"}
MAX_ARM_PER_DRIFTED = 4
TARGET_S = 10.0


def _populate(azure: Any, registries: int, drifted_fraction: float) -> list[str]:
    from dlp.emulator import make_registry

    every = round(1 / drifted_fraction) if drifted_fraction > 0 else 0
    drifted = []
    for index in range(registries):
        is_drifted = bool(every) and index % every == 0
        registry = make_registry(SUB, f"rg-{index % 20:02d}", f"acr{index:06d}", **(DRIFTED if is_drifted else COMPLIANT))
        azure.arm.registries.add(registry, [])
        if is_drifted:
            drifted.append(registry["id"])
    return drifted


def _warm_up(azure: Any, services: Any) -> None:
    """Token, SDK clients, tables: paid once per process, not part of a sweep's figures."""
    from dlp.azure.graph import graph_for
    from dlp.emulator import make_registry

    warm = azure.arm.registries.add(make_registry(WARMUP_SUB, "rg-warm", "acrwarmup01", **COMPLIANT), [])
    services.arm.get_registry(warm["id"])
    list(graph_for(services).registries([WARMUP_SUB]))
    services.state.recent_remediations(warm["id"], services.clock())
    services.recorder.record([])


def run(registries: int = 10_000, drifted_fraction: float = 0.01, latency_ms: float = 0.0) -> dict[str, Any]:
    """One timed sweep; returns the figures and whether each target was met."""
    from azure.functions.timer import TimerRequest

    from dlp import runtime
    from dlp.emulator import LocalAzure
    from dlp.emulator.azurite import Azurite
    from dlp.settings import load
    from dlp.triggers import timers

    azurite = Azurite()
    azurite.start()
    try:
        with LocalAzure() as azure, azure.environ():
            os.environ.update({"DLP_MODE": "enforce", "DLP_SCOPES": f"/subscriptions/{SUB}",
                               "AzureWebJobsStorage": azurite.connection_string})
            for name in ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
                os.environ.pop(name, None)
            services = runtime.build(load(os.environ))
            runtime.reset(services)
            _warm_up(azure, services)
            drifted = _populate(azure, registries, drifted_fraction)
            azure.set_latency(latency_ms / 1000)
            azure.arm.log.reset()

            started = time.perf_counter()
            result = timers.sweep(TimerRequest())
            wall_s = time.perf_counter() - started

            graph_requests = azure.arm.log.count(service="graph")
            arm_requests = azure.arm.log.count(service="arm") + azure.arm.log.count(service="arm-op")
            patches = azure.arm.log.count(service="arm", method="PATCH")
            remediated = result.by_action.get("remediated", 0)
            runtime.reset()
    finally:
        azurite.stop()

    graph_target = math.ceil(registries / 1000)
    arm_target = MAX_ARM_PER_DRIFTED * len(drifted)
    return {
        "registries": registries, "drifted": len(drifted), "latency_ms": latency_ms,
        "resource_graph_requests": graph_requests, "resource_graph_target": graph_target,
        "arm_requests": arm_requests, "arm_target": arm_target,
        "arm_requests_per_drifted": round(arm_requests / len(drifted), 2) if drifted else 0.0,
        "patches": patches, "remediated": remediated, "evaluations": len(result.evaluations),
        "from_rows": result.from_rows, "re_read": result.re_read, "wall_s": round(wall_s, 2),
        "phases_s": result.timings,
        "registries_per_s": round(registries / wall_s) if wall_s else 0,
        "targets_met": {"resource_graph": graph_requests <= graph_target, "arm": arm_requests <= arm_target,
                        "wall_time": latency_ms > 0 or wall_s < TARGET_S,
                        "all_remediated": remediated == len(drifted) == patches},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registries", type=int, default=10_000)
    parser.add_argument("--drifted", type=float, default=0.01, help="fraction of drifted registries (default 0.01)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency injected into every emulated answer")
    args = parser.parse_args(argv)
    figures = run(args.registries, args.drifted, args.latency_ms)
    print(f"registries {figures['registries']}, drifted {figures['drifted']}, latency {figures['latency_ms']:g} ms")
    print(f"  Resource Graph requests {figures['resource_graph_requests']} (target <= {figures['resource_graph_target']})")
    print(f"  ARM requests            {figures['arm_requests']} (target <= {figures['arm_target']}; "
          f"{figures['arm_requests_per_drifted']} per drifted registry; {figures['patches']} PATCH)")
    print(f"  wall time               {figures['wall_s']} s ({figures['registries_per_s']} registries/s; "
          f"target < {TARGET_S:g} s at 0 ms)")
    phases = figures["phases_s"]
    print(f"  of which                listing + rules {phases.get('listing', 0):.2f} s, drifted pipelines "
          f"{phases.get('pipelines', 0):.2f} s, recording to Log Analytics {phases.get('record', 0):.2f} s")
    print(f"  remediated              {figures['remediated']} of {figures['drifted']}; "
          f"{figures['from_rows']} evaluated from rows, {figures['re_read']} re-read")
    print("BENCH sweep " + json.dumps(figures))
    return 0 if all(figures["targets_met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
