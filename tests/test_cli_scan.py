"""`python -m dlp scan` against the ARM + Resource Graph emulator: as a real process (DefaultAzureCredential
through the emulated managed-identity endpoint) and through dlp.cli.main for the terminal prompts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlp.cli import main
from dlp.emulator import make_registry, registry_id

SUB = "11111111-2222-3333-4444-555555555555"
SUB2 = "22222222-3333-4444-5555-666666666666"
COMPLIANT = {"export": "disabled", "public": "Disabled", "dataEndpointEnabled": True, "networkRuleBypassOptions": "None"}
DRIFTED = {"export": "enabled", "public": "Enabled", "dataEndpointEnabled": True, "networkRuleBypassOptions": "None"}
EVALUATE_KEYS = {"registryId", "name", "sku", "source", "compliant", "findings"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def arm(azure_env):
    return azure_env.arm


def scan(*args, stdin=subprocess.DEVNULL):
    """Run the CLI as a user would, in its own process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dlp", "scan", *args], cwd=REPO, env=env, stdin=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


class Terminal(io.StringIO):
    """A stdin that is a TTY and answers the prompt."""

    def isatty(self) -> bool:
        return True


def azure_calls(arm):
    return len(arm.log)


def test_table_report_exit_1_on_drift_and_the_plan_on_stderr(arm):
    arm.create(SUB, "rg-app", "acrgood01", **COMPLIANT)
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    done = scan("--subscription", SUB)
    assert done.returncode == 1, done.stderr
    assert "acrgood01" in done.stdout and "acrdrift01" in done.stdout
    assert "2 registries: 1 compliant, 1 not compliant" in done.stdout
    assert "acrdrift01: would-remediate (audit-mode): run again with --remediate to apply it" in done.stderr
    assert "page" not in done.stderr                                # one page: no progress indicator
    assert "Traceback" not in done.stderr
    assert arm.log.count(service="arm", method="PATCH") == 0
    assert arm.log.count(service="graph") == 1


def test_exit_0_when_everything_is_compliant_and_no_arm_read_at_all(arm):
    for i in range(3):
        arm.create(SUB, "rg-app", f"acrgood{i:02d}", **COMPLIANT)
    done = scan()
    assert done.returncode == 0, done.stderr
    assert "3 registries: 3 compliant, 0 not compliant" in done.stdout
    assert arm.log.count(service="arm") == 0 and arm.log.count(service="graph") == 1


def test_json_is_the_evaluate_element_plus_remediation(arm, tmp_path):
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    done = scan("--format", "json")
    assert done.returncode == 1, done.stderr
    [element] = json.loads(done.stdout)
    assert set(element) == EVALUATE_KEYS | {"remediation"}
    assert element["remediation"]["action"] == "would-remediate"
    # the same registry through `evaluate` (its ARM JSON in a file) gives the same verdicts
    path = tmp_path / "acrdrift01.json"
    path.write_text(json.dumps(arm.get(registry_id(SUB, "rg-app", "acrdrift01"))))
    offline = subprocess.run([sys.executable, "-m", "dlp", "evaluate", "--format", "json", str(path)], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, check=False)
    [evaluated] = json.loads(offline.stdout)
    assert offline.returncode == done.returncode
    assert set(evaluated) == EVALUATE_KEYS
    unknown_offline = {f["ruleId"] for f in evaluated["findings"] if f["status"] == "unknown"}
    assert unknown_offline == {"DLP.ACR.ExportPipelines"}            # a file does not list pipelines; ARM did
    assert [f for f in element["findings"] if f["ruleId"] not in unknown_offline] == \
        [f for f in evaluated["findings"] if f["ruleId"] not in unknown_offline]
    assert {k: element[k] for k in ("registryId", "name", "sku", "compliant")} == \
        {k: evaluated[k] for k in ("registryId", "name", "sku", "compliant")}


def test_sarif_output(arm):
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    done = scan("--format", "sarif")
    log = json.loads(done.stdout)
    assert done.returncode == 1 and log["version"] == "2.1.0"
    results = log["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"DLP.ACR.ExportPolicy", "DLP.ACR.PublicNetworkAccess"}
    assert all(r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"].endswith("acrdrift01") for r in results)


def test_progress_on_stderr_when_the_listing_takes_several_pages(arm):
    for i in range(1200):
        arm.add(make_registry(SUB, f"rg{i % 2}", f"acr{i:05d}", **COMPLIANT))
    done = scan("--format", "json")
    assert done.returncode == 0, done.stderr
    assert "scan: page 1: 1000/1200 registries listed" in done.stderr
    assert "scan: page 2: 1200/1200 registries listed" in done.stderr
    assert len(json.loads(done.stdout)) == 1200                     # stdout stays pure JSON
    assert arm.log.count(service="graph") == 2


def test_subscription_and_resource_group_narrow_the_listing(arm):
    arm.create(SUB, "rg-app", "acrapp01", **COMPLIANT)
    arm.create(SUB, "rg-other", "acrother01", **COMPLIANT)
    arm.create(SUB2, "rg-app", "acrapp02", **COMPLIANT)
    done = scan("--subscription", SUB, "--resource-group", "rg-app", "--format", "json")
    assert [e["name"] for e in json.loads(done.stdout)] == ["acrapp01"]
    [request] = arm.log.filter(service="graph")
    assert request.json()["subscriptions"] == [SUB] and "in~ ('rg-app')" in request.json()["query"]


# --- --remediate ----------------------------------------------------------------------------------------

def test_remediate_without_a_terminal_and_without_yes_refuses_before_any_azure_call(arm):
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    done = scan("--remediate")
    assert done.returncode == 2
    assert "pass --yes" in done.stderr and "Traceback" not in done.stderr
    assert azure_calls(arm) == 0


def test_remediate_yes_writes_only_the_drifted_registries(arm):
    arm.create(SUB, "rg-app", "acrgood01", **COMPLIANT)
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    arm.create(SUB, "rg-app", "acrdrift02", **DRIFTED)
    done = scan("--remediate", "--yes")
    assert done.returncode == 1                                     # the state found, before remediation
    assert "acrdrift01: remediated" in done.stderr and "acrdrift02: remediated" in done.stderr
    patched = sorted(p.path.rsplit("/", 1)[-1] for p in arm.log.filter(service="arm", method="PATCH"))
    assert patched == ["acrdrift01", "acrdrift02"]
    assert arm.get(registry_id(SUB, "rg-app", "acrdrift01"))["properties"]["publicNetworkAccess"] == "Disabled"
    again = scan()
    assert again.returncode == 0, again.stdout


def test_remediate_asks_on_a_terminal_and_writes_when_confirmed(arm, monkeypatch, capsys):
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert main(["scan", "--remediate"]) == 1
    err = capsys.readouterr().err
    assert "1 registry need(s) a write" in err and "acrdrift01: remediated" in err
    assert arm.log.count(service="arm", method="PATCH") == 1


def test_remediate_declined_writes_nothing_and_reports_the_plan(arm, monkeypatch, capsys):
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    assert main(["scan", "--remediate", "--format", "json"]) == 1
    captured = capsys.readouterr()
    assert "not confirmed: nothing is written" in captured.err
    assert json.loads(captured.out)[0]["remediation"]["action"] == "would-remediate"
    assert arm.log.count(service="arm", method="PATCH") == 0


# --- errors: exit 2, one line each, never a traceback ------------------------------------------------------

@pytest.mark.parametrize(("args", "words"), [
    (["--subscription", "not-a-guid"], "is not a subscription ID"),
    (["--resource-group", "rg/../x"], "is not a resource-group name"),
    (["--format", "yaml"], "invalid choice"),
])
def test_usage_errors_exit_2(arm, args, words):
    done = scan(*args)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
    assert azure_calls(arm) == 0


def test_resource_graph_refusing_is_exit_2_with_its_error(arm):
    arm.faults.add(method="POST", path="resourcegraph", status=403, service="graph",
                   body={"error": {"code": "AuthorizationFailed", "message": "no Reader role on the subscription"}})
    done = scan()
    assert done.returncode == 2
    assert "Resource Graph could not list the registries" in done.stderr and "AuthorizationFailed" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_arm_failure_on_one_registry_is_exit_2_and_the_others_are_still_reported(arm):
    arm.create(SUB, "rg-app", "acrgood01", **COMPLIANT)
    arm.create(SUB, "rg-app", "acrdrift01", **DRIFTED)
    arm.faults.add(method="GET", path="acrdrift01$", status=403, service="arm",
                   body={"error": {"code": "AuthorizationFailed", "message": "no read on acrdrift01"}})
    done = scan("--format", "json")
    assert done.returncode == 2
    assert "acrdrift01" in done.stderr and "no read on acrdrift01" in done.stderr
    assert [e["name"] for e in json.loads(done.stdout)] == ["acrgood01"]


def test_invalid_settings_in_the_environment_are_exit_2(arm, monkeypatch):
    monkeypatch.setenv("DLP_EXEMPTIONS", "not-an-id")
    done = scan()
    assert done.returncode == 2 and "DLP_EXEMPTIONS" in done.stderr
    assert azure_calls(arm) == 0
