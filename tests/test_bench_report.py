"""bench/run_all.py's `--only`: one benchmark rerun re-renders the whole report, its own figures new and every other
benchmark's from the stored runs (bench/runs.json), each saying when and at which commit it was measured."""

from __future__ import annotations

import json
from pathlib import Path

from bench import run_all

ROOT = Path(__file__).resolve().parents[1]

STORM = {"benchmark": "storm", "registries": 30, "spread_s": 5.0, "window_s": 60, "last_drift_s": 5.0,
         "all_closed": True, "last_close_s": 6.2, "teams_cards": 2, "emails": 2, "emails_name": 30,
         "first_message_s": 0.9, "first_by_channel_s": {"teams": 0.9, "email": 1.4}, "last_message_s": 62.5}


def test_only_one_benchmark_rerenders_the_report_from_its_new_runs_and_the_others_stored_ones(tmp_path, monkeypatch):
    stored = json.loads((ROOT / "bench" / "runs.json").read_text())
    assert {b.name for b in run_all.BENCHMARKS} <= set(stored)        # the committed store holds every benchmark
    runs_file = tmp_path / "runs.json"
    runs_file.write_text(json.dumps(stored))
    monkeypatch.setattr(run_all, "RUNS_FILE", runs_file)
    worse = {**STORM, "teams_cards": 7}
    answers = iter([(STORM, 70.0), (worse, 71.0)])
    report = tmp_path / "REPORT.md"

    assert run_all.main(["--only", "storm", "--runs", "2", "--report", str(report)], runner=lambda _b: next(answers)) == 0
    text = report.read_text()
    assert "| storm | 30 registries opened by one caller within 5 s: Teams cards in all | <= 5 | 7 (max over runs) | " \
           "**missed** (see below) |" in text
    assert text.count("### Alert storm (`bench_storm`)") == 1 and text.count("| storm | #22 alert storm |") == 1
    rows = [line for line in text.split("## Targets:")[1].split("##")[0].splitlines() if line.startswith("| ")][1:]
    met = sum(line.endswith("| met |") for line in rows)
    assert f"## Targets: {met} of {len(rows)} met" in text
    kept = json.loads(runs_file.read_text())
    assert kept["storm"]["runs"] == [STORM, worse] and kept["rules"] == stored["rules"]     # only storm replaced
    rules_row = next(line for line in text.splitlines() if line.startswith("| rules | "))
    assert stored["rules"]["measured"] in rules_row                    # when the stored figures were measured
