"""Rule-engine benchmark: 10,000 registries from one Resource Graph-shaped file, and ARM templates.

Times loading the file (JSON parse), normalising rows into snapshots, and evaluating every
rule, separately and end to end, over several runs; reports medians and registries/second.
Target (issue 2): evaluation >= 20,000 registries/s on one core, so it is never the bottleneck.
Also (issue 23): templates/s for the Azure Verified Module's compiled container-registry template
(tests/data/avm-container-registry, 1,000+ lines, nested deployments, copy loops, lambdas) expanded with
its `max` parameter set and every rule evaluated: the cost of reading a template the way ARM deploys it.

    .venv/bin/python -m bench.bench_rules [--n 10000] [--repeats 5]

The last line is machine-readable: `BENCH rules {json}` (for the benchmark report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):                      # `python bench/bench_rules.py` from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlp.domain.rules import evaluate
from dlp.inputs.documents import load_json, registries_from_document
from dlp.inputs.templates import parameters_from_file

TARGET_EVALUATE_PER_S = 20_000
AVM = Path(__file__).resolve().parent.parent / "tests" / "data" / "avm-container-registry"
SUBSCRIPTIONS = [f"{i:08x}-1111-4222-8333-{i:012x}" for i in range(1, 21)]


def _row(index: int, rng: random.Random) -> dict[str, Any]:
    """One Resource Graph row in a state drawn to resemble a real estate: mostly Premium and locked,
    with drift, open registries, pending endpoints, odd casing and absent properties mixed in."""
    sku = rng.choices(("Premium", "Standard", "Basic"), weights=(70, 20, 10))[0]
    name = f"acr{index:05d}{rng.choice(('prod', 'dev', 'test', 'shared'))}"
    sub = SUBSCRIPTIONS[index % len(SUBSCRIPTIONS)]
    segment = rng.choice(("resourceGroups", "resourcegroups"))
    state = rng.random()
    props: dict[str, Any] = {"loginServer": f"{name}.azurecr.io", "provisioningState": "Succeeded",
                             "zoneRedundancy": "Disabled", "adminUserEnabled": rng.random() < 0.1}
    if state < 0.6 and sku == "Premium":        # locked down
        props.update({"publicNetworkAccess": rng.choice(("Disabled", "disabled")),
                      "policies": {"exportPolicy": {"status": "disabled"}, "retentionPolicy": {"days": 7, "status": "enabled"}},
                      "networkRuleSet": {"defaultAction": "Deny", "ipRules": []},
                      "networkRuleBypassOptions": rng.choice(("None", "AzureServices")),
                      "dataEndpointEnabled": True,
                      "privateEndpointConnections": [{
                          "id": f"/subscriptions/{sub}/resourceGroups/rg-{index}/providers/Microsoft.ContainerRegistry/"
                                f"registries/{name}/privateEndpointConnections/pe-{index}",
                          "name": f"pe-{index}",
                          "properties": {"privateLinkServiceConnectionState": {
                              "status": rng.choice(("Approved", "Approved", "Pending")), "description": ""},
                              "provisioningState": "Succeeded"}}]})
    elif state < 0.8:                           # drifted: exports re-enabled or public re-opened
        props.update({"publicNetworkAccess": rng.choice(("Enabled", "Disabled")),
                      "policies": {"exportPolicy": {"status": "enabled"}},
                      "networkRuleSet": {"defaultAction": rng.choice(("Allow", "Deny")), "ipRules": []},
                      "networkRuleBypassAllowedForTasks": rng.random() < 0.3,
                      "privateEndpointConnections": []})
    elif state < 0.9:                           # open to the internet, everything absent (Azure defaults)
        props.update({"anonymousPullEnabled": sku != "Basic" and rng.random() < 0.5})
    else:                                       # odd casing, as real payloads mix it
        props = {"PublicNetworkAccess": "ENABLED", "Policies": {"ExportPolicy": {"Status": "Disabled"}},
                 "NetworkRuleSet": {"DefaultAction": "deny"}, "AdminUserEnabled": "false"}
    return {"id": f"/subscriptions/{sub}/{segment}/rg-{index % 300}/providers/Microsoft.ContainerRegistry/registries/{name}",
            "name": name, "type": "microsoft.containerregistry/registries", "location": "westeurope",
            "resourceGroup": f"rg-{index % 300}", "subscriptionId": sub,
            "sku": {"name": sku, "tier": sku}, "tags": {"env": name[-4:]} if rng.random() < 0.7 else {},
            "properties": props}


def generate(n: int, seed: int = 2) -> dict[str, Any]:
    """A Resource Graph REST result holding n registry rows (deterministic for a seed)."""
    rng = random.Random(seed)
    rows = [_row(i, rng) for i in range(n)]
    return {"totalRecords": n, "count": n, "data": rows, "facets": [], "resultTruncated": "false"}


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def _evaluate_all(registries: list[Any]) -> list[Any]:
    return [evaluate(registry) for registry in registries]


def templates_per_s(repeats: int, per_run: int = 100) -> dict[str, Any]:
    """The AVM module read (expansion + snapshot) and evaluated `per_run` times per run; the median run."""
    template = load_json(AVM / "main.json")
    values = parameters_from_file(load_json(AVM / "parameters" / "max.parameters.json"), "max.parameters.json")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_run):
            [registry] = registries_from_document(template, "main.json", values)
            evaluate(registry)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"template": "avm/res/container-registry/registry main.json (max parameters)",
            "median_ms_per_template": round(median / per_run * 1000, 3), "templates_per_s": round(per_run / median)}


def run(n: int = 10_000, repeats: int = 5) -> dict[str, Any]:
    """Median seconds per stage over `repeats` runs, registries/second, and whether the target is met."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resource-graph.json"
        path.write_text(json.dumps(generate(n)))
        size = path.stat().st_size
        stages: dict[str, list[float]] = {"load": [], "normalise": [], "evaluate": [], "total": []}
        failing = 0
        for _ in range(repeats):
            load_s, document = _timed(load_json, path)
            normalise_s, registries = _timed(registries_from_document, document, str(path))
            evaluate_s, assessments = _timed(_evaluate_all, registries)
            assert len(assessments) == n
            failing = sum(1 for a in assessments if not a.compliant)
            for stage, seconds in (("load", load_s), ("normalise", normalise_s), ("evaluate", evaluate_s),
                                   ("total", load_s + normalise_s + evaluate_s)):
                stages[stage].append(seconds)
    medians = {stage: statistics.median(times) for stage, times in stages.items()}
    per_s = {stage: n / seconds if seconds else float("inf") for stage, seconds in medians.items()}
    return {
        "benchmark": "rules",
        "n": n,
        "repeats": repeats,
        "file_bytes": size,
        "non_compliant": failing,
        "median_s": {stage: round(seconds, 4) for stage, seconds in medians.items()},
        "registries_per_s": {stage: round(rate) for stage, rate in per_s.items()},
        "target_evaluate_per_s": TARGET_EVALUATE_PER_S,
        "target_met": per_s["evaluate"] >= TARGET_EVALUATE_PER_S,
        "avm_template": templates_per_s(repeats),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="registries in the file (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs; medians are reported (default 5)")
    args = parser.parse_args(argv)
    result = run(args.n, args.repeats)
    print(f"{result['n']} registries in one Resource Graph file ({result['file_bytes'] / 1e6:.1f} MB), "
          f"{result['repeats']} runs, median; {result['non_compliant']} not compliant")
    for stage in ("load", "normalise", "evaluate", "total"):
        print(f"  {stage:<10} {result['median_s'][stage] * 1000:9.1f} ms  {result['registries_per_s'][stage]:>10,} registries/s")
    avm = result["avm_template"]
    print(f"  AVM container-registry template: {avm['median_ms_per_template']:.2f} ms each, "
          f"{avm['templates_per_s']:,} templates/s (expanded and evaluated)")
    verdict = "met" if result["target_met"] else "MISSED"
    print(f"  target: evaluate >= {TARGET_EVALUATE_PER_S:,} registries/s on one core: {verdict}")
    print("BENCH rules " + json.dumps(result, sort_keys=True))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
