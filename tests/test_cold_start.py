"""Cold start: importing function_app costs azure.functions and nothing more, and each trigger imports only
the Azure SDK clients it needs, on first use.

Every check runs in a fresh interpreter (a subprocess), because this process has long since imported
everything. The emulators and Azurite run here, in the parent; the child gets their settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-cold"

# Azure SDK client packages: none may be imported by `import function_app`.
SDK_CLIENTS = ("azure.mgmt", "azure.identity", "azure.monitor", "azure.communication", "azure.data.tables",
               "azure.storage", "azure.core", "msal", "requests")


def run_child(code: str, env: dict[str, str] | None = None) -> list[str]:
    """Run `code` in a fresh interpreter from the repository root; it prints one JSON line last."""
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env or dict(os.environ),
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def modules_after(statement: str, env: dict[str, str] | None = None) -> list[str]:
    return run_child(f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))", env)


def loaded(modules: list[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_importing_function_app_adds_nothing_azure_beyond_azure_functions():
    baseline = modules_after("import azure.functions")
    app = modules_after("import function_app")
    azure_baseline = {m for m in baseline if m.startswith("azure")}
    azure_app = {m for m in app if m.startswith("azure")}
    assert azure_app == azure_baseline, sorted(azure_app ^ azure_baseline)
    assert [p for p in SDK_CLIENTS if loaded(app, p)] == []
    # the package itself is imported by the first invocation, not at indexing time
    assert [m for m in app if m == "dlp" or m.startswith("dlp.")] == []


def test_every_trigger_is_declared_without_importing_the_package():
    code = ("import function_app, json, sys\n"
            "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
            "print(json.dumps([names, sorted(m for m in sys.modules if m.startswith(('dlp', 'azure.mgmt')))]))")
    names, imported = run_child(code)
    assert {"on_registry_event", "retry_worker", "outbox_drain"} <= set(names)
    assert imported == []


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLP_", "AzureWebJobsStorage"))}
    env.update(extra)
    return env


def _event_code(subject: str, operation: str) -> str:
    return f"""
import datetime as dt
import azure.functions as func
import function_app
handler = function_app.on_registry_event.build().get_user_function()
data = {{"claims": {{"name": "cold"}}, "operationName": {operation!r}, "resourceUri": {subject!r}, "status": "Succeeded"}}
handler(func.EventGridEvent(id="cold-1", data=data, topic="/subscriptions/{SUB}", subject={subject!r},
                            event_type="Microsoft.Resources.ResourceWriteSuccess",
                            event_time=dt.datetime.now(dt.timezone.utc), data_version="2"))
"""


def test_an_irrelevant_event_imports_no_azure_sdk_client(azure_env):
    subject = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/st01"
    modules = modules_after(_event_code(subject, "Microsoft.Storage/storageAccounts/write"), _child_env(azure_env.env()))
    assert [p for p in SDK_CLIENTS if p != "azure.core" and loaded(modules, p)] == []
    assert azure_env.arm.log.filter() == []


@pytest.mark.parametrize("outputs", ["all outputs on", "ARM only"])
def test_a_registry_event_imports_what_it_uses_and_not_resource_graph_or_email(azure_env, azurite, outputs):
    """A compliant registry: ARM read, state and record; no alert is due, so the email SDK stays unloaded,
    and the Event Grid trigger never needs Resource Graph."""
    registry = azure_env.arm.create(SUB, RG, "acrcold01", export="disabled", public="Disabled")["id"]
    env = dict(azure_env.env())
    if outputs == "all outputs on":
        env.update({"AzureWebJobsStorage": azurite, "DLP_MODE": "enforce"})
    else:
        for name in ("DLP_LOGS_ENDPOINT", "DLP_LOGS_RULE_ID", "DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT",
                     "DLP_EMAIL_SENDER", "DLP_EMAIL_TO"):
            env.pop(name)
    modules = modules_after(_event_code(registry, "Microsoft.ContainerRegistry/registries/write"), _child_env(env))
    assert [r.method for r in azure_env.arm.log.filter(service="arm")] == ["GET"]     # it did run
    assert loaded(modules, "azure.mgmt.containerregistry") and loaded(modules, "azure.identity")
    assert not loaded(modules, "azure.mgmt.resourcegraph")
    assert not loaded(modules, "azure.communication")
    assert loaded(modules, "azure.monitor.ingestion") == (outputs == "all outputs on")
    assert loaded(modules, "azure.data.tables") == (outputs == "all outputs on")
    if outputs == "all outputs on":
        assert len(azure_env.logs.rows()) > 0
