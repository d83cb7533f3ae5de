"""The CI entry points at the repository root work as written: action.yml (a composite GitHub Action) and
.pre-commit-hooks.yaml. Their scripts are run here with bash, as the runner would, with the runner's variables
pointed at a temporary folder and the tool run from this checkout (no install, no network)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
HOOKS = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))


def step(step_id_or_name: str) -> dict:
    return next(s for s in ACTION["runs"]["steps"] if step_id_or_name in (s.get("id"), s.get("name")))


def test_the_action_is_composite_installs_pins_and_uploads_sarif():
    assert ACTION["runs"]["using"] == "composite"
    assert set(ACTION["inputs"]) >= {"paths", "fail-on", "rules", "parameters", "sarif-file", "upload-sarif", "category"}
    install = next(s for s in ACTION["runs"]["steps"] if "requirements.txt" in s.get("run", ""))
    assert "-r \"$GITHUB_ACTION_PATH/requirements.txt\"" in install["run"]
    upload = next(s for s in ACTION["runs"]["steps"] if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    assert "always()" in upload["if"] and upload["with"]["sarif_file"] == "${{ inputs.sarif-file }}"


def test_no_input_is_spliced_into_a_script():
    """Inputs reach the scripts as environment variables: a path named `$(curl ...)` stays a path."""
    for item in ACTION["runs"]["steps"]:
        assert "${{" not in item.get("run", ""), item.get("name")


def run_gate(tmp_path: Path, paths: str, fail_on: str = "fail", rules: str = "") -> tuple[int, dict | None, str]:
    venv_bin = tmp_path / "acr-dlp-venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)         # the runner's venv: here, the test's interpreter
    output, sarif = tmp_path / "github_output", tmp_path / "acr-dlp.sarif"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GITHUB_ACTION_PATH": str(ROOT),
           "RUNNER_TEMP": str(tmp_path), "GITHUB_OUTPUT": str(output), "GITHUB_WORKSPACE": str(ROOT),
           "ACR_DLP_PATHS": paths, "ACR_DLP_FAIL_ON": fail_on, "ACR_DLP_RULES": rules, "ACR_DLP_PARAMETERS": "",
           "ACR_DLP_SARIF": str(sarif)}
    done = subprocess.run(["bash", "-e", "-c", step("gate")["run"]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr                 # the step records the code; a later step fails the job
    code = int(re.search(r"^exit-code=(\d+)$", output.read_text(), re.MULTILINE).group(1))
    log = json.loads(sarif.read_text()) if sarif.read_text().strip() else None
    return code, log, done.stdout


def test_the_gate_step_over_the_examples_records_1_and_writes_placeable_sarif(tmp_path):
    code, log, table = run_gate(tmp_path, "examples/")
    assert code == 1 and "16 registries: 2 compliant, 14 not compliant" in table
    uris = {(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["artifactLocation"].get("uriBaseId")) for r in log["runs"][0]["results"]}
    assert all(uri.startswith("examples/") and base == "%SRCROOT%" for uri, base in uris)


@pytest.mark.parametrize(("paths", "rules", "expected"), [
    ("examples/premium-compliant.json", "", 0),
    ("examples/premium-exports-reenabled.json examples/basic-az-acr-show.json", "DLP.ACR.AdminUser", 1),
    ("infra/", "", 2),                                       # no registry found: a broken gate, not a pass
])
def test_the_gate_step_records_the_exit_code(tmp_path, paths, rules, expected):
    assert run_gate(tmp_path, paths, rules=rules)[0] == expected


@pytest.mark.parametrize(("recorded", "expected"), [("0", 0), ("1", 1), ("2", 2), ("", 2)])
def test_the_last_step_fails_the_job_on_the_recorded_code(recorded, expected):
    final = ACTION["runs"]["steps"][-1]
    assert final["if"] == "${{ always() }}"
    done = subprocess.run(["bash", "-c", final["run"]], env={"PATH": os.environ["PATH"], "ACR_DLP_EXIT": recorded},
                          capture_output=True, text=True, check=False)
    assert done.returncode == expected


# --- pre-commit ------------------------------------------------------------------------------------------------------

def test_the_pre_commit_hook_runs_the_installed_command_on_staged_json():
    [hook] = HOOKS
    assert hook["id"] == "acr-dlp" and hook["language"] == "python" and hook["types"] == ["json"]
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    command, *args = hook["entry"].split()
    assert command in scripts and args[:2] == ["evaluate", "--skip-unrelated"]


def hook(tmp_path: Path, *files: str) -> subprocess.CompletedProcess:
    """The hook's entry as pre-commit runs it: the staged files as arguments (acr-dlp = python -m dlp)."""
    _, *args = HOOKS[0]["entry"].split()
    return subprocess.run([sys.executable, "-m", "dlp", *args, *files], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60,
                          check=False)


def test_staged_json_without_registries_passes_quietly(tmp_path):
    (tmp_path / "package.json").write_text('{"name": "app", "version": "1.0.0"}')
    (tmp_path / "tsconfig.json").write_text('{ // comments\n "compilerOptions": {} }')
    done = hook(tmp_path, "package.json", "tsconfig.json")
    assert (done.returncode, done.stderr) == (0, "")


def test_a_staged_registry_template_is_gated(tmp_path):
    (tmp_path / "package.json").write_text('{"name": "app"}')
    good = (ROOT / "examples" / "premium-compliant.json").read_text(encoding="utf-8")
    bad = (ROOT / "examples" / "premium-exports-reenabled.json").read_text(encoding="utf-8")
    (tmp_path / "good.json").write_text(good)
    (tmp_path / "bad.json").write_text(bad)
    assert hook(tmp_path, "package.json", "good.json").returncode == 0
    failing = hook(tmp_path, "package.json", "good.json", "bad.json")
    assert failing.returncode == 1 and "contososhareacr" in failing.stdout


def test_a_broken_registry_template_still_stops_the_commit(tmp_path):
    (tmp_path / "acr.json").write_text('{"type": "Microsoft.ContainerRegistry/registries", "name": ')
    done = hook(tmp_path, "acr.json")
    assert done.returncode == 2 and "acr.json: not JSON" in done.stderr
