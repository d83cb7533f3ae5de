"""The commands that talk to Azure (`scan`, `exposure`, `replay`) fail the same way and take the same flags:
a missing sign-in is one error line naming the fix and exit code 2 (the chain's account only with --verbose),
any Azure failure is exit 2, and `-o`, `-s`, `-g`, `--scope`, `-v` mean the same thing on each.

The sign-in cases run the CLI as a user would, in its own process, with no credential anywhere: no `az` on PATH
(or a stand-in `az` that answers as the real one does when nobody is signed in), no AZURE_* variables, and the
managed-identity probe pointed at a closed port on loopback (AZURE_POD_IDENTITY_AUTHORITY_HOST), so nothing
leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlp.cli import build_parser
from dlp.cli.where import Where, where_of
from dlp.emulator import registry_id

REPO = Path(__file__).resolve().parents[1]
SUB = "11111111-2222-3333-4444-555555555555"
OTHER = "22222222-3333-4444-5555-666666666666"
AZURE_COMMANDS = ("scan", "exposure", "replay")
CLOSED_PORT = "http://127.0.0.1:9"


def event_file(tmp_path: Path) -> str:
    reg = registry_id(SUB, "rg-app", "acrsignin01")
    path = tmp_path / "event.json"
    path.write_text(json.dumps({
        "id": "e1", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": reg,
        "topic": f"/subscriptions/{SUB}", "eventTime": "2026-01-01T00:00:00Z", "dataVersion": "2",
        "metadataVersion": "1", "data": {"operationName": "Microsoft.ContainerRegistry/registries/write",
                                          "resourceUri": reg, "status": "Succeeded"}}), encoding="utf-8")
    return str(path)


def run_without_credentials(tmp_path: Path, command: str, *args: str, extra_env: dict | None = None,
                            path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    argv = [command, *args]
    if command == "replay":
        argv.append(event_file(tmp_path))
    env = {"PATH": path, "HOME": str(tmp_path), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8",
           "AZURE_POD_IDENTITY_AUTHORITY_HOST": CLOSED_PORT, **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "dlp", *argv], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", AZURE_COMMANDS)
def test_nobody_signed_in_is_one_line_naming_the_fix_and_exit_2(tmp_path, command):
    done = run_without_credentials(tmp_path, command)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr                          # not azure-identity's 13-line chain report
    assert lines[0].startswith(f"python -m dlp {command}: error: not signed in to Azure")
    assert "az login" in lines[0] and "AZURE_CLIENT_ID" in lines[0] and "--verbose" in lines[0]
    assert done.stdout == ""                                    # no report whose every row says "error"


@pytest.mark.parametrize("command", AZURE_COMMANDS)
def test_verbose_adds_the_chains_account_as_notes(tmp_path, command):
    done = run_without_credentials(tmp_path, command, "--verbose")
    assert done.returncode == 2
    first, *rest = done.stderr.splitlines()
    assert "error: not signed in to Azure" in first and "--verbose shows" not in first
    assert rest and all(line.startswith(f"python -m dlp {command}: note: ") for line in rest), done.stderr
    assert any("AzureCliCredential" in line for line in rest)


def test_an_installed_az_with_nobody_signed_in_says_run_az_login(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"                  # answers as the Azure CLI does before `az login`
    az.write_text("#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n", encoding="utf-8")
    az.chmod(0o755)
    done = run_without_credentials(tmp_path, "scan", path=f"{bin_dir}:/usr/bin:/bin")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "not signed in to Azure: run az login" in line and "install the Azure CLI" not in line


def test_half_set_service_principal_variables_are_named_never_their_values(tmp_path):
    done = run_without_credentials(tmp_path, "exposure", extra_env={"AZURE_CLIENT_ID": "app-1234",
                                                                    "AZURE_CLIENT_SECRET": "s3cr3t-value"})
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "AZURE_CLIENT_ID, AZURE_CLIENT_SECRET are set but AZURE_TENANT_ID is not" in line
    assert "s3cr3t-value" not in done.stderr and "app-1234" not in done.stderr


def test_a_managed_identity_that_gives_no_token_is_named(tmp_path):
    done = run_without_credentials(tmp_path, "scan", extra_env={"IDENTITY_ENDPOINT": f"{CLOSED_PORT}/msi/token",
                                                                "IDENTITY_HEADER": "x"})
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "the managed identity got no token" in line


# --- Azure failures after signing in: exit 2 -------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dlp", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)


def test_exposure_refused_by_resource_graph_is_exit_2_in_one_line(azure_env):
    azure_env.arm.faults.add(method="POST", path="resourcegraph", status=403, service="graph-changes",
                             body={"error": {"code": "AuthorizationFailed", "message": "no Reader role"}})
    done = cli("exposure", "-s", SUB)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "Resource Graph could not read the change history: HTTP 403 AuthorizationFailed: no Reader role" in line
    assert line.count("AuthorizationFailed") == 1


def test_replay_with_arm_unreachable_is_exit_2(azure_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DLP_ARM_ENDPOINT", "https://127.0.0.1:9")
    done = cli("replay", event_file(tmp_path), "-o", "json")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr


# --- one set of flags --------------------------------------------------------------------------------------------

def options_of(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {option for action in sub._actions for option in action.option_strings}


@pytest.mark.parametrize("command", AZURE_COMMANDS)
def test_every_command_that_reads_azure_takes_the_same_flags(command):
    assert {"-o", "--output", "--scope", "-s", "--subscription", "-g", "--resource-group", "-v", "--verbose"} <= \
        options_of(command)


@pytest.mark.parametrize("command", ("scan", "replay"))
def test_remediate_has_the_same_companion_everywhere(command):
    assert {"--remediate", "--yes", "-y"} <= options_of(command)


@pytest.mark.parametrize("command", ("evaluate", "scan", "exposure", "replay", "rules"))
def test_every_command_that_prints_results_takes_dash_o(command):
    assert {"-o", "--output", "--format"} <= options_of(command)


def test_exposure_takes_dash_o_and_az_style_scopes(azure_env):
    azure_env.arm.create(SUB, "rg-app", "acrquiet02", export="disabled", public="Disabled")
    for args in (["-s", SUB], ["-s", SUB, "-g", "rg-app"], ["-g", "rg-app"], ["--scope", f"/subscriptions/{SUB}"], []):
        done = cli("exposure", *args, "-o", "json")
        assert done.returncode == 0, (args, done.stderr)
        assert json.loads(done.stdout) == []


def test_scan_takes_scope_and_dash_g(azure_env):
    azure_env.arm.create(SUB, "rg-app", "acrscope01", export="disabled", public="Disabled")
    azure_env.arm.create(SUB, "rg-other", "acrscope02", export="disabled", public="Disabled")
    azure_env.arm.create(OTHER, "rg-app", "acrscope03", export="disabled", public="Disabled")
    by_scope = cli("scan", "--scope", registry_id(SUB, "rg-app", "acrscope01"), "-o", "json")
    assert [e["name"] for e in json.loads(by_scope.stdout)] == ["acrscope01"], by_scope.stderr
    by_group = cli("scan", "-g", "rg-app", "-o", "json")
    assert sorted(e["name"] for e in json.loads(by_group.stdout)) == ["acrscope01", "acrscope03"]
    both = cli("scan", "-s", SUB, "-g", "rg-other", "-o", "json")
    assert [e["name"] for e in json.loads(both.stdout)] == ["acrscope02"]


def where(*argv: str) -> Where:
    parser = argparse.ArgumentParser()
    from dlp.cli.where import add_arguments

    add_arguments(parser)
    return where_of(parser.parse_args(list(argv)))


def test_where_adds_up_the_flags_as_az_would():
    assert where().everything
    assert where("-s", SUB).scopes == (f"/subscriptions/{SUB}",)
    assert where("-s", f"{SUB},{OTHER}", "-g", "rg").scopes == (f"/subscriptions/{SUB}/resourceGroups/rg",
                                                                 f"/subscriptions/{OTHER}/resourceGroups/rg")
    assert where("-g", "rg") == Where(group="rg")
    assert where("-g", "RG").contains(registry_id(OTHER, "rg", "acr12345"))
    assert not where("-g", "rg").contains(registry_id(OTHER, "rg2", "acr12345"))
    for bad, words in ((["-s", "nope"], "not a subscription ID"), (["-g", "a/b"], "not a resource-group name"),
                       (["--scope", "/subscriptions/x"], "not a subscription, resource-group or registry ID"),
                       (["-g", "rg", "--scope", f"/subscriptions/{SUB}"], "cannot be combined with --scope")):
        with pytest.raises(ValueError, match=words):
            where(*bad)


def test_narrowing_dlp_scopes_keeps_only_what_both_cover():
    sub, group = f"/subscriptions/{SUB}", f"/subscriptions/{SUB}/resourceGroups/rg"
    assert Where((group,)).narrow((sub,)) == (group.lower(),)
    assert Where((sub,)).narrow((group.lower(),)) == (group.lower(),)
    assert Where((f"/subscriptions/{OTHER}",)).narrow((sub,)) == ()
    assert Where().narrow((sub,)) == (sub,)


def test_docs_cli_md_names_every_option_of_every_command_but_the_demos():
    """docs/cli.md is where flags are documented (the demo documents itself with --help)."""
    doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [(name, option) for name, sub in commands.items() if name != "demo" for action in sub._actions
               for option in action.option_strings if option.startswith("--") and option != "--help"
               and f"`{option}" not in doc and f"|{option}" not in doc and f" {option}" not in doc]
    assert missing == []
