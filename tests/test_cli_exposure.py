"""`python -m dlp exposure` as a real process against the ARM + Resource Graph emulator (DefaultAzureCredential
through the emulated managed-identity endpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dlp.emulator import registry_id

SUB = "11111111-2222-3333-4444-555555555555"
OTHER_SUB = "22222222-3333-4444-5555-666666666666"
REPO = Path(__file__).resolve().parents[1]
EXPORT_ON = {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}}
EXPORT_OFF = {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}


@pytest.fixture
def arm(azure_env):
    return azure_env.arm


def exposure(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dlp", "exposure", *args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)


def test_timeline_per_registry_in_a_table_and_as_json(arm):
    reg = registry_id(SUB, "rg-app", "acrtime01")
    arm.create(SUB, "rg-app", "acrtime01", export="disabled", public="Disabled")
    arm.create(OTHER_SUB, "rg-app", "acrelse01", export="disabled", public="Disabled")
    now = datetime.now(timezone.utc)
    arm.write(reg, EXPORT_ON, caller="mallory@contoso.com", at=now - timedelta(hours=2))
    arm.write(reg, EXPORT_OFF, caller="bob@contoso.com", at=now - timedelta(hours=2) + timedelta(seconds=42))
    arm.write(reg, {"properties": {"adminUserEnabled": True}}, caller="eve\u202e@contoso.com",
              at=now - timedelta(minutes=5))
    arm.write(registry_id(OTHER_SUB, "rg-app", "acrelse01"), EXPORT_ON, caller="x@y")
    done = exposure("--scope", f"/subscriptions/{SUB}", "--since", "1d")
    assert done.returncode == 1, done.stderr
    assert "acrtime01  (2 windows, 1 still open)" in done.stdout
    assert "acrelse01" not in done.stdout                       # outside the scope
    line = next(x for x in done.stdout.splitlines() if "exportPolicy" in x)
    assert "42" in line and "mallory@contoso.com" in line and "bob@contoso.com" in line
    assert "\u202e" not in done.stdout and "eve@contoso.com" in done.stdout
    assert arm.log.count(service="graph-changes") == 1

    as_json = exposure("--scope", reg, "--since", "3h", "--format", "json")
    [registry] = json.loads(as_json.stdout)
    assert [w["property"] for w in registry["windows"]] == ["policies.exportPolicy.status", "adminUserEnabled"]
    assert registry["windows"][0]["seconds"] == 42 and registry["windows"][1]["closer"] == "open"

    recent = exposure("--scope", reg, "--since", "1h", "--format", "json")    # the closed window is older
    assert [w["property"] for w in json.loads(recent.stdout)[0]["windows"]] == ["adminUserEnabled"]


def test_no_window_exit_0_and_bad_arguments_exit_2(arm):
    arm.create(SUB, "rg-app", "acrquiet01", export="disabled", public="Disabled")
    done = exposure("--scope", f"/subscriptions/{SUB}/resourceGroups/rg-app")
    assert done.returncode == 0, done.stderr
    assert "No exposure window" in done.stdout
    for bad in (["--scope", "/subscriptions/nope"], ["--scope", f"/subscriptions/{SUB}", "--since", "30d"],
                ["--scope", f"/subscriptions/{SUB}", "--since", "soon"]):
        failed = exposure(*bad)
        assert failed.returncode == 2 and "error:" in failed.stderr and "Traceback" not in failed.stderr


def test_pulls_per_window_from_the_registry_logs_workspace(azure_env, monkeypatch):
    arm = azure_env.arm
    reg = registry_id(SUB, "rg-app", "acrpulls01")
    arm.create(SUB, "rg-app", "acrpulls01", export="disabled", public="Disabled")
    opened = datetime.now(timezone.utc) - timedelta(hours=1)
    arm.write(reg, EXPORT_ON, caller="mallory@contoso.com", at=opened)
    arm.write(reg, EXPORT_OFF, caller="mallory@contoso.com", at=opened + timedelta(seconds=90))
    for seconds, tag in ((10, "1.4"), (20, "1.5")):
        azure_env.logs_query.add_pull(reg, opened + timedelta(seconds=seconds), "payments/api", tag,
                                      identity="mallory@contoso.com", caller_ip="198.51.100.7:4242")
    azure_env.logs_query.add_pull(reg, opened + timedelta(minutes=10), "payments/outside", "1")
    for name, value in azure_env.registry_logs_env().items():
        monkeypatch.setenv(name, value)
    done = exposure("--scope", reg, "--since", "2h")
    assert done.returncode == 1, done.stderr
    assert "pulls: 2 pulls from 198.51.100.7 (mallory@contoso.com): payments/api:1.4, payments/api:1.5" in done.stdout
    assert "outside" not in done.stdout
    [registry] = json.loads(exposure("--scope", reg, "--since", "2h", "--format", "json").stdout)
    (window,) = registry["windows"]
    assert window["pulls"]["count"] == 2 and window["pulls"]["status"] == "counted"
    assert [d["reference"] for d in window["pulls"]["details"]] == [":1.4", ":1.5"]
    azure_env.logs_query.forbidden = True
    refused = exposure("--scope", reg, "--since", "2h", "--workspace", azure_env.workspace_id)
    assert "pulls: pulls unknown: HTTP 403 InsufficientAccessError" in refused.stdout
    none = exposure("--scope", reg, "--since", "2h", "--workspace", "")
    assert "pulls:" not in none.stdout
    assert len(azure_env.logs_query.queries) == 2          # one per run that read them (the 403 was refused first)
