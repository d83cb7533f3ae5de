"""SARIF benchmark: `evaluate -o sarif` against `-o table` on one file of 1,000 / 2,000 / 4,000 registries.

Each size: the file is written once (indented JSON, one registry per Resource Graph row, as `az graph query`
prints them), then `evaluate` runs in this process as the CLI does (read, parse, normalise, evaluate, render),
once per format and repeat, interleaved; medians. SARIF locates every registry's line in its file: before
issue 24 that searched the whole text once per registry (quadratic: 5.9 / 16.5 / 51 s at 1,000 / 2,000 / 4,000
registries, against 0.65 / 1.28 / 1.58 s as a table); now each file is indexed once (dlp/cli/sarif_locations.py).
The same quadratic search is timed once at the smallest size, for comparison. Peak memory of a SARIF run
(tracemalloc) per size shows that it grows linearly.

Targets (issue 24): SARIF within 3x the table's time at 4,000 registries; peak memory at 4,000 at most 4.5x the
peak at 1,000 (linear, with slack for the interpreter's own).

    .venv/bin/python -m bench.bench_sarif [--sizes 1000 2000 4000] [--repeats 3]

The last line is machine-readable: `BENCH sarif {json}` (for the benchmark report).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_rules import generate
from dlp.cli import evaluate, report
from dlp.cli.sarif_locations import Artifacts

TARGET_RATIO = 3.0
TARGET_MEMORY_GROWTH = 4.5


def run_cli(path: Path, fmt: str, locate_each: Any = None) -> str:
    """What `evaluate PATH -o FMT` does, minus the process: evaluate_paths, then render."""
    outcome = evaluate.evaluate_paths([str(path)], keep_text=fmt == "sarif")
    locate = locate_each(outcome.texts) if locate_each else evaluate.locate_in(outcome.texts)
    return report.render(outcome.assessments, fmt, locate=locate, artifacts=Artifacts(path.parent))


def quadratic(texts: dict[str, str]) -> Any:
    """The search issue 24 replaced: every registry scans its file's whole text (first pattern that matches)."""
    def locate(registry: Any) -> int:
        text = texts.get(registry.source, "")
        for pattern in (re.escape(json.dumps(registry.id)[1:-1]), r'"name"\s*:\s*' + re.escape(json.dumps(registry.name))):
            match = re.search(pattern, text, re.IGNORECASE)
            if match:
                return text.count("\n", 0, match.start()) + 1
        return 1
    return locate


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def peak_bytes(path: Path) -> int:
    tracemalloc.start()
    try:
        run_cli(path, "sarif")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(sizes: list[int], repeats: int) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"registries-{n}.json"
            path.write_text(json.dumps(generate(n)["data"], indent=2), encoding="utf-8")
            times: dict[str, list[float]] = {"table": [], "sarif": []}
            results = 0
            if n == sizes[0]:                   # imports and first-call costs are not the format's
                run_cli(path, "table")
                run_cli(path, "sarif")
            for _ in range(repeats):
                for fmt in ("table", "sarif"):
                    seconds, text = timed(run_cli, path, fmt)
                    times[fmt].append(seconds)
                    if fmt == "sarif":
                        results = len(json.loads(text)["runs"][0]["results"])
            row = {"registries": n, "file_bytes": path.stat().st_size, "results": results,
                   "table_s": round(statistics.median(times["table"]), 3),
                   "sarif_s": round(statistics.median(times["sarif"]), 3), "peak_mb": round(peak_bytes(path) / 1e6, 1)}
            row["ratio"] = round(row["sarif_s"] / row["table_s"], 2)
            if n == sizes[0]:
                row["quadratic_sarif_s"] = round(timed(run_cli, path, "sarif", quadratic)[0], 3)
            rows.append(row)
    last, first = rows[-1], rows[0]
    growth = round(last["peak_mb"] / first["peak_mb"], 2) if first["peak_mb"] else 0.0
    return {"benchmark": "sarif", "repeats": repeats, "results": rows, "memory_growth": growth,
            "size_growth": round(last["registries"] / first["registries"], 2),
            "target_ratio": TARGET_RATIO, "target_memory_growth": TARGET_MEMORY_GROWTH,
            "targets_met": {"ratio": last["ratio"] <= TARGET_RATIO, "memory": growth <= TARGET_MEMORY_GROWTH}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(sorted(args.sizes), args.repeats)
    for row in result["results"]:
        extra = f"; the quadratic search: {row['quadratic_sarif_s']:.2f} s" if "quadratic_sarif_s" in row else ""
        print(f"{row['registries']:>6,} registries ({row['file_bytes'] / 1e6:.1f} MB, {row['results']:,} results): "
              f"table {row['table_s']:.2f} s, sarif {row['sarif_s']:.2f} s ({row['ratio']:.2f}x), "
              f"peak {row['peak_mb']:.1f} MB{extra}")
    print(f"memory x{result['memory_growth']} for x{result['size_growth']} registries; targets: {result['targets_met']}")
    print("BENCH sarif " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
