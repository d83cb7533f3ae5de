"""Bicep never slips through the gate: compiled with the Bicep CLI on PATH (`bicep`, else `az bicep`), refused
with exit 2 naming every file when there is none, left out only with --skip-bicep. The CLI here is a stub script
the test writes (no Bicep CLI can be installed on these machines): it prints the compiled template a real
`bicep build --stdout` would, for a project with two modules (a registry and its private endpoint)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli_evaluate import EXAMPLES, run, write

MAIN_BICEP = """\
param registryName string = 'prodacr'
param locked bool = true

module acr './modules/acr.bicep' = {
  name: 'acrModule'
  params: {
    name: registryName
    publicNetworkAccess: locked ? 'Disabled' : 'Enabled'
  }
}

module pe './modules/pe.bicep' = {
  name: 'peModule'
  params: {
    registryId: acr.outputs.id
  }
}
"""


def _acr_module() -> dict[str, Any]:
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "languageVersion": "2.0", "contentVersion": "1.0.0.0",
            "parameters": {"name": {"type": "string"}, "publicNetworkAccess": {"type": "string"}},
            "resources": {"registry": {
                "type": "Microsoft.ContainerRegistry/registries", "apiVersion": "2025-11-01",
                "name": "[parameters('name')]", "location": "[resourceGroup().location]", "sku": {"name": "Premium"},
                "properties": {"publicNetworkAccess": "[parameters('publicNetworkAccess')]",
                               "policies": {"exportPolicy": {"status": "disabled"}},
                               "networkRuleBypassOptions": "None", "dataEndpointEnabled": True}}},
            "outputs": {"id": {"type": "string",
                               "value": "[resourceId('Microsoft.ContainerRegistry/registries', parameters('name'))]"}}}


def _pe_module() -> dict[str, Any]:
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "languageVersion": "2.0", "contentVersion": "1.0.0.0", "parameters": {"registryId": {"type": "string"}},
            "resources": {"endpoint": {
                "type": "Microsoft.Network/privateEndpoints", "apiVersion": "2024-05-01", "name": "pe-registry",
                "properties": {"privateLinkServiceConnections": [{"name": "registry", "properties": {
                    "privateLinkServiceId": "[parameters('registryId')]", "groupIds": ["registry"]}}]}}}}


def _deployment(name: str, template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Microsoft.Resources/deployments", "apiVersion": "2025-04-01", "name": name,
            "properties": {"expressionEvaluationOptions": {"scope": "inner"}, "mode": "Incremental",
                           "parameters": parameters, "template": template}}


def compiled_main() -> dict[str, Any]:
    """What `bicep build main.bicep --stdout` prints for MAIN_BICEP (two modules, inner scope, symbolic names)."""
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "languageVersion": "2.0", "contentVersion": "1.0.0.0",
            "parameters": {"registryName": {"type": "string", "defaultValue": "prodacr"},
                           "locked": {"type": "bool", "defaultValue": True}},
            "resources": {
                "acr": _deployment("acrModule", _acr_module(), {
                    "name": {"value": "[parameters('registryName')]"},
                    "publicNetworkAccess": {"value": "[if(parameters('locked'), 'Disabled', 'Enabled')]"}}),
                "pe": {**_deployment("peModule", _pe_module(),
                                     {"registryId": {"value": "[reference('acr').outputs.id.value]"}}),
                       "dependsOn": ["acr"]}}}


def stub(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


# `bicep build FILE --stdout`: prints FILE.out (what the real compiler would), or fails like the compiler does
BICEP = ('if [ "$1" = "build" ] || [ "$1" = "build-params" ]; then\n'
         '  if [ -f "$2.out" ]; then cat "$2.out"; exit 0; fi\n'
         '  echo "$2(3,1) : Error BCP018: Expected the \\"=\\" character at this location." >&2; exit 1\n'
         'fi\nexit 2\n')
# `az bicep build --file FILE --stdout`
AZ = ('if [ "$1" = "bicep" ] && [ "$3" = "--file" ]; then\n'
      '  if [ -f "$4.out" ]; then cat "$4.out"; exit 0; fi\n  echo "ERROR: compilation failed" >&2; exit 1\nfi\nexit 2\n')


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "infra"
    write(root / "main.bicep", MAIN_BICEP)
    write(root / "main.bicep.out", json.dumps(compiled_main(), indent=2))
    write(root / "modules" / "acr.bicep", "param name string\nresource registry 'Microsoft.ContainerRegistry/"
                                          "registries@2025-11-01' = {\n  name: name\n}\n")
    write(root / "modules" / "acr.bicep.out", json.dumps(_acr_module(), indent=2))
    write(root / "modules" / "pe.bicep", "param registryId string\n")
    write(root / "modules" / "pe.bicep.out", json.dumps(_pe_module(), indent=2))
    return root


def on_path(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}/usr/bin{os.pathsep}/bin")


def test_a_bicep_project_with_two_modules_is_compiled_and_evaluated(capsys, monkeypatch, project, tmp_path):
    on_path(monkeypatch, stub(tmp_path / "bin", "bicep", BICEP).parent)
    code, out, err = run(capsys, str(project / "main.bicep"), "-o", "json")
    assert (code, err) == (0, "")
    [registry] = json.loads(out)
    assert (registry["registryId"], registry["name"], registry["source"]) == (
        "acrModule/prodacr", "prodacr", str(project / "main.bicep"))
    statuses = {f["ruleId"].rsplit(".", 1)[-1]: f["status"] for f in registry["findings"]}
    assert statuses["PublicNetworkAccess"] == statuses["ExportPolicy"] == statuses["PrivateEndpoint"] == "pass"


def test_sarif_points_at_the_bicep_file_and_its_module_line(capsys, monkeypatch, project, tmp_path):
    on_path(monkeypatch, stub(tmp_path / "bin", "bicep", BICEP).parent)
    (project / "main.bicep.out").write_text(json.dumps(compiled_main()).replace("defaultValue\": true",
                                                                                "defaultValue\": false"))
    code, out, _ = run(capsys, str(project / "main.bicep"), "-o", "sarif")
    assert code == 1
    results = json.loads(out)["runs"][0]["results"]
    failing = next(r for r in results if r["ruleId"] == "DLP.ACR.PublicNetworkAccess")
    location = failing["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"].endswith("infra/main.bicep")
    assert location["region"]["startLine"] == MAIN_BICEP.splitlines().index("module acr './modules/acr.bicep' = {") + 1


def test_a_folder_walk_compiles_every_bicep_file_with_az_when_only_az_is_there(capsys, monkeypatch, project, tmp_path):
    on_path(monkeypatch, stub(tmp_path / "bin", "az", AZ).parent)
    code, out, err = run(capsys, str(project), "-o", "json")
    assert err == ""
    sources = sorted(Path(item["source"]).name for item in json.loads(out))
    assert sources == ["acr.bicep", "main.bicep"]          # pe.bicep holds no registry: skipped
    alone = next(item for item in json.loads(out) if item["source"].endswith("acr.bicep"))
    # acr.bicep alone: its parameters have no value, so what they decide is unknown, never a guess
    assert {f["ruleId"]: f["status"] for f in alone["findings"]}["DLP.ACR.PublicNetworkAccess"] == "unknown"
    assert code == 0


def test_without_a_bicep_cli_the_run_fails_naming_every_bicep_file(capsys, monkeypatch, project):
    monkeypatch.setenv("PATH", "")
    write(project / "ok.json", json.loads((EXAMPLES / "premium-compliant.json").read_text()))
    code, out, err = run(capsys, str(project), "-o", "json")
    assert code == 2
    assert [item["name"] for item in json.loads(out)] == ["contosoprodacr"]     # the JSON is still evaluated
    [line] = err.splitlines()
    assert line.startswith("python -m dlp evaluate: error: 3 Bicep files cannot be evaluated: no Bicep CLI on PATH")
    for name in ("main.bicep", "acr.bicep", "pe.bicep"):
        assert name in line
    assert "az bicep install" in line and "--skip-bicep" in line


def test_skip_bicep_leaves_them_out_on_purpose_and_verbose_says_so(capsys, monkeypatch, project):
    monkeypatch.setenv("PATH", "")
    write(project / "ok.json", json.loads((EXAMPLES / "premium-compliant.json").read_text()))
    code, _, err = run(capsys, str(project), "--skip-bicep", "-v")
    assert code == 0
    assert f"note: skipped {project / 'main.bicep'}: a Bicep file (--skip-bicep)" in err


def test_a_bicep_file_that_does_not_compile_is_one_line_with_the_compilers_error(capsys, monkeypatch, tmp_path):
    on_path(monkeypatch, stub(tmp_path / "bin", "bicep", BICEP).parent)
    broken = write(tmp_path / "broken.bicep", "resource x 'y' {\n")
    code, _, err = run(capsys, str(broken))
    assert code == 2
    assert err.strip() == (f"python -m dlp evaluate: error: {broken}: Bicep compilation failed: {broken}(3,1) : "
                           "Error BCP018: Expected the \"=\" character at this location.")


def test_a_bicepparam_file_evaluates_its_template_with_its_values(capsys, monkeypatch, project, tmp_path):
    on_path(monkeypatch, stub(tmp_path / "bin", "bicep", BICEP).parent)
    params = write(project / "prod.bicepparam", "using './main.bicep'\nparam locked = false\n")
    values = {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
              "contentVersion": "1.0.0.0", "parameters": {"locked": {"value": False}, "registryName": {"value": "opsacr"}}}
    write(project / "prod.bicepparam.out", json.dumps({"parametersJson": json.dumps(values),
                                                      "templateJson": json.dumps(compiled_main())}))
    code, out, _ = run(capsys, str(params), "-o", "json")
    [registry] = json.loads(out)
    assert (code, registry["registryId"], registry["source"]) == (1, "acrModule/opsacr", str(params))
    statuses = {f["ruleId"].rsplit(".", 1)[-1]: f["status"] for f in registry["findings"]}
    assert statuses["PublicNetworkAccess"] == "fail"
    # an older CLI prints the parameters file alone: the template comes from the file `using` names
    write(project / "prod.bicepparam.out", json.dumps(values))
    code, out, _ = run(capsys, str(params), "-o", "json")
    assert json.loads(out)[0]["registryId"] == "acrModule/opsacr" and code == 1
