"""`python -m dlp evaluate`: exit codes, the JSON contract over examples/, errors as one line each."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlp import cli
from dlp.cli import evaluate as evaluate_command
from dlp.domain.rules import CATALOGUE
from tests.test_report import check_sarif
from tests.test_sources import LOCKED, arm_get

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)          # sources are reported relative to where the command runs


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["evaluate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, document) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


# --- examples/ and the JSON contract -----------------------------------------------------------

EXPECTED = {  # source -> [(name, sku, compliant, failing rule IDs)]
    "examples/premium-compliant.json": [("contosoprodacr", "Premium", True, [])],
    "examples/premium-exports-reenabled.json": [("contososhareacr", "Premium", False, ["ExportPolicy"])],
    "examples/premium-open-to-internet.json": [("contosodevacr", "Premium", False, [
        "ExportPolicy", "PublicNetworkAccess", "Firewall", "PrivateEndpoint", "AdminUser", "AnonymousPull",
        "DataEndpoint", "TrustedServices", "TasksBypass"])],
    "examples/basic-az-acr-show.json": [("contosotoolsacr", "Basic", False,
                                         ["ExportPolicy", "PublicNetworkAccess", "PremiumSku", "AdminUser"])],
    "examples/az-acr-list.json": [
        ("fabrikamhubacr", "Premium", False, ["ExportPolicy", "PublicNetworkAccess", "TrustedServices"]),
        ("fabrikamciacr", "Standard", False, ["ExportPolicy", "PublicNetworkAccess", "PremiumSku", "AnonymousPull"]),
        ("fabrikamsandbox", "Basic", False, ["ExportPolicy", "PublicNetworkAccess", "PremiumSku"])],
    "examples/resource-graph.json": [
        ("paymentsprodacr", "Premium", False, ["PrivateEndpoint"]),
        ("paymentstestacr", "Standard", False, ["ExportPolicy", "PublicNetworkAccess", "PremiumSku"])],
    "examples/template-registry.json": [("contosobuildacr", "Premium", False, ["ExportPolicy", "PublicNetworkAccess"])],
    "examples/template-v2-symbolic.json": [("contosoedgeacr", "Premium", False,
                                            ["ExportPolicy", "ExportPipelines", "TrustedServices"])],
    "examples/terraform/plan-with-module.json": [
        ("contosobuildacr", "Premium", False, ["ExportPolicy", "PublicNetworkAccess", "TrustedServices"]),
        ("contosocoreacr", "Premium", True, []),
        ("contosomirroracr", "Premium", False, ["ExportPolicy", "PublicNetworkAccess", "Firewall", "ExportPipelines",
                                                "DataEndpoint", "TrustedServices"])],
    "examples/terraform/state.json": [
        ("contososharedacr", "Premium", False, ["TrustedServices"]),
        ("contosoutilacr", "Basic", False, ["ExportPolicy", "PublicNetworkAccess", "PremiumSku", "AdminUser"])],
}


def test_examples_json_matches_the_contract(capsys):
    code, out, err = run(capsys, "examples/", "--format", "json")
    assert (code, err) == (1, "")
    document = json.loads(out)
    got: dict[str, list] = {}
    for item in document:
        assert set(item) == {"registryId", "name", "sku", "source", "compliant", "findings"}
        assert [f["ruleId"] for f in item["findings"]] == list(CATALOGUE)
        for finding in item["findings"]:
            assert set(finding) == {"ruleId", "status", "severity", "remediable", "message"}
            assert finding["severity"] == CATALOGUE[finding["ruleId"]].severity
        assert item["compliant"] is all(f["status"] != "fail" for f in item["findings"])
        failing = [f["ruleId"].rsplit(".", 1)[-1] for f in item["findings"] if f["status"] == "fail"]
        got.setdefault(item["source"], []).append((item["name"], item["sku"], item["compliant"], failing))
    assert got == EXPECTED
    ids = {item["name"]: item["registryId"] for item in document}
    assert ids["contosoprodacr"].startswith("/subscriptions/6c1f2f46-")
    assert ids["contosoedgeacr"] == "Microsoft.ContainerRegistry/registries/contosoedgeacr"     # template: name-based
    assert ids["contosomirroracr"] == "module.acr.module.mirror.azapi_resource.registry"     # Terraform: the address


def test_parameters_file_resolves_the_template(capsys):
    code, out, err = run(capsys, "examples/template-registry.json", "--parameters",
                         "examples/parameters/template-registry.parameters.json", "--format", "json")
    assert err == ""
    findings = {f["ruleId"].rsplit(".", 1)[-1]: f["status"] for f in json.loads(out)[0]["findings"]}
    assert findings["PublicNetworkAccess"] == findings["ExportPolicy"] == findings["ExportPipelines"] == "pass"
    assert findings["TrustedServices"] == "unknown"              # [variables('bypass')]: never guessed
    assert findings["PrivateEndpoint"] == "pass"                 # the template's own private endpoint
    assert code == 0


def test_table_is_the_default_and_ends_with_a_summary(capsys):
    code, out, _ = run(capsys, "examples/premium-compliant.json", "examples/premium-exports-reenabled.json")
    lines = out.splitlines()
    assert code == 1
    assert lines[0].split()[:3] == ["REGISTRY", "SKU", "COMPLIANT"]
    assert lines[1].split()[:3] == ["contosoprodacr", "Premium", "yes"]
    assert lines[2].split()[:3] == ["contososhareacr", "Premium", "NO"]
    assert "exportPolicy.status is enabled; must be disabled" in lines[3]
    assert lines[-1].startswith("2 registries: 1 compliant, 1 not compliant;")


def test_sarif_over_the_examples(capsys):
    code, out, err = run(capsys, "examples/", "--format", "sarif")
    assert (code, err) == (1, "")
    log = json.loads(out)
    check_sarif(log)
    results = log["runs"][0]["results"]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert "examples/template-v2-symbolic.json" in uris and all(uri.startswith("examples/") for uri in uris)
    pipeline = next(r for r in results if r["ruleId"] == "DLP.ACR.ExportPipelines" and r["level"] == "error")
    assert pipeline["locations"][0]["physicalLocation"]["region"]["startLine"] == 21     # "registry": { (its resource)
    assert "contosoedgeacr" in pipeline["message"]["text"]


# --- exit codes ---------------------------------------------------------------------------------

def test_exit_0_when_nothing_fails(capsys):
    assert run(capsys, "examples/premium-compliant.json")[0] == 0


def test_exit_1_when_a_finding_fails(capsys):
    assert run(capsys, "examples/premium-open-to-internet.json")[0] == 1


def test_exit_2_for_input_errors_but_every_other_file_is_reported(capsys, tmp_path):
    broken = write(tmp_path / "broken.json", "{oops")
    code, out, err = run(capsys, str(broken), "examples/premium-compliant.json", str(tmp_path / "missing.json"),
                         "--format", "json")
    assert code == 2
    assert [item["name"] for item in json.loads(out)] == ["contosoprodacr"]
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0] == (f"python -m dlp evaluate: error: {broken}: not JSON: Expecting property name enclosed in double "
                        "quotes at line 1 column 2")
    assert lines[1] == f"python -m dlp evaluate: error: {tmp_path / 'missing.json'}: no such file or directory"


def test_input_errors_win_over_failures(capsys, tmp_path):
    code, out, _ = run(capsys, str(write(tmp_path / "empty.json", "")), "examples/premium-open-to-internet.json")
    assert code == 2 and "contosodevacr" in out


@pytest.mark.parametrize("content", [
    "", "   ", "null", "42", '"x"', "[]", "{}", '{"data": "rows"}', '{"value": [1, 2]}', "[" * 50_000,
    '{"resources": {"a": 1}, "contentVersion": "1"}', "\ufeff{", '{"type": "Microsoft.ContainerRegistry/registries"',
])
def test_malformed_files_give_one_line_and_no_traceback(capsys, tmp_path, content):
    path = write(tmp_path / "bad.json", content)
    code, out, err = run(capsys, str(path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"python -m dlp evaluate: error: {path}: ")
    assert "Traceback" not in err and "internal error" not in err
    assert out.splitlines()[-1] == "No registries evaluated."


def test_an_internal_error_is_still_one_line_and_other_files_count(capsys, monkeypatch, tmp_path):
    real = evaluate_command.read_document

    def explode(document, source, parameters=None):
        if source.endswith("boom.json"):
            raise RuntimeError("kaboom")
        return real(document, source, parameters)

    monkeypatch.setattr(evaluate_command, "read_document", explode)
    boom = write(tmp_path / "boom.json", arm_get("Premium", {}))
    code, out, err = run(capsys, str(boom), "examples/premium-compliant.json", "--format", "json")
    assert code == 2
    assert err == (f"python -m dlp evaluate: error: {boom}: internal error (RuntimeError: kaboom); "
                   "please report it with the file\n")
    assert [item["name"] for item in json.loads(out)] == ["contosoprodacr"]


# --- usage ----------------------------------------------------------------------------------------

def test_unknown_rule_id_lists_the_valid_ones(capsys):
    code, out, err = run(capsys, "examples/", "--rule", "DLP.ACR.Nope")
    assert code == 2 and out == ""
    assert err.startswith("python -m dlp evaluate: error: unknown rule ID 'DLP.ACR.Nope'; valid IDs: ")
    assert all(rule_id in err for rule_id in CATALOGUE)
    assert err.count("\n") == 1


def test_rule_filter_is_repeatable_comma_separated_and_case_insensitive(capsys):
    code, out, _ = run(capsys, "examples/premium-exports-reenabled.json", "--format", "json",
                       "--rule", "dlp.acr.adminuser", "--rule", "DLP.ACR.Firewall,DLP.ACR.TasksBypass")
    item = json.loads(out)[0]
    assert [f["ruleId"] for f in item["findings"]] == ["DLP.ACR.AdminUser", "DLP.ACR.Firewall", "DLP.ACR.TasksBypass"]
    assert (code, item["compliant"]) == (0, True)          # the failing ExportPolicy was not selected


def test_rule_filter_restricts_sarif_rules(capsys):
    _, out, _ = run(capsys, "examples/", "--format", "sarif", "--rule", "DLP.ACR.ExportPolicy")
    log = json.loads(out)
    assert [r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]] == ["DLP.ACR.ExportPolicy"]


@pytest.mark.parametrize("argv", [[], ["--format", "xml", "examples/"], ["examples/", "--bogus"]])
def test_usage_errors_exit_2(capsys, argv):
    assert run(capsys, *argv)[0] == 2


def test_no_command_and_help(capsys):
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert cli.main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--parameters" in out and "Exit code" in out


# --- parameters ----------------------------------------------------------------------------------

def test_unreadable_parameters_file_stops_before_evaluating(capsys, tmp_path):
    code, out, err = run(capsys, "examples/", "--parameters", str(write(tmp_path / "p.json", '{"resources": []}')))
    assert (code, out) == (2, "")
    assert err.startswith(f"python -m dlp evaluate: error: {tmp_path / 'p.json'}: not a parameters file")
    code, out, err = run(capsys, "examples/", "--parameters", str(tmp_path / "nope.json"))
    assert (code, out) == (2, "")
    assert "No such file or directory" in err


def test_a_parameters_file_named_as_input_says_to_use_parameters(capsys):
    code, _, err = run(capsys, "examples/parameters/template-registry.parameters.json")
    assert code == 2
    assert "a deployment parameters file, not registries: pass it with --parameters" in err


# --- directory walks -------------------------------------------------------------------------------

def test_directory_walk_is_recursive_sorted_and_skips_what_is_not_registries(capsys, tmp_path):
    locked = arm_get("Premium", LOCKED)
    write(tmp_path / "b" / "second.json", {**locked, "name": "secondacr", "id": locked["id"] + "2"})
    write(tmp_path / "a.json", {**locked, "name": "firstacr"})
    write(tmp_path / "notes.txt", "not json")
    write(tmp_path / ".git" / "hidden.json", "{broken")
    write(tmp_path / "node_modules" / "pkg" / "package.json", {"name": "pkg"})
    write(tmp_path / "params.json", {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                                                "deploymentParameters.json#", "parameters": {}})
    write(tmp_path / "network.json", {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                                                 "deploymentTemplate.json#", "contentVersion": "1.0.0.0",
                                      "resources": [{"type": "Microsoft.Network/virtualNetworks", "name": "vnet"},
                                                    {"type": "Microsoft.Network/privateEndpoints", "name": "pe",
                                                     "properties": {"privateLinkServiceConnections": [{"properties": {
                                                         "privateLinkServiceId": "[resourceId('Microsoft."
                                                         "ContainerRegistry/registries', 'sharedacr')]"}}]}}]})
    code, out, err = run(capsys, str(tmp_path), "--format", "json")
    assert (code, err) == (0, "")
    assert [item["name"] for item in json.loads(out)] == ["firstacr", "secondacr"]
    assert [item["source"] for item in json.loads(out)] == [str(tmp_path / "a.json"), str(tmp_path / "b" / "second.json")]


def test_directory_walk_evaluates_registries_in_nested_deployments(capsys, tmp_path):
    write(tmp_path / "main.json", {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                                              "deploymentTemplate.json#", "contentVersion": "1.0.0.0",
                                   "resources": [{"type": "Microsoft.Resources/deployments", "name": "acr",
                                                  "properties": {"template": {"resources": [
                                                      {"type": "Microsoft.ContainerRegistry/registries"}]}}}]})
    code, out, err = run(capsys, str(tmp_path), "-o", "json")
    assert (code, err) == (1, "")
    assert json.loads(out)[0]["registryId"] == "acr/<resources[0]>"


def test_directory_walk_says_which_linked_templates_it_cannot_see(capsys, tmp_path):
    write(tmp_path / "main.json", {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                                              "deploymentTemplate.json#", "contentVersion": "1.0.0.0",
                                   "resources": [{"type": "Microsoft.Resources/deployments", "name": "acr",
                                                  "properties": {"templateLink": {"relativePath": "acr.json"}}}]})
    write(tmp_path / "ok.json", json.loads((EXAMPLES / "premium-compliant.json").read_text()))
    code, _, err = run(capsys, str(tmp_path))
    assert code == 0                                   # without --verbose too: a linked template is never silent
    assert "main.json: nested deployments by templateLink are not fetched" in err and "acr (acr.json)" in err


def test_directory_without_json_is_an_error_and_a_walk_finding_no_registry_is_one_line(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, str(tmp_path / "empty"))
    assert code == 2 and err.endswith("no *.json or *.bicep file in this directory\n")
    write(tmp_path / "other" / "host.json", {"version": "2.0"})
    code, out, err = run(capsys, str(tmp_path / "other"), "-o", "json")
    assert (code, json.loads(out)) == (2, [])
    assert err == (f"python -m dlp evaluate: error: no container registry found in {tmp_path / 'other'} "
                   "(1 file skipped: no container registry in them; --verbose lists them)\n")


def test_a_file_named_twice_is_evaluated_once(capsys):
    _, out, _ = run(capsys, "examples/premium-compliant.json", "./examples/premium-compliant.json", "examples",
                    "--format", "json")
    names = [item["name"] for item in json.loads(out)]
    assert names.count("contosoprodacr") == 1 and len(names) == 16


# --- the real entry point ---------------------------------------------------------------------------

def test_python_dash_m_dlp_runs_the_quick_start(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "dlp", "evaluate", "examples/"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[-1] == (
        "16 registries: 2 compliant, 14 not compliant; failing findings: 47 (29 high, 10 medium, 8 low); "
        "unknown findings: 10 (5 high, 4 medium, 1 low).")


# --- the gate: --fail-on, nothing found, what a walk skips ------------------------------------------

PARAMETERS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"
TEMPLATE = ("examples/template-registry.json", "--parameters", "examples/parameters/template-registry.parameters.json")


def test_fail_on_unknown_makes_an_unverifiable_finding_fail_the_gate(capsys):
    code, default_out, _ = run(capsys, *TEMPLATE, "-o", "json")     # passes, TrustedServices unknown
    assert code == 0
    code, strict_out, err = run(capsys, *TEMPLATE, "-o", "json", "--fail-on", "unknown")
    assert (code, err) == (1, "")
    assert strict_out == default_out                                 # the JSON contract does not change
    assert json.loads(strict_out)[0]["compliant"] is True
    assert run(capsys, *TEMPLATE, "--fail-on", "fail")[0] == 0
    assert run(capsys, "examples/premium-compliant.json", "--fail-on", "unknown")[0] == 0   # nothing unknown
    assert run(capsys, *TEMPLATE, "--fail-on", "maybe")[0] == 2


def test_the_summary_counts_failing_and_unknown_findings(capsys):
    _, out, _ = run(capsys, *TEMPLATE)
    assert out.splitlines()[-1] == ("1 registry: 1 compliant, 0 not compliant; failing findings: 0 (0 high, 0 medium, "
                                    "0 low); unknown findings: 1 (0 high, 0 medium, 1 low).")


NOT_REGISTRIES = {
    "package.json": {"name": "infra", "version": "1.0.0", "scripts": {"build": "bicep build"}},
    "abbreviations.json": {"containerRegistryRegistries": "cr", "storageStorageAccounts": "st"},
    "bicepconfig.json": '{\n  // Bicep linter settings (JSON with comments)\n  "analyzers": {"core": {"enabled": true}}\n}',
    "findings-columns.json": [{"name": "TimeGenerated", "type": "datetime"}, {"name": "RegistryId", "type": "string"}],
    "scalar.json": "42",
    # a REST API spec example: it has a "parameters" key, but it is no deployment parameters file
    "Registries_Get.json": {"parameters": {"subscriptionId": "00000000-0000-0000-0000-000000000000",
                                           "resourceGroupName": "myResourceGroup", "registryName": "myRegistry",
                                           "api-version": "2025-04-01"},
                            "responses": {"200": {"body": {
                                "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
                                      "myResourceGroup/providers/Microsoft.ContainerRegistry/registries/myRegistry",
                                "name": "myRegistry", "type": "Microsoft.ContainerRegistry/registries"}}}},
    "main.parameters.json": {"$schema": PARAMETERS_SCHEMA, "contentVersion": "1.0.0.0",
                             "parameters": {"location": {"value": "westeurope"}}},
    "network.json": {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                     "contentVersion": "1.0.0.0", "resources": [{"type": "Microsoft.Network/virtualNetworks"}]},
    "tfstate.json": {"format_version": "1.0", "terraform_version": "1.14.0"},
}


def test_a_walk_skips_json_that_holds_no_registry_and_says_so_under_verbose(capsys, tmp_path):
    for name, document in NOT_REGISTRIES.items():
        write(tmp_path / "infra" / name, document)
    shutil.copy(EXAMPLES / "premium-compliant.json", tmp_path / "infra" / "registry.json")
    code, out, err = run(capsys, str(tmp_path / "infra"), "-o", "json")
    assert (code, err) == (0, "")
    assert [item["name"] for item in json.loads(out)] == ["contosoprodacr"]
    code, _, err = run(capsys, str(tmp_path / "infra"), "--verbose")
    assert code == 0
    notes = err.splitlines()
    assert len(notes) == len(NOT_REGISTRIES)
    assert all(line.startswith(f"python -m dlp evaluate: note: skipped {tmp_path / 'infra'}/") for line in notes)
    assert any("bicepconfig.json: not JSON" in line for line in notes)
    assert any("main.parameters.json: a deployment parameters file" in line for line in notes)


@pytest.mark.parametrize("name", sorted(NOT_REGISTRIES))
def test_a_file_named_explicitly_must_hold_registries(capsys, tmp_path, name):
    path = write(tmp_path / name, NOT_REGISTRIES[name])
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert err.startswith(f"python -m dlp evaluate: error: {path}: ") and err.count("\n") == 1


def test_parameters_files_are_recognised_by_schema_only(capsys, tmp_path):
    rest_example = write(tmp_path / "example.json", NOT_REGISTRIES["Registries_Get.json"])
    _, _, err = run(capsys, str(rest_example))
    assert "not a container registry" in err and "parameters file" not in err
    params = write(tmp_path / "p.json", {"$schema": PARAMETERS_SCHEMA.upper(), "parameters": {}})
    _, _, err = run(capsys, str(params))
    assert "a deployment parameters file, not registries: pass it with --parameters" in err


def test_a_broken_file_that_mentions_a_registry_is_an_error_even_in_a_walk(capsys, tmp_path):
    write(tmp_path / "acr.json", '{"type": "Microsoft.ContainerRegistry/registries", "name": ')
    write(tmp_path / "tfplan.json", '{"resource_changes": [{"type": "azurerm_container_registry"')
    shutil.copy(EXAMPLES / "premium-compliant.json", tmp_path / "ok.json")
    code, out, err = run(capsys, str(tmp_path), "-o", "json")
    assert code == 2 and [item["name"] for item in json.loads(out)] == ["contosoprodacr"]
    assert [line.split(": ")[2] for line in err.splitlines()] == [str(tmp_path / "acr.json"),
                                                                  str(tmp_path / "tfplan.json")]


def test_this_repository_infra_runs_as_the_ci_recipe_says(capsys, monkeypatch):
    """infra/ here is Bicep and holds no registry. With no Bicep CLI the gate refuses, naming every .bicep file;
    with --skip-bicep it says in one line that nothing was found, not tripping over abbreviations.json or the
    column list, and does not pass."""
    monkeypatch.setenv("PATH", "")
    bicep_files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "infra").rglob("*.bicep"))
    code, out, err = run(capsys, "infra/", "-o", "sarif")
    assert code == 2 and len(bicep_files) >= 3
    assert err.startswith(f"python -m dlp evaluate: error: {len(bicep_files)} Bicep files cannot be evaluated: "
                          "no Bicep CLI on PATH (")
    assert all(name in err for name in bicep_files) and "--skip-bicep" in err and err.count("\n") == 1
    code, out, err = run(capsys, "infra/", "-o", "sarif", "--skip-bicep")
    skipped = len(list((ROOT / "infra").rglob("*.json"))) + len(list((ROOT / "infra").rglob("*.bicep*")))
    assert code == 2
    assert err == (f"python -m dlp evaluate: error: no container registry found in infra/ ({skipped} files "
                   "skipped: no container registry in them; --verbose lists them)\n")
    assert json.loads(out)["runs"][0]["results"] == []


# --- stdin, -o ----------------------------------------------------------------------------------------

def feed(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_dash_reads_one_json_document_from_stdin(capsys, monkeypatch):
    feed(monkeypatch, (EXAMPLES / "template-v2-symbolic.json").read_bytes())
    code, out, err = run(capsys, "-", "-o", "json")
    assert (code, err) == (1, "")
    assert [(item["name"], item["source"]) for item in json.loads(out)] == [("contosoedgeacr", "<stdin>")]


def test_stdin_name_is_where_sarif_locates_a_compiled_bicep_file(capsys, monkeypatch):
    feed(monkeypatch, b"\xef\xbb\xbf" + (EXAMPLES / "template-v2-symbolic.json").read_bytes())   # a BOM, as az may write
    code, out, _ = run(capsys, "-", "--stdin-name", "infra/main.bicep", "--output", "sarif")
    assert code == 1
    locations = [r["locations"][0]["physicalLocation"] for r in json.loads(out)["runs"][0]["results"]]
    assert {loc["artifactLocation"]["uri"] for loc in locations} == {"infra/main.bicep"}
    assert {loc["region"]["startLine"] for loc in locations} == {1}   # lines of the compiled JSON are not the .bicep's


@pytest.mark.parametrize(("data", "message"), [
    (b"", "<stdin>: empty file; expected JSON"),
    (b"{}{}", "<stdin>: not JSON: Extra data at line 1 column 3"),
    (b"\xff", "<stdin>: not UTF-8 text (invalid start byte); re-encode it as UTF-8"),
    ("[]".encode("utf-16"), "<stdin>: not UTF-8 text (it is UTF-16); re-encode it as UTF-8"),
    (b'{"name": "x"}', "<stdin>: not a container registry"),
])
def test_bad_stdin_is_one_line(capsys, monkeypatch, data, message):
    feed(monkeypatch, data)
    code, _, err = run(capsys, "-")
    assert code == 2 and err.startswith(f"python -m dlp evaluate: error: {message}") and err.count("\n") == 1


def test_dash_twice_reads_stdin_once_next_to_files(capsys, monkeypatch):
    feed(monkeypatch, (EXAMPLES / "premium-compliant.json").read_bytes())
    code, out, err = run(capsys, "-", "examples/premium-exports-reenabled.json", "-", "-o", "json")
    assert (code, err) == (1, "")
    assert [item["source"] for item in json.loads(out)] == ["<stdin>", "examples/premium-exports-reenabled.json"]


def test_a_terminal_on_stdin_is_an_error_not_a_hang(capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    code, _, err = run(capsys, "-")
    assert code == 2 and "stdin is a terminal" in err


def test_output_is_an_alias_of_format(capsys):
    outputs = {run(capsys, "examples/premium-compliant.json", *flag, "json")[1] for flag in (["-o"], ["--output"],
                                                                                              ["--format"])}
    assert len(outputs) == 1 and json.loads(outputs.pop())[0]["name"] == "contosoprodacr"


def test_bicep_through_a_real_pipe(tmp_path):
    """`az bicep build --stdout | python -m dlp evaluate -`, with `cat` standing in for the compiler."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(f"cat examples/template-registry.json | {sys.executable} -m dlp evaluate - --fail-on unknown",
                          shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stderr == ""
    assert "contosobuildacr" in done.stdout and "<stdin>" in done.stdout


# --- Terraform through the CLI ----------------------------------------------------------------------

def test_terraform_plan_in_sarif_names_the_address_at_the_plan_file(capsys):
    code, out, err = run(capsys, "examples/terraform/plan-with-module.json", "-o", "sarif")
    assert (code, err) == (1, "")
    results = json.loads(out)["runs"][0]["results"]
    mirror = [r for r in results if "contosomirroracr" in r["message"]["text"]]
    assert mirror and all("at module.acr.module.mirror.azapi_resource.registry" in r["message"]["text"] for r in mirror)
    text = (ROOT / "examples/terraform/plan-with-module.json").read_text(encoding="utf-8").splitlines()
    line = mirror[0]["locations"][0]["physicalLocation"]["region"]["startLine"]
    assert '"address": "module.acr.module.mirror.azapi_resource.registry"' in text[line - 1]
    assert mirror[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "examples/terraform/plan-with-module.json")
    assert mirror[0]["properties"]["registryId"] == "module.acr.module.mirror.azapi_resource.registry"


def test_terraform_plan_with_only_unknowns_left_passes_by_default_and_fails_strict(capsys, tmp_path):
    plan = json.loads((ROOT / "examples/terraform/plan-with-module.json").read_text(encoding="utf-8"))
    plan["resource_changes"] = [c for c in plan["resource_changes"] if c["address"].startswith("module.acr.azurerm")]
    path = write(tmp_path / "plan.json", plan)
    assert run(capsys, str(path))[0] == 0
    plan["resource_changes"][0]["change"]["after_unknown"]["network_rule_bypass_option"] = True
    del plan["resource_changes"][0]["change"]["after"]["network_rule_bypass_option"]
    write(path, plan)
    code, out, _ = run(capsys, str(path), "--fail-on", "unknown")
    assert code == 1 and "unknown  low     DLP.ACR.TrustedServices" in out
    assert run(capsys, str(path))[0] == 0
