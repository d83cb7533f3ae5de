"""SARIF at scale and in place, and JUnit XML for CI test reports (issue 24).

- Line numbers come from one index per file (sarif_locations.LineIndex): the same lines as a search per registry,
  for every registry of a large file (the time is measured by bench/bench_sarif.py, never asserted here).
- With a source root (`--source-root`, default the git root of the input) file URIs are repository-relative
  with `uriBaseId: %SRCROOT%`, whatever the path given (`../`, absolute); outside it, the path as given.
- More than 25,000 results in one run (GitHub code scanning's limit): one warning line saying how to split.
- `-o junit`: a test case per registry x rule, a failure per failing finding carrying the recommendation,
  unknown and not-applicable ones skipped; counts that add up; hostile characters cannot break the XML.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from dlp import cli
from dlp.cli import report
from dlp.cli.junit import xml_text
from dlp.cli.sarif_locations import SRCROOT, Artifacts, LineIndex, git_root
from dlp.domain.model import FAIL, NOT_APPLICABLE, UNKNOWN
from dlp.domain.rules import CATALOGUE, evaluate
from dlp.inputs.documents import registries_from_document
from tests.test_report import check_sarif

ROOT = Path(__file__).resolve().parent.parent
SUB = "00000000-0000-0000-0000-0000000000aa"


def registry_json(i: int, sku: str = "Premium", name: str | None = None) -> dict:
    name = name or f"acrscale{i:05d}"
    return {"id": f"/subscriptions/{SUB}/resourceGroups/rg-{i % 7}/providers/Microsoft.ContainerRegistry/registries/"
                  f"{name}", "name": name, "type": "Microsoft.ContainerRegistry/registries", "location": "westeurope",
            "sku": {"name": sku}, "properties": {"publicNetworkAccess": "Enabled", "adminUserEnabled": True,
                                                   "policies": {"exportPolicy": {"status": "enabled"}}}}


def write(path: Path, document) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def search_line(text: str, registry) -> int:
    """The line the old per-registry search found: the registry's ARM ID, else its "name" pair."""
    for pattern in (re.escape(json.dumps(registry.id)), r'"name"\s*:\s*' + re.escape(json.dumps(registry.name))):
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return 1


def test_one_index_per_file_locates_every_registry_of_a_large_file(tmp_path):
    document = [registry_json(i) for i in range(2000)]
    text = json.dumps(document, indent=2)
    registries = registries_from_document(json.loads(text), "big.json", None)
    index = LineIndex(text)
    lines = [index.line_of(r) for r in registries]
    assert lines == [search_line(text, r) for r in registries]
    assert lines == sorted(lines) and len(set(lines)) == 2000            # each its own "id" line, in file order


def test_the_index_finds_the_id_then_the_name_then_the_type_and_never_a_longer_id():
    acr1 = f"/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.ContainerRegistry/registries/acr1"
    text = (f'{{\n"resources": [\n{{"id": "{acr1}/privateEndpointConnections/pe"}},\n'
            '{"type": "Microsoft.ContainerRegistry/registries", "name": "caf\\u00e9acr"},\n'
            f'{{"id": "{acr1.upper()}"}}\n]}}')
    index = LineIndex(text)
    [base] = registries_from_document(registry_json(1), "t.json", None)
    assert index.line_of(replace(base, id=acr1, name="acr1")) == 5       # its own ID (any case), not line 3's
    named = replace(base, id="Microsoft.ContainerRegistry/registries/caféacr", name="caféacr")
    assert index.line_of(named) == 4                                     # "name", JSON escapes decoded
    unnamed = replace(base, id="t.json#resources/x", name="<resources[0]>")
    assert index.line_of(unnamed) == 4                                   # the first registries type
    assert LineIndex("{}").line_of(unnamed) == 1


def test_report_line_of_still_answers_for_one_registry():
    document = registry_json(4, name="armacr")
    text = json.dumps(document, indent=2)
    [registry] = registries_from_document(document, "a.json", None)
    assert report.line_of(text, registry) == 2 and text.splitlines()[1].startswith('  "id"')


# --- file locations: %SRCROOT% -------------------------------------------------------------------------------------

def sarif_of(capsys, *argv: str) -> tuple[int, dict, str]:
    code = cli.main(["evaluate", *argv, "-o", "sarif"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def locations(log: dict) -> set[tuple[str, str | None]]:
    return {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["artifactLocation"].get("uriBaseId"))
            for r in log["runs"][0]["results"]}


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)                 # what git_root looks for: a .git folder (or file)
    write(repo / "infra" / "arm" / "acr.json", registry_json(1))
    (repo / "app").mkdir()
    return repo


@pytest.mark.parametrize("given", ["../infra/arm/acr.json", "ABSOLUTE", "../infra/"])
def test_paths_given_from_anywhere_become_repository_relative_with_srcroot(tmp_path, monkeypatch, capsys, given):
    repo = make_repo(tmp_path)
    monkeypatch.chdir(repo / "app")
    path = str(repo / "infra" / "arm" / "acr.json") if given == "ABSOLUTE" else given
    code, log, err = sarif_of(capsys, path)
    assert code == 1 and err == ""
    check_sarif(log)
    assert locations(log) == {("infra/arm/acr.json", SRCROOT)}
    assert log["runs"][0]["originalUriBaseIds"] == {SRCROOT: {"uri": repo.as_uri() + "/"}}


def test_source_root_option_wins_and_files_outside_it_keep_their_path(tmp_path, monkeypatch, capsys):
    repo = make_repo(tmp_path)
    outside = write(tmp_path / "elsewhere" / "acr.json", registry_json(2))
    monkeypatch.chdir(repo)
    _, log, _ = sarif_of(capsys, "infra/arm/acr.json", str(outside), "--source-root", str(repo / "infra"))
    assert locations(log) == {("arm/acr.json", SRCROOT), (outside.as_uri(), None)}


def test_without_a_git_root_paths_stay_as_given(tmp_path, monkeypatch, capsys):
    write(tmp_path / "plain" / "acr.json", registry_json(3))
    monkeypatch.chdir(tmp_path / "plain")
    assert git_root(".") is None                        # pytest's tmp_path lies in no repository
    _, log, _ = sarif_of(capsys, "acr.json")
    assert locations(log) == {("acr.json", None)} and "originalUriBaseIds" not in log["runs"][0]


def test_artifacts_never_point_a_result_at_the_root_itself_or_at_stdin():
    artifacts = Artifacts("/repo", cwd="/repo")
    assert artifacts.location("<stdin>") == {"uri": "%3Cstdin%3E"}
    assert artifacts.location("sub dir/x.json") == {"uri": "sub%20dir/x.json", "uriBaseId": SRCROOT}
    assert artifacts.location("../other/x.json") == {"uri": "../other/x.json"}


# --- GitHub's 25,000 results per run ---------------------------------------------------------------------------

def assessments_with_results(count_registries: int):
    document = [registry_json(i, sku="Basic") for i in range(count_registries)]
    return [evaluate(r) for r in registries_from_document(document, "many.json", None)]


def test_more_results_than_github_takes_in_a_run_is_one_warning_saying_how_to_split():
    few = assessments_with_results(10)
    assert report.sarif_limit_warning(few) == ""
    many = assessments_with_results(6500)
    count = report.sarif_result_count(many)
    assert count > report.SARIF_RESULT_LIMIT
    text = report.sarif_limit_warning(many)
    assert f"{count:,} results" in text and "25,000" in text and "split the input" in text and "--rule" in text


@pytest.mark.slow
def test_the_cli_warns_on_stderr_and_still_writes_the_log(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "many.json", [registry_json(i, sku="Basic") for i in range(6500)])
    monkeypatch.chdir(tmp_path)
    code = cli.main(["evaluate", str(path), "-o", "sarif", "--source-root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith("python -m dlp evaluate: warning: the SARIF run has") and "split the input" in line
    assert len(json.loads(out)["runs"][0]["results"]) > report.SARIF_RESULT_LIMIT


# --- JUnit ---------------------------------------------------------------------------------------------------------

def junit_of(*argv: str) -> tuple[int, ET.Element, str]:
    done = subprocess.run([sys.executable, "-m", "dlp", "evaluate", *argv, "-o", "junit"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120,
                          check=False)
    return done.returncode, ET.fromstring(done.stdout.encode()), done.stderr


def test_junit_over_the_examples_counts_what_the_json_says():
    code, root, err = junit_of("examples/")
    assert code == 1 and err == ""                       # the exit code is the gate's, whatever the format
    as_json = json.loads(subprocess.run([sys.executable, "-m", "dlp", "evaluate", "examples/", "-o", "json"],
                                        cwd=ROOT, capture_output=True, text=True, check=False).stdout)
    findings = [f for registry in as_json for f in registry["findings"]]
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    cases = root.findall("testsuite/testcase")
    assert len(suites) == len(as_json) == 16
    assert len(cases) == len(findings) == 16 * len(CATALOGUE)            # a test case per registry x rule
    failures = root.findall("testsuite/testcase/failure")
    skipped = root.findall("testsuite/testcase/skipped")
    assert len(failures) == sum(f["status"] == FAIL for f in findings) == 47     # the README's summary line
    assert len(skipped) == sum(f["status"] in (UNKNOWN, NOT_APPLICABLE) for f in findings)
    assert root.get("tests") == str(len(cases)) and root.get("failures") == "47"
    assert root.get("skipped") == str(len(skipped)) and root.get("errors") == "0"
    for suite in suites:
        assert int(suite.get("tests")) == len(suite.findall("testcase"))
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))


def test_a_junit_failure_names_the_finding_and_carries_the_recommendation():
    _, root, _ = junit_of("examples/premium-exports-reenabled.json")
    [suite] = root.findall("testsuite")
    assert suite.get("name") == "contososhareacr (examples/premium-exports-reenabled.json)"
    case = next(c for c in suite.findall("testcase") if c.get("name") == "DLP.ACR.ExportPolicy")
    assert case.get("classname") == "contososhareacr" and case.get("file") == "examples/premium-exports-reenabled.json"
    failure = case.find("failure")
    assert failure.get("message") == "exportPolicy.status is enabled; must be disabled" and failure.get("type") == "high"
    assert f"Recommendation: {' '.join(CATALOGUE['DLP.ACR.ExportPolicy'].recommendation.split())}" in failure.text
    unknown = next(c for c in suite.findall("testcase") if c.get("name") == "DLP.ACR.ExportPipelines")
    assert unknown.find("skipped").get("message").startswith("cannot be verified: ")
    passing = next(c for c in suite.findall("testcase") if c.get("name") == "DLP.ACR.AdminUser")
    assert list(passing) == []


def test_hostile_text_cannot_break_the_xml(tmp_path):
    template = {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0", "resources": [{
                    "type": "Microsoft.ContainerRegistry/registries", "apiVersion": "2023-07-01",
                    "name": "acr\u001b[31m\u0000</testcase><x>", "location": "westeurope", "sku": {"name": "Basic"},
                    "properties": {}}]}
    path = write(tmp_path / "evil.json", template)
    _, root, _ = junit_of(str(path))
    [suite] = root.findall("testsuite")
    assert "\u001b" not in ET.tostring(root, encoding="unicode") and "\u0000" not in suite.get("name")
    assert suite.get("name").startswith("acr[31m</testcase><x>")          # text, escaped, not markup
    assert xml_text("a\u0000b\ud800c\ufffed") == "abcd"
