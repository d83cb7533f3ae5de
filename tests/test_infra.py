"""infra/ agrees with the code.

The Bicep compiler cannot run on these machines, so these tests read the files: the app settings infra sets
against dlp.settings.SETTINGS, the findings table and DCR stream against dlp.findings.COLUMNS, the responder's
custom role against the exact list of actions it may have, and the Event Grid filter against dlp.events.
A small reader below understands just enough Bicep for that: comments, strings (with ${} interpolation and
'''multi-line''' strings) and bracket nesting.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dlp import events, findings, settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
MAIN = INFRA / "main.bicep"
APP = INFRA / "app"


# ---------------------------------------------------------------------------------------------------------------
# A minimal Bicep reader
# ---------------------------------------------------------------------------------------------------------------
def _string_end(text: str, i: int) -> int:
    """Index just past the single-quoted string starting at text[i]; ${...} may hold nested strings."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == "'":
            return j + 1
        elif text.startswith("${", j):
            j = _interpolation_end(text, j + 2)
        else:
            j += 1
    raise ValueError(f"unterminated string at offset {i}")


def _interpolation_end(text: str, j: int) -> int:
    depth = 0
    while j < len(text):
        c = text[j]
        if c == "'":
            j = _string_end(text, j)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return j + 1
            depth -= 1
        j += 1
    raise ValueError("unterminated ${...}")


def mask(text: str, strings: bool = True) -> str:
    """Same text with comments (and, if `strings`, the inside of string literals) blanked; newlines kept."""
    out = list(text)

    def blank(a: int, b: int) -> None:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    i = 0
    while i < len(text):
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            blank(i, end)
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment")
            end += 2
            blank(i, end)
        elif text.startswith("'''", i):
            end = text.find("'''", i + 3)
            if end < 0:
                raise ValueError("unterminated ''' string")
            end += 3
            if strings:
                blank(i + 3, end - 3)
        elif text[i] == "'":
            end = _string_end(text, i)
            if strings:
                blank(i + 1, end - 1)
        else:
            end = i + 1
        i = end
    return "".join(out)


PAIRS = {"{": "}", "[": "]", "(": ")"}


def block(text: str, anchor: str) -> str:
    """The bracketed block ({...} or [...]) that follows the first match of regex `anchor` outside comments."""
    masked = mask(text)
    match = re.search(anchor, mask(text, strings=False), re.MULTILINE)
    assert match, f"{anchor!r} not found"
    start = next(i for i in range(match.end(), len(text)) if masked[i] in "{[")
    depth = 0
    for i in range(start, len(text)):
        if masked[i] in PAIRS:
            depth += 1
        elif masked[i] in PAIRS.values():
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    raise AssertionError(f"block after {anchor!r} is not closed")


def top_level_entries(obj: str) -> dict[str, str]:
    """Keys of an object block at its first level -> the text of their (single-line) values."""
    masked = mask(obj)
    entries: dict[str, str] = {}
    depth = 0
    code = mask(obj, strings=False)
    for line, masked_line in zip(code.splitlines(), masked.splitlines(), strict=True):
        if depth == 1:
            match = re.match(r"\s*'?([A-Za-z_$][\w.$-]*)'?\s*:\s*(.*)$", line)
            if match:
                entries[match.group(1)] = match.group(2).strip()
        depth += sum(masked_line.count(o) for o in PAIRS) - sum(masked_line.count(c) for c in PAIRS.values())
    return entries


def strings_in(text: str) -> list[str]:
    """The plain (non-interpolated) string literals in `text`."""
    return [s for s in re.findall(r"'((?:[^'\\\n]|\\.)*)'", text) if "${" not in s]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def bicep_var(text: str, name: str) -> str:
    match = re.search(rf"^var {name} = '([^']*)'$", text, re.MULTILINE)
    assert match, f"var {name} = '...' not found"
    return match.group(1)


# ---------------------------------------------------------------------------------------------------------------
# Every Bicep file: plausible syntax, no unused parameters, no dangling references
# ---------------------------------------------------------------------------------------------------------------
def test_infra_has_the_azd_layout():
    for path in ("azure.yaml", "infra/main.bicep", "infra/main.parameters.json", "infra/abbreviations.json",
                 "infra/eventgrid.bicep", "infra/hooks/postdeploy.sh", "infra/hooks/postdeploy.ps1"):
        assert (ROOT / path).is_file(), path
    assert re.search(r"^targetScope = 'subscription'$", read(MAIN), re.MULTILINE)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_brackets_are_balanced_outside_strings_and_comments(path):
    masked = mask(read(path))
    stack: list[tuple[str, int]] = []
    for number, line in enumerate(masked.splitlines(), 1):
        for char in line:
            if char in PAIRS:
                stack.append((char, number))
            elif char in PAIRS.values():
                assert stack, f"{path.name}:{number}: unexpected {char!r}"
                opener, opened = stack.pop()
                assert PAIRS[opener] == char, f"{path.name}:{number}: {char!r} closes {opener!r} of line {opened}"
    assert not stack, f"{path.name}: unclosed {stack[-1][0]!r} of line {stack[-1][1]}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_param_is_used(path):
    text = mask(read(path), strings=False)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("@"))
    for name in re.findall(r"^param (\w+)", code, re.MULTILINE):
        uses = len(re.findall(rf"(?<![\w.]){name}\b", code)) - 1
        assert uses > 0, f"{path.name}: param {name} is declared but never used"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_referenced_module_and_file_exists(path):
    text = mask(read(path), strings=False)
    references = re.findall(r"^module \w+ '([^']+)'", text, re.MULTILINE)
    references += re.findall(r"load(?:Text|Json)Content\('([^']+)'\)", text)
    for reference in references:
        if reference.startswith(("br/", "br:", "ts/", "ts:")):
            continue  # registry modules (none today)
        assert (path.parent / reference).is_file(), f"{path.name}: {reference} does not exist"


def test_every_abbreviation_used_is_defined():
    abbreviations = json.loads(read(INFRA / "abbreviations.json"))
    used = set(re.findall(r"\babbrs\.(\w+)", read(MAIN)))
    assert used <= abbreviations.keys(), sorted(used - abbreviations.keys())


def test_secrets_are_secure_params():
    for path in BICEP_FILES:
        text = read(path)
        for match in re.finditer(r"^param (\w*(?:[Ww]ebhook|[Ss]ecret|[Pp]assword|[Kk]ey)\w*) string", text, re.MULTILINE):
            before = text[:match.start()].rstrip().splitlines()
            decorators = [line for line in reversed(before) if line.startswith("@")][:3]
            assert any(d.startswith("@secure()") for d in decorators), f"{path.name}: {match.group(1)} must be @secure()"


# ---------------------------------------------------------------------------------------------------------------
# App settings: one list in code (dlp.settings.SETTINGS), set by infra both ways
# ---------------------------------------------------------------------------------------------------------------
def app_settings() -> dict[str, str]:
    return top_level_entries(block(read(MAIN), r"^var appSettings = "))


def test_function_app_gets_exactly_the_app_settings_of_main_bicep():
    api = read(APP / "api.bicep")
    config = block(api, r"'Microsoft\.Web/sites/config@[\w-]+' = ")
    assert "name: 'appsettings'" in config
    assert re.search(r"^\s*properties: appSettings$", config, re.MULTILINE), "api.bicep must set appSettings unchanged"
    assert re.search(r"^\s*appSettings: appSettings$", block(read(MAIN), r"^module api "), re.MULTILINE)


def test_infra_sets_every_setting_the_code_reads():
    deployed = app_settings()
    expected = {s.name for s in settings.SETTINGS if s.kind in ("app", "secret", "platform")}
    missing = expected - deployed.keys()
    assert not missing, f"settings the code reads that infra/main.bicep does not set: {sorted(missing)}"


def test_infra_sets_no_setting_the_code_does_not_know():
    deployed = app_settings()
    ours = {k for k in deployed if k.startswith(("DLP_", "AzureWebJobsStorage"))}
    unknown = {k for k in ours if k not in settings.BY_NAME or settings.BY_NAME[k].kind == "local"}
    assert not unknown, f"app settings infra sets that dlp.settings.SETTINGS lacks (or marks local): {sorted(unknown)}"


def test_secret_settings_are_key_vault_references():
    deployed = app_settings()
    for setting in settings.SETTINGS:
        if setting.kind == "secret":
            value = deployed[setting.name]
            literals = [s for s in re.findall(r"'([^']*)'", value) if s]
            assert "@Microsoft.KeyVault(SecretUri=${" in value, f"{setting.name} must be a Key Vault reference"
            assert all(s.startswith("@Microsoft.KeyVault(") for s in literals), f"{setting.name}: {value}"


def test_flex_consumption_settings_and_identity_based_storage():
    everything = "\n".join(mask(read(p), strings=False) for p in BICEP_FILES)
    for retired in ("FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE", "FUNCTIONS_EXTENSION_VERSION",
                    "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"):
        assert retired not in everything, f"{retired} must not be set on Flex Consumption"
    for secret_maker in ("listKeys(", "listCredentials(", "AccountKey=", "listSecrets("):
        assert secret_maker not in everything
    deployed = app_settings()
    assert deployed["AzureWebJobsStorage__credential"] == "'managedidentity'"
    assert "AzureWebJobsStorage" not in deployed  # a connection string: local only
    assert deployed["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].endswith(";Authorization=AAD'")
    storage = read(APP / "storage.bicep")
    assert "allowSharedKeyAccess: false" in storage
    assert "DisableLocalAuth: true" in read(APP / "monitoring.bicep")
    api = read(APP / "api.bicep")
    assert "tier: 'FlexConsumption'" in api and "name: 'FC1'" in api
    assert re.search(r"runtime: \{\s*name: 'python'\s*version: '3\.\d+'", api)
    assert "type: 'UserAssignedIdentity'" in block(api, r"functionAppConfig: ")


def test_storage_names_are_the_codes():
    main = read(MAIN)
    assert bicep_var(main, "retryQueueName") == settings.RETRY_QUEUE
    assert bicep_var(main, "stateTableName") == settings.STATE_TABLE
    assert bicep_var(main, "outboxTableName") == settings.OUTBOX_TABLE


def test_local_settings_sample_has_the_same_settings():
    sample = json.loads(read(ROOT / "local.settings.sample.json"))["Values"]
    missing = {s.name for s in settings.SETTINGS} - sample.keys()
    assert not missing, f"local.settings.sample.json lacks {sorted(missing)}"
    unknown = {k for k in sample if k.startswith(("DLP_", "AzureWebJobsStorage")) and k not in settings.BY_NAME}
    assert not unknown, f"local.settings.sample.json has settings dlp.settings lacks: {sorted(unknown)}"


def test_parameters_file_covers_every_main_param():
    declared = set(re.findall(r"^param (\w+)", read(MAIN), re.MULTILINE))
    parameters_file = read(INFRA / "main.parameters.json")
    given = set(json.loads(parameters_file)["parameters"])
    assert declared == given, f"main.bicep vs main.parameters.json: {sorted(declared ^ given)}"
    # azd environment variables named like app settings must be app settings
    for name in re.findall(r"\$\{(DLP_\w+?)(?:=[^}]*)?\}", parameters_file):
        assert name in settings.BY_NAME, f"main.parameters.json reads {name}, which is not in dlp.settings.SETTINGS"


# ---------------------------------------------------------------------------------------------------------------
# Findings: table and DCR stream columns are dlp.findings.COLUMNS
# ---------------------------------------------------------------------------------------------------------------
DCR_TYPES = {"string", "int", "long", "real", "boolean", "dynamic", "datetime"}
TABLE_TYPES = {"string", "int", "long", "real", "boolean", "dynamic", "dateTime", "guid"}


def test_findings_columns_file_is_the_codes():
    columns = json.loads(read(APP / "findings-columns.json"))
    expected = [{"name": c.name, "type": c.type} for c in findings.COLUMNS]
    assert columns == expected, (
        "infra/app/findings-columns.json differs from dlp.findings.COLUMNS; regenerate it with: python -c "
        "\"import json; from dlp.findings import COLUMNS; print(json.dumps([dict(name=c.name, type=c.type) "
        "for c in COLUMNS], indent=2))\" > infra/app/findings-columns.json"
    )


def test_table_and_dcr_stream_are_built_from_the_findings_columns():
    text = read(APP / "monitoring.bicep")
    assert "var findingsColumns = loadJsonContent('findings-columns.json')" in text
    assert bicep_var(text, "findingsTableName") == findings.TABLE
    assert bicep_var(text, "findingsStream") == findings.STREAM
    assert findings.STREAM == settings.BY_NAME["DLP_LOGS_STREAM"].default

    # what the two column variables evaluate to, given how they map each column
    stream_var = block(text, r"^var streamColumns = ")
    table_var = block(text, r"^var tableColumns = ")
    assert re.search(r"for column in findingsColumns:.*name: column\.name\s+type: column\.type\s*\}", stream_var, re.S)
    assert "type: column.type == 'datetime' ? 'dateTime' : column.type" in table_var
    stream = [(c.name, c.type) for c in findings.COLUMNS]
    table = [(c.name, "dateTime" if c.type == "datetime" else c.type) for c in findings.COLUMNS]
    assert {t for _, t in stream} <= DCR_TYPES and {t for _, t in table} <= TABLE_TYPES
    assert [(n, t.lower()) for n, t in table] == [(n, t.lower()) for n, t in stream]
    assert ("TimeGenerated", "datetime") in stream

    table_resource = block(text, r"^resource findingsTable ")
    assert re.search(r"^\s*columns: tableColumns$", table_resource, re.MULTILINE)
    dcr = block(text, r"^resource dcr ")
    assert "kind: 'Direct'" in dcr
    declarations = block(dcr, r"streamDeclarations: ")
    assert "'${findingsStream}'" in declarations and re.search(r"columns: streamColumns", declarations)
    flows = block(dcr, r"dataFlows: ")
    assert "transformKql: 'source'" in flows and "outputStream: 'Custom-${findingsTableName}'" in flows


def test_logs_settings_come_from_the_dcr():
    deployed = app_settings()
    monitoring = read(APP / "monitoring.bicep")
    assert deployed["DLP_LOGS_ENDPOINT"] == "monitoring.outputs.logsIngestionEndpoint"
    assert deployed["DLP_LOGS_RULE_ID"] == "monitoring.outputs.dcrImmutableId"
    assert deployed["DLP_LOGS_STREAM"] == "monitoring.outputs.logsStream"
    assert "output logsIngestionEndpoint string = dcr.properties.endpoints.logsIngestion" in monitoring
    assert "output dcrImmutableId string = dcr.properties.immutableId" in monitoring
    rbac = read(APP / "rbac.bicep")
    assert "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'" in rbac
    assert "scope: dcr" in block(rbac, r"^resource findingsIngestionAccess ")


def test_every_saved_query_is_deployed():
    text = mask(read(APP / "queries.bicep"), strings=False)
    loaded = {Path(p).name for p in re.findall(r"loadTextContent\('\.\./queries/([^']+)'\)", text)}
    on_disk = {p.name for p in (INFRA / "queries").glob("*.kql")}
    assert loaded == on_disk, f"infra/queries/*.kql vs queries.bicep: {sorted(loaded ^ on_disk)}"


# ---------------------------------------------------------------------------------------------------------------
# The responder's custom role: exactly what it needs
# ---------------------------------------------------------------------------------------------------------------
RESPONDER_ACTIONS = {
    "Microsoft.ContainerRegistry/registries/read",
    "Microsoft.ContainerRegistry/registries/write",
    "Microsoft.ContainerRegistry/registries/exportPipelines/read",
    "Microsoft.ContainerRegistry/registries/privateEndpointConnections/read",
    "Microsoft.ContainerRegistry/registries/operationStatuses/read",
    "Microsoft.ResourceGraph/resources/read",
}


def test_custom_role_has_exactly_the_responder_actions():
    main = read(MAIN)
    actions = strings_in(block(main, r"^var responderActions = "))
    assert len(actions) == len(set(actions))
    assert set(actions) == RESPONDER_ACTIONS
    role = block(main, r"^resource responderRole 'Microsoft\.Authorization/roleDefinitions@")
    permissions = block(role, r"permissions: ")
    assert re.search(r"^\s*actions: responderActions$", permissions, re.MULTILINE)
    for empty in ("notActions", "dataActions", "notDataActions"):
        assert re.search(rf"^\s*{empty}: \[\]$", permissions, re.MULTILINE), f"{empty} must be empty"


def test_no_role_in_infra_grants_credentials_delete_or_wildcards():
    for path in BICEP_FILES:
        text = read(path)
        for match in re.finditer(r"'Microsoft\.Authorization/roleDefinitions@[\w-]+' = ", text):
            permissions = block(text[match.start():], r"permissions: ")
            actions = strings_in(permissions)
            for variable in re.findall(r"^\s*actions: (\w+)$", permissions, re.MULTILINE):
                actions += strings_in(block(text, rf"^var {variable} = "))
            assert actions, f"{path.name}: a role without actions?"
            for action in actions:
                lowered = action.lower()
                assert "*" not in action, f"{path.name}: wildcard {action}"
                assert "listcredentials" not in lowered and "listkeys" not in lowered, f"{path.name}: {action}"
                assert not lowered.endswith("/delete"), f"{path.name}: {action}"


def test_role_is_assigned_on_every_monitored_subscription():
    main = read(MAIN)
    access = block(main, r"^module subscriptionAccess ")
    assert "for (s, i) in monitoredSubscriptions:" in access and "scope: subscription(s)" in access
    assert "responderRoleGuid: responderRole.name" in access
    assignment = block(read(APP / "subscription-access.bicep"), r"^resource responderAccess ")
    assert "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', responderRoleGuid)" in assignment


# ---------------------------------------------------------------------------------------------------------------
# Event Grid: the subscription delivers everything the intake treats as relevant, and nothing else
# ---------------------------------------------------------------------------------------------------------------
def test_event_filter_covers_what_the_intake_treats_as_relevant():
    text = read(APP / "event-subscription.bicep")
    included = {t.lower() for t in strings_in(block(text, r"includedEventTypes: "))}
    assert included == set(events.RELEVANT_TYPES)

    advanced = block(text, r"advancedFilters: ")
    assert "operatorType: 'StringBeginsWith'" in advanced and "key: 'data.operationName'" in advanced
    prefixes = strings_in(block(advanced, r"values: "))
    # Event Grid compares case-insensitively; every operation starting with OPERATION_PREFIX must pass.
    assert any(events.OPERATION_PREFIX.lower().startswith(p.lower()) for p in prefixes), prefixes
    assert all(events.OPERATION_PREFIX.lower().startswith(p.lower()) for p in prefixes), prefixes


def test_event_subscription_targets_the_event_grid_function_with_retries_and_dead_letters():
    import function_app

    text = read(APP / "event-subscription.bicep")
    subscription = block(text, r"^resource eventSubscription ")
    assert "endpointType: 'AzureFunction'" in subscription
    assert "retryPolicy: " in subscription
    dead_letter = block(subscription, r"deadLetterWithResourceIdentity: ")
    assert "type: 'SystemAssigned'" in dead_letter and "endpointType: 'StorageBlob'" in dead_letter

    stage_two = read(INFRA / "eventgrid.bicep")
    name = bicep_var(stage_two, "eventFunctionName")
    assert "functionResourceId: '${functionApp.id}/functions/${eventFunctionName}'" in stage_two
    # (app.get_functions() may run once per process: the host's indexing; read the one builder instead)
    builder = getattr(function_app, name, None)
    assert builder is not None, f"function_app.py has no function {name}"
    function = builder.build()
    assert function.get_function_name() == name
    assert "eventGridTrigger" in {b.type for b in function.get_bindings()}, f"{name} is not an Event Grid function"
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        assert name in read(INFRA / "hooks" / hook), f"{hook} waits for another function"


def test_dead_letter_writer_is_scoped_to_the_container():
    access = read(APP / "dead-letter-access.bicep")
    assignment = block(access, r"^resource deadLetterWriter ")
    assert "scope: container" in assignment
    assert "storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'" in access


# ---------------------------------------------------------------------------------------------------------------
# azd wiring
# ---------------------------------------------------------------------------------------------------------------
def test_azure_yaml_deploys_the_function_and_runs_existing_hooks():
    text = read(ROOT / "azure.yaml")
    assert re.search(r"^\s+language: python$", text, re.MULTILINE)
    assert re.search(r"^\s+host: function$", text, re.MULTILINE)
    service = re.search(r"^services:\n  (\w[\w-]*):", text, re.MULTILINE)
    assert service and f"serviceName = '{service.group(1)}'" in read(MAIN)
    assert re.search(r"^  postdeploy:$", text, re.MULTILINE)
    for script in re.findall(r"run: \./(\S+)", text):
        assert (ROOT / script).is_file(), script
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        assert "--template-file infra/eventgrid.bicep" in read(INFRA / "hooks" / hook)


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
@pytest.mark.parametrize("script", sorted((INFRA / "hooks").glob("*.sh")), ids=lambda p: p.name)
def test_shell_hooks_parse(script):
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_hook_outputs_exist():
    outputs = set(re.findall(r"^output (\w+) ", read(MAIN), re.MULTILINE))
    for hook in sorted((INFRA / "hooks").iterdir()):
        used = set(re.findall(r"\b(?:EVENTGRID|RESPONDER|ALERT)_[A-Z_]+\b", read(hook)))
        assert used <= outputs, f"{hook.name} reads values main.bicep does not output: {sorted(used - outputs)}"
