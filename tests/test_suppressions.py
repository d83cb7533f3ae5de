"""`.acr-dlp.yaml` suppressions and --min-severity: a finding accepted on purpose, with a justification and an
expiry, is reported as `suppressed` (JSON, SARIF `suppressions`, a table marker) and does not fail the run;
anything wrong with the file stops the run with one line."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dlp.cli import suppressions
from dlp.domain.model import FAIL, SUPPRESSED, UNKNOWN
from dlp.domain.rules import evaluate
from dlp.inputs.documents import registries_from_file
from tests.test_cli_evaluate import EXAMPLES, ROOT, run, write

REENABLED = "examples/premium-exports-reenabled.json"
TODAY = dt.datetime.now(dt.timezone.utc).date()


def config(tmp_path, text: str):
    return write(tmp_path / ".acr-dlp.yaml", text)


def findings(out: str) -> dict[str, dict]:
    return {f["ruleId"]: f for f in json.loads(out)[0]["findings"]}


def test_a_suppressed_finding_is_reported_with_its_reason_and_does_not_fail_the_run(capsys, tmp_path, monkeypatch):
    code, out, _ = run(capsys, REENABLED, "-o", "json")
    failing = sorted(rule for rule, f in findings(out).items() if f["status"] == FAIL)
    assert code == 1 and failing
    entries = "".join(f"  - rule: {rule}\n    resource: '*reenabled*'\n    justification: accepted for the test (SEC-1)\n"
                      "    expires: 2999-12-31\n" for rule in failing)
    config(tmp_path, f"suppressions:\n{entries}")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, str(ROOT / REENABLED), "-o", "json")
    assert (code, err) == (0, "")
    accepted = findings(out)[failing[0]]
    assert accepted["status"] == SUPPRESSED and accepted["suppressedStatus"] == FAIL
    assert (accepted["justification"], accepted["expires"]) == ("accepted for the test (SEC-1)", "2999-12-31")
    assert json.loads(out)[0]["compliant"] is True


def test_sarif_carries_an_external_suppression_and_the_table_a_marker(capsys, tmp_path):
    path = config(tmp_path, "suppressions:\n  - rule: dlp.acr.exportpolicy\n    resource: /subscriptions/*\n"
                            "    justification: migration window (CHG-7)\n")
    code, out, _ = run(capsys, REENABLED, "-o", "sarif", "--config", str(path))
    result = next(r for r in json.loads(out)["runs"][0]["results"] if r["ruleId"] == "DLP.ACR.ExportPolicy")
    assert result["suppressions"] == [{"kind": "external", "status": "accepted", "justification": "migration window (CHG-7)"}]
    assert result["level"] == "error" and result["properties"]["status"] == SUPPRESSED
    assert code == 0                                              # its one failure is accepted
    _, table, _ = run(capsys, REENABLED, "--config", str(path))
    line = next(x for x in table.splitlines() if "DLP.ACR.ExportPolicy" in x)
    assert line.split()[0] == "suppressed" and line.endswith("[was fail; suppressed: migration window (CHG-7)]")
    assert table.splitlines()[-1].endswith("; suppressed findings: 1.")


def test_an_expired_suppression_no_longer_applies_and_the_run_says_so(capsys, tmp_path):
    path = config(tmp_path, "suppressions:\n  - rule: DLP.ACR.ExportPolicy\n    resource: '*'\n"
                            "    justification: old\n    expires: 2020-01-31\n")
    code, out, err = run(capsys, REENABLED, "-o", "json", "--config", str(path))
    assert code == 1 and findings(out)["DLP.ACR.ExportPolicy"]["status"] == FAIL
    assert err == (f"python -m dlp evaluate: note: {path}: suppression 1 (DLP.ACR.ExportPolicy on '*') expired on "
                   "2020-01-31: it no longer applies\n")


def test_the_expiry_day_itself_still_holds():
    [entry] = suppressions.parse(f"suppressions:\n- rule: DLP.ACR.AdminUser\n  resource: x\n  justification: j\n"
                                 f"  expires: {TODAY.isoformat()}\n", "c.yaml")
    assert entry.active(TODAY) and not entry.active(TODAY + dt.timedelta(days=1))


def test_resources_match_by_name_id_or_path_and_nothing_else():
    [registry] = registries_from_file(EXAMPLES / "premium-exports-reenabled.json")
    assessment = evaluate(registry)
    for pattern, matched in (("contosoprodacr", False), (registry.name.upper(), True), (registry.id.lower(), True),
                             ("examples/*.json", True), ("*", True), ("other*", False)):
        [entry] = suppressions.parse(f"suppressions:\n- rule: DLP.ACR.ExportPolicy\n  resource: '{pattern}'\n"
                                     "  justification: j\n", "c.yaml")
        [after] = suppressions.apply([assessment], [entry], TODAY)
        status = after.finding("DLP.ACR.ExportPolicy").status
        assert (status == SUPPRESSED) is matched, pattern
        assert after.finding("DLP.ACR.AdminUser") == assessment.finding("DLP.ACR.AdminUser")   # other rules untouched


def test_unknown_findings_can_be_suppressed_and_passing_ones_are_left_alone(capsys, tmp_path):
    template = ("examples/template-registry.json", "--parameters", "examples/parameters/template-registry.parameters.json")
    path = config(tmp_path, "suppressions:\n- rule: DLP.ACR.TrustedServices\n  resource: contosobuildacr\n"
                            "  justification: decided per environment at release (REL-3)\n"
                            "- rule: DLP.ACR.ExportPolicy\n  resource: contosobuildacr\n  justification: passes anyway\n")
    code, out, _ = run(capsys, *template, "-o", "json", "--fail-on", "unknown", "--config", str(path))
    found = findings(out)
    assert found["DLP.ACR.TrustedServices"]["suppressedStatus"] == UNKNOWN and code == 0
    assert found["DLP.ACR.ExportPolicy"]["status"] == "pass"


@pytest.mark.parametrize(("text", "message"), [
    ("suppressions:\n- rule: DLP.ACR.AdminUser\n  resource: x\n", "suppression 1: `justification` is required"),
    ("suppressions:\n- rule: DLP.ACR.AdminUser\n  resource: x\n  justification: '  '\n", "`justification` is required"),
    ("suppressions:\n- rule: DLP.ACR.Nope\n  resource: x\n  justification: j\n", "unknown rule ID 'DLP.ACR.Nope'"),
    ("suppressions:\n- rule: DLP.ACR.AdminUser\n  justification: j\n", "`resource` is required"),
    ("suppressions:\n- rule: DLP.ACR.AdminUser\n  resource: x\n  justification: j\n  expire: 2020-01-01\n",
     "unknown key(s) expire"),
    ("suppressions:\n- rule: DLP.ACR.AdminUser\n  resource: x\n  justification: j\n  expires: soon\n",
     "`expires` must be a date (YYYY-MM-DD), not 'soon'"),
    ("suppressions: [\n", "not valid YAML"),
    ("suppressions: {rule: x}\n", "`suppressions` must be a list"),
    ("- a\n- b\n", "expected a mapping with a `suppressions` list"),
    ("supressions: []\n", "unknown key(s) supressions"),
    ("suppressions:\n- !!python/object/apply:os.system ['true']\n", "not valid YAML"),      # safe_load only
])
def test_a_bad_suppressions_file_stops_the_run_with_one_line(capsys, tmp_path, text, message):
    path = config(tmp_path, text)
    code, out, err = run(capsys, REENABLED, "--config", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"python -m dlp evaluate: error: {path}: ") and message in err


def test_a_missing_named_config_is_an_error_and_a_missing_default_is_nothing(capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, REENABLED, "--config", str(tmp_path / "absent.yaml"))
    assert code == 2 and "absent.yaml: no such file" in err
    monkeypatch.chdir(tmp_path)
    assert run(capsys, str(ROOT / REENABLED))[0] == 1


@pytest.mark.parametrize(("threshold", "expected"), [("low", 1), ("medium", 1), ("high", 1)])
def test_min_severity_gates_only_failures_at_or_above_it(capsys, threshold, expected):
    assert run(capsys, REENABLED, "--min-severity", threshold)[0] == expected     # exports re-enabled: high


def test_min_severity_lets_low_failures_through_but_reports_them(capsys, tmp_path):
    document = json.loads((EXAMPLES / "premium-compliant.json").read_text())
    document["properties"]["dataEndpointEnabled"] = False                  # DLP.ACR.DataEndpoint: low
    only_low = str(write(tmp_path / "low.json", document))
    code, out, _ = run(capsys, only_low, "-o", "json")
    lows = [f for f in json.loads(out)[0]["findings"] if f["status"] == FAIL]
    assert lows and {f["severity"] for f in lows} == {"low"} and code == 1
    code, out_medium, _ = run(capsys, only_low, "-o", "json", "--min-severity", "medium")
    assert code == 0 and out_medium == out                         # reported the same, not failing the run
