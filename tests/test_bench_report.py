"""bench/run_all.py's `--only`: one benchmark rerun rewrites its own parts of bench/REPORT.md and nothing else."""

from __future__ import annotations

from pathlib import Path

from bench import run_all

ROOT = Path(__file__).resolve().parents[1]

STORM = {"benchmark": "storm", "registries": 30, "spread_s": 5.0, "window_s": 60, "last_drift_s": 5.0,
         "all_closed": True, "last_close_s": 6.2, "teams_cards": 2, "emails": 2, "emails_name": 30,
         "first_message_s": 0.9, "first_by_channel_s": {"teams": 0.9, "email": 1.4}, "last_message_s": 62.5}


def test_only_one_benchmark_rewrites_its_rows_and_section_and_recounts_the_targets():
    report = (ROOT / "bench" / "REPORT.md").read_text()
    runs = {"storm": [STORM, {**STORM, "teams_cards": 7}]}
    figures = {"storm": run_all.median_of(runs["storm"])}
    spliced = run_all.splice(report, figures, runs, {"storm": [70.0, 71.0]}, 2, "2026-12-01 10:00")

    assert spliced.count("| storm | #22 alert storm |") == 1
    assert "| storm | 30 registries opened by one caller within 5 s: Teams cards in all | <= 5 | 7 (max over runs) | " \
           "**missed** (see below) |" in spliced
    assert spliced.count("### Alert storm (`bench_storm`)") == 1
    assert "Partly regenerated on 2026-12-01 10:00 (UTC)" in spliced and "--only storm" in spliced
    before = [line for line in report.splitlines() if line.startswith("| ") and "storm" not in line
              and not line.startswith("| Commit") and not line.startswith("| Load")]
    assert all(line in spliced for line in before)                        # the other benchmarks' rows untouched
    rows = [line for line in spliced.split("## Targets:")[1].split("##")[0].splitlines() if line.startswith("| ")][1:]
    met = sum(line.endswith("| met |") for line in rows)
    assert f"## Targets: {met} of {len(rows)} met" in spliced and met == len(rows) - 1

    again = run_all.splice(spliced, {"storm": run_all.median_of([STORM])}, {"storm": [STORM]}, {"storm": [70.0]}, 1,
                           "2026-12-02 10:00")
    assert again.count("### Alert storm (`bench_storm`)") == 1 and again.count("| storm | #22 alert storm |") == 1
    assert again.count("Partly regenerated on") == 1 and "2026-12-02 10:00" in again
