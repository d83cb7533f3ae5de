"""dlp.cli.report: the JSON contract, the table, and SARIF 2.1.0 checked field by field (no schema download)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from dlp.cli import report
from dlp.domain.model import FAIL, NOT_APPLICABLE, PASS, UNKNOWN, Assessment, Finding, PrivateEndpoint, Registry
from dlp.domain.rules import CATALOGUE, evaluate, rules

ID = "/subscriptions/6c1f2f46-7f3e-4c3a-9a55-3b1f0e2d9c41/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/"


def registry(name: str, **changes: Any) -> Registry:
    return replace(Registry(id=ID + name, name=name, sku="Premium", source=f"examples/{name}.json"), **changes)


LOCKED = dict(export_policy="disabled", public_network_access="Disabled", network_default_action="Deny",
              network_bypass_options="None", data_endpoint_enabled=True,
              private_endpoints=(PrivateEndpoint("pe", "Approved"),))


@pytest.fixture
def assessments() -> list[Assessment]:
    return [
        evaluate(registry("lockedacr", **LOCKED)),
        evaluate(registry("driftedacr", **{**LOCKED, "export_policy": "enabled"})),
        evaluate(registry("openacr", admin_user_enabled=True)),
        evaluate(registry("basicacr", sku="Basic", source="examples/sub dir/basic.json")),
    ]


# --- JSON ---------------------------------------------------------------------------------------

def test_json_is_exactly_the_contract(assessments):
    document = json.loads(report.render_json(assessments))
    assert document == report.to_json(assessments) == [a.to_json() for a in assessments]
    for item, assessment in zip(document, assessments, strict=True):
        assert list(item) == ["registryId", "name", "sku", "source", "compliant", "findings"]
        assert item["registryId"] == assessment.registry.id
        assert item["compliant"] is (not any(f["status"] == FAIL for f in item["findings"]))
        for finding in item["findings"]:
            assert list(finding) == ["ruleId", "status", "severity", "remediable", "message"]
            assert finding["status"] in (PASS, FAIL, NOT_APPLICABLE, UNKNOWN)
            assert isinstance(finding["remediable"], bool)
    assert [item["compliant"] for item in document] == [True, False, False, False]


def test_json_of_nothing_is_an_empty_list():
    assert json.loads(report.render_json([])) == []


# --- table --------------------------------------------------------------------------------------

def test_table_shows_registries_failures_then_unknowns_and_a_summary(assessments):
    lines = report.render_table(assessments).splitlines()
    assert lines[0].split() == ["REGISTRY", "SKU", "COMPLIANT", "FAIL", "UNKNOWN", "SOURCE"]
    assert lines[1].split() == ["lockedacr", "Premium", "yes", "0", "0", "examples/lockedacr.json"]
    assert lines[2].split() == ["driftedacr", "Premium", "NO", "1", "1", "examples/driftedacr.json"]
    assert lines[3].split()[:3] == ["fail", "high", "DLP.ACR.ExportPolicy"]
    assert lines[4].split()[:3] == ["unknown", "high", "DLP.ACR.ExportPipelines"]
    assert lines[3].endswith("exportPolicy.status is enabled; must be disabled")
    # driftedacr 1 high + openacr 2 high, 3 medium, 2 low + basicacr 3 high; an unknown pipeline lookup each
    assert lines[-1] == ("4 registries: 1 compliant, 3 not compliant; failing findings: 11 (6 high, 3 medium, 2 low); "
                         "unknown findings: 2 (2 high, 0 medium, 0 low).")
    assert lines[-2] == ""
    # passes and not-applicable findings stay out of the table
    assert not any(line.split()[0] in (PASS, NOT_APPLICABLE) for line in lines[1:-2])


def test_table_orders_findings_by_status_then_severity(assessments):
    table = report.render_table(assessments[2:3]).splitlines()
    findings = [line.split()[:2] for line in table[2:-2]]
    ranks = [((FAIL, UNKNOWN).index(status), ("high", "medium", "low").index(severity)) for status, severity in findings]
    assert ranks == sorted(ranks) and len(ranks) == 8


def test_table_columns_line_up(assessments):
    lines = report.render_table(assessments).splitlines()
    rows = [line for line in lines[:-2] if not line.startswith("    ")]
    starts = {line.index("examples/") for line in rows[1:]}
    assert len(starts) == 1 and lines[0].index("SOURCE") in starts


def test_table_of_nothing_says_so():
    assert report.render_table([]).splitlines()[-1] == "No registries evaluated."


def test_summary_counts_a_single_registry():
    assert report.summary([evaluate(registry("lockedacr", **LOCKED))]) == (
        "1 registry: 1 compliant, 0 not compliant; failing findings: 0 (0 high, 0 medium, 0 low); "
        "unknown findings: 0 (0 high, 0 medium, 0 low).")


def test_multiline_messages_stay_on_one_line():
    odd = Assessment(registry("oddacr"), (Finding("DLP.ACR.AdminUser", FAIL, "medium", False, "line one\nline two"),))
    assert "line one line two" in report.render_table([odd])


# --- SARIF ----------------------------------------------------------------------------------------

def check_sarif(log: dict[str, Any]) -> None:
    """The parts of SARIF 2.1.0 (and of GitHub code scanning's subset) we emit, checked by hand."""
    assert log["version"] == "2.1.0"
    assert log["$schema"].startswith("https://") and "sarif" in log["$schema"]
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert isinstance(driver["name"], str) and driver["name"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", driver["version"])
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        for key in ("shortDescription", "fullDescription", "help"):
            assert isinstance(rule[key]["text"], str) and rule[key]["text"]
        assert rule["helpUri"].startswith("https://")
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
        assert 0.0 < float(rule["properties"]["security-severity"]) <= 10.0
        assert "security" in rule["properties"]["tags"]
    for result in run["results"]:
        assert result["ruleId"] in ids
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert isinstance(result["message"]["text"], str) and result["message"]["text"]
        assert len(result["locations"]) == 1
        physical = result["locations"][0]["physicalLocation"]
        uri = physical["artifactLocation"]["uri"]
        assert uri and "\\" not in uri and " " not in uri
        assert isinstance(physical["region"]["startLine"], int) and physical["region"]["startLine"] >= 1
        assert all(isinstance(v, str) for v in result["partialFingerprints"].values())
    json.dumps(log)                                       # serialisable as it is


def test_sarif_structure(assessments):
    log = report.to_sarif(assessments)
    check_sarif(log)
    assert [rule["id"] for rule in log["runs"][0]["tool"]["driver"]["rules"]] == list(CATALOGUE)
    assert json.loads(report.render_sarif(assessments)) == log


def test_sarif_has_one_result_per_failing_or_unknown_finding(assessments):
    results = report.to_sarif(assessments)["runs"][0]["results"]
    expected = [(a.registry.name, f.rule_id, f.status) for a in assessments for f in report.attention(a)]
    names = [r["locations"][0]["logicalLocations"][0]["name"] for r in results]
    assert [(name, r["ruleId"], r["properties"]["status"]) for name, r in zip(names, results, strict=True)] == expected
    assert not any(r["properties"]["status"] in (PASS, NOT_APPLICABLE) for r in results)


@pytest.mark.parametrize(("status", "severity", "level"), [
    (FAIL, "high", "error"), (FAIL, "medium", "warning"), (FAIL, "low", "note"),
    (UNKNOWN, "high", "note"), (UNKNOWN, "low", "note"),
])
def test_sarif_levels(status, severity, level):
    assert report.sarif_level(Finding("DLP.ACR.X", status, severity, False, "m")) == level


def test_sarif_rule_metadata_comes_from_the_catalogue():
    rule = report.to_sarif([])["runs"][0]["tool"]["driver"]["rules"][0]
    export_policy = CATALOGUE["DLP.ACR.ExportPolicy"]
    assert rule["shortDescription"]["text"] == export_policy.synopsis
    assert rule["help"]["text"] == export_policy.recommendation
    assert rule["helpUri"] == export_policy.links[0]
    assert rule["properties"]["security-severity"] == "8.0"
    assert rule["defaultConfiguration"]["level"] == "error"
    assert "every SKU" in rule["fullDescription"]["text"]


def test_sarif_lists_only_the_selected_rules(assessments):
    picked = rules(["DLP.ACR.AdminUser"])
    selected = [evaluate(a.registry, picked) for a in assessments]
    log = report.to_sarif(selected, picked)
    check_sarif(log)
    assert [r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]] == ["DLP.ACR.AdminUser"]
    assert {r["ruleId"] for r in log["runs"][0]["results"]} == {"DLP.ACR.AdminUser"}


def test_sarif_locations_use_relative_uris_and_the_located_line(assessments):
    log = report.to_sarif(assessments, locate=lambda reg: 42 if reg.name == "openacr" else 0)
    check_sarif(log)
    by_name = {r["locations"][0]["logicalLocations"][0]["name"]: r["locations"][0]["physicalLocation"]
               for r in log["runs"][0]["results"]}
    assert by_name["openacr"]["region"]["startLine"] == 42
    assert by_name["driftedacr"]["region"]["startLine"] == 1          # a line below 1 becomes 1
    assert by_name["basicacr"]["artifactLocation"]["uri"] == "examples/sub%20dir/basic.json"


def test_artifact_uri():
    assert report.artifact_uri("examples/a.json") == "examples/a.json"
    assert report.artifact_uri("./examples/a.json") == "examples/a.json"
    assert report.artifact_uri("/tmp/x y/a.json") == "file:///tmp/x%20y/a.json"


def test_fingerprints_are_stable_and_distinct(assessments):
    first = report.to_sarif(assessments)["runs"][0]["results"]
    second = report.to_sarif(assessments)["runs"][0]["results"]
    prints = [r["partialFingerprints"]["registryRule/v1"] for r in first]
    assert prints == [r["partialFingerprints"]["registryRule/v1"] for r in second]
    assert len(set(prints)) == len(prints)


def test_line_of_finds_the_registry():
    text = '{\n  "resources": [\n    {"type": "Microsoft.Storage/storageAccounts", "name": "x"},\n' \
           '    {\n      "type": "Microsoft.ContainerRegistry/registries",\n      "name": "buildacr"\n    }\n  ]\n}\n'
    assert report.line_of(text, registry("buildacr")) == 6
    assert report.line_of(text, registry("<resources[1]>")) == 5                      # falls back to the type
    arm = f'{{\n  "name": "x",\n  "id": "{ID}armacr"\n}}'
    assert report.line_of(arm, registry("armacr")) == 3
    assert report.line_of("{}", registry("nowhere")) == 1


def test_render_dispatches_and_rejects_unknown_formats(assessments):
    assert report.render(assessments, "json") == report.render_json(assessments)
    assert report.render(assessments, "table") == report.render_table(assessments)
    assert report.render(assessments, "sarif") == report.render_sarif(assessments)
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        report.render(assessments, "xml")
