"""infra/ agrees with the code.

The Bicep compiler cannot run on these machines, so these tests read the files: the app settings infra sets
against dlp.settings.SETTINGS, the findings table and DCR stream against dlp.outputs.findings.COLUMNS, the responder's
custom role against the exact list of actions it may have, and the Event Grid filter against dlp.inputs.events.
A small reader below understands just enough Bicep for that: comments, strings (with ${} interpolation and
'''multi-line''' strings) and bracket nesting.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlp import settings
from dlp.inputs import events
from dlp.outputs import findings

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
                 "infra/bootstrap.bicep", "infra/eventgrid.bicep", "infra/hooks/postdeploy.sh", "infra/hooks/postdeploy.ps1"):
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
        secretish = r"^param (\w*(?:[Ww]ebhook|[Ss]ecret|[Pp]assword|[Kk]ey(?!Vault))\w*) string"
        for match in re.finditer(secretish, text, re.MULTILINE):
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
# Findings: table and DCR stream columns are dlp.outputs.findings.COLUMNS
# ---------------------------------------------------------------------------------------------------------------
DCR_TYPES = {"string", "int", "long", "real", "boolean", "dynamic", "datetime"}
TABLE_TYPES = {"string", "int", "long", "real", "boolean", "dynamic", "dateTime", "guid"}


def test_findings_columns_file_is_the_codes():
    columns = json.loads(read(APP / "findings-columns.json"))
    expected = [{"name": c.name, "type": c.type} for c in findings.COLUMNS]
    assert columns == expected, (
        "infra/app/findings-columns.json differs from dlp.outputs.findings.COLUMNS; regenerate it with: python -c "
        "\"import json; from dlp.outputs.findings import COLUMNS; print(json.dumps([dict(name=c.name, type=c.type) "
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
    "Microsoft.ContainerRegistry/registries/operationStatuses/read",
    "Microsoft.ResourceGraph/resources/read",
}


def test_custom_role_has_exactly_the_responder_actions():
    bootstrap = read(INFRA / "bootstrap.bicep")
    actions = strings_in(block(bootstrap, r"^var responderActions = "))
    assert len(actions) == len(set(actions))
    assert set(actions) == RESPONDER_ACTIONS
    role = block(bootstrap, r"^resource responderRole 'Microsoft\.Authorization/roleDefinitions@")
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
    assert "responderRoleGuid: responderRoleGuid" in access
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
    # Event Grid compares case-insensitively; every operation starting with OPERATION_PREFIX must pass, and the
    # resource-group move and delete of the scope exits (issue 22); nothing else.
    for wanted in events.OPERATION_FILTERS:
        assert any(wanted.lower().startswith(p.lower()) for p in prefixes), (wanted, prefixes)
    assert all(any(w.lower().startswith(p.lower()) for w in events.OPERATION_FILTERS) for p in prefixes), prefixes
    assert not any(p.lower().rstrip("/") == "microsoft.resources/subscriptions/resourcegroups" for p in prefixes)


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


def test_hook_outputs_exist():
    outputs = set(re.findall(r"^output (\w+) ", read(MAIN), re.MULTILINE))
    for hook in sorted((INFRA / "hooks").iterdir()):
        used = set(re.findall(r"\b(?:EVENTGRID|RESPONDER|ALERT|AZURE_FUNCTION_APP|LOG_ANALYTICS)_[A-Z_]+\b", read(hook)))
        assert used <= outputs, f"{hook.name} reads values main.bicep does not output: {sorted(used - outputs)}"


# ---------------------------------------------------------------------------------------------------------------
# Resource types, API versions and property names against Azure's published schemas
# (tests/azure_types/types.json: a subset of Azure/bicep-types-az, see its "source" and tests/azure_types/vendor.py)
# ---------------------------------------------------------------------------------------------------------------
AZURE_TYPES = json.loads((ROOT / "tests" / "azure_types" / "types.json").read_text(encoding="utf-8"))
RESOURCE_DECLARATION = re.compile(r"^resource (\w+) '([^'@]+)@([^']+)'( existing)? = ", re.MULTILINE)
BICEP_ONLY_KEYS = {"parent", "scope", "dependsOn"}   # resource keywords of Bicep, not properties of the body
FLAG_READ_ONLY, FLAG_REQUIRED = 2, 1


@dataclass
class Expr:
    """A Bicep expression that is not an object or array literal (kept as text)."""
    text: str


def _skip_blank(masked: str, i: int) -> int:
    while i < len(masked) and masked[i] in " \t\r\n,":
        i += 1
    return i


def _expression_end(masked: str, i: int, stop: str) -> int:
    depth = 0
    while i < len(masked):
        c = masked[i]
        if c in PAIRS:
            depth += 1
        elif c in PAIRS.values():
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and (c == "\n" or c in stop):
            return i
        i += 1
    return i


def _condition_end(masked: str, i: int) -> int:
    """Index just past the parenthesised condition opening at masked[i] (the `(...)` of `if (...)`)."""
    depth = 0
    while True:
        depth += masked[i] == "("
        depth -= masked[i] == ")"
        i += 1
        if depth == 0:
            return i


def parse_value(text: str, masked: str, i: int, stop: str = "") -> tuple[object, int]:
    """The Bicep value starting at text[i]: dict (object literal), list (array literal) or Expr; and its end."""
    i = _skip_blank(masked, i) if masked[i] in " \t" else i
    if masked[i] == "{":
        return parse_object(text, masked, i)
    if masked[i] == "[":
        return parse_array(text, masked, i)
    end = _expression_end(masked, i, stop)
    return Expr(text[i:end].strip()), end


def parse_object(text: str, masked: str, i: int) -> tuple[dict, int]:
    assert masked[i] == "{"
    i += 1
    entries: dict[str, object] = {}
    while True:
        i = _skip_blank(masked, i)
        if masked[i] == "}":
            return entries, i + 1
        match = re.compile(r"'((?:[^'\\]|\\.)*)'|([A-Za-z_$][\w$]*)").match(text, i)
        assert match, f"object key expected at {text[i:i + 40]!r}"
        key = match.group(1) if match.group(1) is not None else match.group(2)
        i = match.end()
        while masked[i] in " \t":
            i += 1
        assert masked[i] == ":", f"':' expected after key {key!r}: {text[i:i + 40]!r}"
        value, i = parse_value(text, masked, i + 1)
        entries[key] = value


def parse_array(text: str, masked: str, i: int) -> tuple[list, int]:
    assert masked[i] == "["
    i += 1
    head = re.compile(r"\s*for\s").match(masked, i)
    if head:   # [for x in y: <item>] or [for x in y: if (c) <item>]: the item stands for every element
        colon = i
        depth = 0
        while not (masked[colon] == ":" and depth == 0):
            depth += masked[colon] in PAIRS
            depth -= masked[colon] in PAIRS.values()
            colon += 1
        start = _skip_blank(masked, colon + 1)
        if re.compile(r"if\s*\(").match(masked, start):
            start = _skip_blank(masked, _condition_end(masked, masked.index("(", start)))
        item, i = parse_value(text, masked, start, stop="]")
        i = _skip_blank(masked, i)
        assert masked[i] == "]", f"']' expected: {text[i:i + 40]!r}"
        return [item], i + 1
    items: list[object] = []
    while True:
        i = _skip_blank(masked, i)
        if masked[i] == "]":
            return items, i + 1
        item, i = parse_value(text, masked, i, stop=",")
        items.append(item)


def literals_in(expr: Expr) -> list[object]:
    """Object and array literals inside an expression (the branches of `c ? {...} : []`, `union(x, {...})`)."""
    masked = mask(expr.text)
    found = []
    i = 0
    while i < len(masked):
        if masked[i] in "{[" and not re.search(r"\w$", masked[:i]):   # not an index like x[0]
            value, i = parse_value(expr.text, masked, i)
            found.append(value)
        else:
            i += 1
    return found


def declared_resources() -> list[tuple[str, str, str, str, bool, dict]]:
    """(file, symbol, type, api version, existing, body) of every resource declaration in infra/."""
    out = []
    for path in BICEP_FILES:
        text = read(path)
        masked = mask(text)
        code = mask(text, strings=False)
        for match in RESOURCE_DECLARATION.finditer(code):
            i = match.end()
            if masked.startswith("if", i):   # skip the condition: if (...) {
                i = _condition_end(masked, masked.index("(", i))
            i = _skip_blank(masked, i)
            value, _ = parse_value(text, masked, i)
            body = value[0] if isinstance(value, list) else value
            assert isinstance(body, dict), f"{path.name}: resource {match.group(1)} has no object body"
            out.append((str(path.relative_to(INFRA)), match.group(1), match.group(2), match.group(3),
                        bool(match.group(4)), body))
    return out


def _plain_string(expr: Expr) -> str | None:
    match = re.fullmatch(r"'((?:[^'\\$]|\\.|\$(?!\{))*)'", expr.text)
    return match.group(1) if match else None


def schema_problems(node_index: int, value: object, path: str) -> list[str]:
    node = AZURE_TYPES["types"][node_index]
    if node in ("any", None):
        return []
    if isinstance(value, Expr):
        literal = _plain_string(value)
        if isinstance(node, dict) and "enum" in node and literal is not None and literal not in node["enum"]:
            # a closed enum takes nothing else; an open (extensible) one anything, but a near miss is a typo
            near = difflib.get_close_matches(literal, node["enum"], n=1, cutoff=0.8)
            if not node["open"] or near:
                return [f"{path}: {literal!r} is not one of {node['enum']}" + (f" (did you mean {near[0]!r}?)" if near else "")]
            return []
        if node == "scalar" or "enum" in node:
            return []
        problems = []
        for candidate in literals_in(value):
            problems += schema_problems(node_index, candidate, path)
        return problems
    if isinstance(value, list):
        if node == "scalar" or "items" not in node:
            return [f"{path}: an array where the schema expects {node if node == 'scalar' else sorted(node)}"]
        return [p for item in value for p in schema_problems(node["items"], item, f"{path}[]")]
    assert isinstance(value, dict)
    if node == "scalar" or not ({"props", "disc"} & node.keys()):
        return [f"{path}: an object where the schema expects a scalar"]
    if "disc" in node:
        chosen = value.get(node["disc"])
        literal = _plain_string(chosen) if isinstance(chosen, Expr) else None
        if literal is None:
            return [f"{path}: discriminator {node['disc']!r} must be a literal, one of {sorted(node['cases'])}"]
        if literal not in node["cases"]:
            return [f"{path}: {node['disc']} {literal!r} is not one of {sorted(node['cases'])}"]
        case = AZURE_TYPES["types"][node["cases"][literal]]
        props, extra = {**node["base"], **case["props"]}, case["extra"]
    else:
        props, extra = node["props"], node["extra"]
    problems = []
    for key, item in value.items():
        where = f"{path}.{key}"
        if key in props:
            child, flags = props[key]
            if flags & FLAG_READ_ONLY and not flags & FLAG_REQUIRED:
                problems.append(f"{where}: read-only property")
            problems += schema_problems(child, item, where)
        elif extra is not None:
            problems += schema_problems(extra, item, where)
        else:
            near = difflib.get_close_matches(key, list(props), n=1)
            problems.append(f"{where}: no such property" + (f" (did you mean {near[0]}?)" if near else
                                                            f"; known: {sorted(props)}"))
    return problems


RESOURCES = declared_resources()


def test_every_resource_declaration_was_read():
    declared = sum(len(RESOURCE_DECLARATION.findall(mask(read(p), strings=False))) for p in BICEP_FILES)
    assert declared == len(RESOURCES) > 30


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r[0]}:{r[1]}")
def test_resource_type_api_version_and_properties_exist_in_azure_schemas(resource):
    file, symbol, type_name, version, existing, body = resource
    key = f"{type_name}@{version}"
    assert key in AZURE_TYPES["resources"], (
        f"{file}: {symbol} uses {key}, which Azure/bicep-types-az does not publish (a misspelt type or an API "
        f"version that does not exist); if it is real, re-vendor: {AZURE_TYPES['source']['regenerate']}")
    if existing:
        assert set(body) <= {"name", "parent", "scope"}, f"{file}: existing {symbol} sets {sorted(body)}"
        return
    own = {k: v for k, v in body.items() if k not in BICEP_ONLY_KEYS}
    problems = schema_problems(AZURE_TYPES["resources"][key], own, f"{file}:{symbol}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_a_misspelt_property_a_bad_enum_and_a_bad_api_version():
    text = """{
  name: 'x'
  properties: {
    publicNetworkAcess: 'Disabled'
    minimumTlsVersion: 'TLS1_4'
    networkAcls: {
      defaultAction: 'Deny'
    }
  }
}"""
    body, _ = parse_object(text, mask(text), 0)
    problems = schema_problems(AZURE_TYPES["resources"]["Microsoft.Storage/storageAccounts@2023-05-01"], body, "t")
    assert any("publicNetworkAcess: no such property (did you mean publicNetworkAccess?)" in p for p in problems)
    assert any("'TLS1_4' is not one of" in p for p in problems)
    assert len(problems) == 2
    assert "Microsoft.Storage/storageAccounts@2023-05-02" not in AZURE_TYPES["resources"]
    # and a discriminated type: the config resource named 'authsettingsV2' has its own property set
    auth = "{\n  name: 'authsettingsV2'\n  properties: {\n    platform: {\n      enabeld: true\n    }\n  }\n}"
    body, _ = parse_object(auth, mask(auth), 0)
    problems = schema_problems(AZURE_TYPES["resources"]["Microsoft.Web/sites/config@2024-04-01"], body, "t")
    assert problems == ["t.properties.platform.enabeld: no such property (did you mean enabled?)"] or \
        problems[0].startswith("t.properties.platform.enabeld: no such property")


def test_vendored_schemas_say_where_they_come_from():
    source = AZURE_TYPES["source"]
    assert source["repository"] == "https://github.com/Azure/bicep-types-az"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    used = {f"{t}@{v}" for _f, _s, t, v, _e, _b in RESOURCES}
    assert used == set(AZURE_TYPES["resources"]), "re-vendor: " + source["regenerate"]


# ---------------------------------------------------------------------------------------------------------------
# Parameters the app would refuse must not deploy: Bicep limits == dlp.settings limits
# ---------------------------------------------------------------------------------------------------------------
def param_decorators(text: str, name: str) -> dict[str, list[str]]:
    """Decorators of `param name` -> their argument text (@allowed: the listed literals)."""
    code = mask(text, strings=False)
    match = re.search(rf"^param {name} ", code, re.MULTILINE)
    assert match, f"param {name} not found"
    lines = text[:match.start()].rstrip("\n").splitlines()
    decorators: dict[str, list[str]] = {}
    i = len(lines) - 1
    collected: list[str] = []
    while i >= 0 and (lines[i].startswith(("@", " ", "]", "}", ")")) or not lines[i].strip()) and lines[i].strip():
        collected.insert(0, lines[i])
        i -= 1
    joined = "\n".join(collected)
    for found in re.finditer(r"^@(\w+)\(", joined, re.MULTILINE):
        args = block(joined[found.start():] + "\n", r"@\w+") if joined[found.end()] in "[{" else \
            joined[found.end():joined.index(")", found.end())]
        decorators[found.group(1)] = [a.strip().strip("'") for a in re.split(r"[\n,]", args.strip("[]{}")) if a.strip()]
    return decorators


def feeding_param(setting: str) -> str:
    """The main.bicep parameter an app setting is built from."""
    value = app_settings()[setting]
    params = set(re.findall(r"^param (\w+)", read(MAIN), re.MULTILINE))
    used = [name for name in re.findall(r"\b(\w+)\b", mask(value)) if name in params]
    assert used, f"{setting} = {value} is not built from a parameter"
    return used[0]


@pytest.mark.parametrize("setting", sorted(settings.BOUNDS))
def test_numeric_settings_have_the_apps_bounds_in_bicep(setting):
    decorators = param_decorators(read(MAIN), feeding_param(setting))
    low, high = settings.BOUNDS[setting]
    assert decorators.get("minValue") == [str(low)], f"{setting}: @minValue must be {low}"
    assert decorators.get("maxValue") == [str(high)], f"{setting}: @maxValue must be {high} (the app refuses more)"


def test_choice_settings_have_the_apps_choices_in_bicep():
    assert set(param_decorators(read(MAIN), feeding_param("DLP_MODE"))["allowed"]) == set(settings.CHOICES["DLP_MODE"])
    lockout = app_settings()["DLP_ALLOW_LOCKOUT"]
    assert re.search(r"^param dlpAllowLockout bool ", read(MAIN), re.MULTILINE)
    assert lockout == "dlpAllowLockout ? 'true' : 'false'" and set(settings.CHOICES["DLP_ALLOW_LOCKOUT"]) == {"true", "false"}
    assert param_decorators(read(MAIN), feeding_param("DLP_EXEMPT_TAG"))["maxLength"] == [str(settings.EXEMPT_TAG_MAX)]


def test_every_bicep_parameter_behind_an_app_setting_is_bounded_or_checked_by_the_app():
    """A new numeric/choice parameter feeding a DLP_ setting must come with limits (or be free text the app parses)."""
    free_text = {"DLP_SCOPES", "DLP_EXEMPTIONS", "DLP_RULE_DOCS_URL", "DLP_EMAIL_TO", "DLP_SWEEP_SCHEDULE"}
    for setting, value in app_settings().items():
        if not setting.startswith("DLP_") or setting in free_text or "outputs." in value or "environment()" in value:
            continue
        if setting == "DLP_TEAMS_WEBHOOK_URL":
            continue   # a Key Vault reference
        name = feeding_param(setting)
        kind = re.search(rf"^param {name} (\w+)", read(MAIN), re.MULTILINE).group(1)
        decorators = param_decorators(read(MAIN), name)
        assert kind == "bool" or {"allowed", "minValue", "maxLength"} & decorators.keys(), f"{setting} ({name}) unbounded"
        assert setting in settings.BOUNDS or setting in settings.CHOICES or setting == "DLP_EXEMPT_TAG", setting


def test_sweep_schedule_default_and_intervals_are_valid_ncrontab():
    main = read(MAIN)
    for hours in param_decorators(main, "sweepIntervalHours")["allowed"]:
        assert settings.ncrontab_problem(f"0 0 */{hours} * * *") is None
    assert "var sweepSchedule = empty(dlpSweepSchedule) ? '0 0 */${sweepIntervalHours} * * *'" in main
    assert settings.ncrontab_problem(settings.BY_NAME["DLP_SWEEP_SCHEDULE"].default) is None


def bicep_sweep_check(schedule: str) -> bool:
    """What main.bicep's sweepScheduleLooksValid computes, in Python (the test below pins the Bicep to it)."""
    fields = [f for f in schedule.strip().split(" ") if f]
    words = []
    for field in fields:
        blanked = field.upper()
        for ch in "*,-/0123456789":
            blanked = blanked.replace(ch, " ")
        words += [w for w in blanked.split(" ") if w]
    names = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
             "SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
    return len(fields) == 6 and all(w in names for w in words)


def test_bicep_refuses_a_schedule_that_is_not_six_ncrontab_fields():
    main = read(MAIN)
    words = re.search(r"^var sweepFieldWords = (.*)$", main, re.MULTILINE).group(1)
    for ch in "*,-/0123456789":
        assert f"'{ch}', ' ')" in words, f"sweepFieldWords must blank {ch!r}"
    names = set(strings_in(block(main, r"^var sweepNames = ")))
    assert len(names) == 19
    assert "length(sweepFields) == 6 && empty(filter(sweepFieldWords, word => !contains(sweepNames, word)))" in main
    assert "DLP_SWEEP_SCHEDULE: sweepScheduleLooksValid ? sweepSchedule : string(int(" in main
    # what gets through Bicep, the app then checks completely; what Bicep refuses, the app refuses too
    for schedule in ("0 0 */6 * * *", "0 30 9 * Jan Mon", "0 0 * * *", "0 0 * * * * *", "0 0 L * * *",
                     "0 0 9 ? * *", "00:05:00", "0 0 */6 * * FOO", "60 0 * * * *"):
        if not bicep_sweep_check(schedule):
            assert settings.ncrontab_problem(schedule), schedule


def test_location_is_limited_to_flex_consumption_regions():
    allowed = param_decorators(read(MAIN), "location")["allowed"]
    assert {"eastus", "westeurope", "swedencentral", "australiaeast"} <= set(allowed)
    assert not {"westindia", "chinanorth", "germanynorth"} & set(allowed)   # no Flex Consumption there
    assert len(allowed) == len(set(allowed)) >= 20


# ---------------------------------------------------------------------------------------------------------------
# Existing system topics, private network, least privilege, guardrail alerts, Easy Auth
# ---------------------------------------------------------------------------------------------------------------
def test_system_topic_ids_do_not_loop_over_module_outputs():
    main = mask(read(MAIN), strings=False)
    for match in re.finditer(r"^var (\w+) = \[for ", main, re.MULTILINE):
        body = block(main[match.start():], r"= ")
        assert ".outputs." not in body and "reference(" not in body, f"var {match.group(1)} loops over runtime values (BCP182)"
    topic_ids = block(main, r"^var systemTopicIds = ")
    assert "reusedTopicBySubscription[s]" in topic_ids
    assert "/providers/Microsoft.EventGrid/systemTopics/${systemTopicName}" in topic_ids
    access = block(main, r"^module subscriptionAccess ")
    assert "systemTopicName: systemTopicName" in access and "reusedSystemTopicId: reusedTopicIds[i]" in access
    # the name the topic module creates is the name the ID is built from
    topic_module = block(read(APP / "subscription-access.bicep"), r"^module systemTopic ")
    assert "name: systemTopicName" in topic_module and "scope: resourceGroup(eventsResourceGroupName)" in topic_module


def test_no_variable_feeding_a_loop_condition_or_name_reads_runtime_values():
    """BCP178/BCP182 in every file: loops, conditions and names only see parameters and other such variables."""
    for path in BICEP_FILES:
        code = mask(read(path), strings=False)
        runtime = set()
        for match in re.finditer(r"^var (\w+) = (.*)$", code, re.MULTILINE):
            rest = code[match.start():]
            body = block(rest, r"= ") if match.group(2).strip()[:1] in "[{" else match.group(2)
            if re.search(r"\.outputs\.|\.properties\.|reference\(|list\w*\(", body):
                runtime.add(match.group(1))
        for match in re.finditer(r"\[for [^:]+ in (\w+)|if \((.+?)\) \{|^\s+name: (.+)$", code, re.MULTILINE):
            used = " ".join(g for g in match.groups() if g)
            assert not set(re.findall(r"\w+", used)) & runtime, f"{path.name}: {match.group(0).strip()} reads {runtime}"
            assert ".outputs." not in used and ".properties." not in used, f"{path.name}: {match.group(0).strip()}"


@pytest.mark.parametrize("hook", ["preprovision.sh", "preprovision.ps1"])
def test_preprovision_discovers_existing_system_topics_with_resource_graph(hook):
    text = read(INFRA / "hooks" / hook)
    assert "/providers/Microsoft.ResourceGraph/resources?api-version=" in text
    assert "microsoft.eventgrid/systemtopics" in text and "Microsoft.Resources.Subscriptions" in text
    assert "MONITORED_SUBSCRIPTION_IDS" in text and "azd env set DISCOVERED_SYSTEM_TOPIC_IDS" in text
    assert "tags['azd-env-name']" in text   # its own topics are not "existing"
    yaml = read(ROOT / "azure.yaml")
    assert f"run: ./infra/hooks/{hook}" in yaml and re.search(r"^  preprovision:$", yaml, re.MULTILINE)
    parameters = json.loads(read(INFRA / "main.parameters.json"))["parameters"]
    assert parameters["discoveredSystemTopicIds"]["value"] == "${DISCOVERED_SYSTEM_TOPIC_IDS=}"


def test_explicit_topic_ids_override_discovered_ones():
    reused = block(read(MAIN), r"^var reusedTopicBySubscription = ") if "= union(\n" in read(MAIN) else \
        re.search(r"^var reusedTopicBySubscription = (.*)$", read(MAIN), re.MULTILINE).group(1)
    # union(): the later object wins per key (subscription)
    assert reused.index("discoveredTopicIds") < reused.index("explicitTopicIds")


def test_vnet_enabled_makes_storage_and_key_vault_private():
    main = read(MAIN)
    assert re.search(r"^param vnetEnabled bool = true$", main, re.MULTILINE)
    assert "privateOnly: vnetEnabled" in block(main, r"^module storage ")
    assert "subnetId: vnetEnabled ? network.outputs.appSubnetId : ''" in block(main, r"^module api ")
    storage = read(APP / "storage.bicep")
    assert "publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'" in storage
    assert "defaultAction: privateOnly ? 'Deny' : 'Allow'" in storage
    # The Key Vault too (Flex Consumption resolves Key Vault references over the VNet integration: docs/deploy.md
    # quotes Microsoft's page), through its own private endpoint and zone
    assert "privateOnly: vnetEnabled" in block(main, r"^module keyVault ")
    vault = block(read(APP / "keyvault.bicep"), r"^resource vault ")
    assert "publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'" in vault
    assert "defaultAction: privateOnly ? 'Deny' : 'Allow'" in vault
    assert "virtualNetworkSubnetId: empty(subnetId) ? null : subnetId" in read(APP / "api.bicep")
    network = read(APP / "network.bicep")
    assert "serviceName: 'Microsoft.App/environments'" in network
    groups = set(re.findall(r"^\s+(\w+): 'privatelink\.", network, re.MULTILINE)) | set(
        re.findall(r"^\s+(\w+): keyVaultZoneName$", network, re.MULTILINE))
    endpoints = read(APP / "private-endpoints.bicep")
    assert groups == set(re.findall(r"group: '(\w+)'", endpoints)) == {"blob", "queue", "table", "vault"}
    assert "privateDnsZoneId: dnsZoneIds[endpoint.group]" in endpoints
    assert "keyVaultEndpoint: teamsEnabled" in block(main, r"^module privateEndpoints ")
    assert "keyVaultZone: teamsEnabled" in block(main, r"^module network ")


def test_dead_letters_live_in_their_own_firewalled_account():
    text = read(APP / "dead-letter-storage.bicep")
    assert "defaultAction: privateOnly ? 'Deny' : 'Allow'" in text and "bypass: 'AzureServices'" in text
    assert "allowSharedKeyAccess: false" in text
    main = read(MAIN)
    assert "EVENTGRID_DEADLETTER_STORAGE_ACCOUNT string = deadLetterStorage.outputs.name" in main
    # private with the VNet (the app reads through its private endpoint), open to OAuth callers without it
    assert "privateOnly: vnetEnabled" in block(main, r"^module deadLetterStorage ")
    assert "deadLetterContainerName" not in read(APP / "storage.bicep")


def test_app_blob_access_is_scoped_to_its_containers():
    rbac = read(APP / "rbac.bicep")
    assert "var leastPrivilege = hostStorageAccess == 'least-privilege'" in rbac
    blob = block(rbac, r"^resource containerAccess ")
    assert "scope: containers[i]" in blob and "roles.storageBlobDataContributor" in blob
    assert "for (name, i) in blobContainerNames: if (leastPrivilege)" in rbac
    account = block(rbac, r"^resource storageAccess ")
    account_roles = re.search(r"^var accountRoles = concat\((.*?)^\]\)$", rbac, re.MULTILINE | re.DOTALL).group(1)
    assert "scope: storage" in account and "storageBlobDataContributor" not in account_roles
    # the fallback: Storage Blob Data Owner on the account, only when asked for
    assert account_roles.rstrip().endswith("], leastPrivilege ? [] : [\n  roles.storageBlobDataOwner")
    assert "storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'" in rbac
    # the host's account-level calls (list containers, blob service properties): actions only, no blob data
    lister = block(read(INFRA / "bootstrap.bicep"), r"^resource hostStorageListerRole ")
    assert set(strings_in(block(lister, r"actions: "))) == {
        "Microsoft.Storage/storageAccounts/blobServices/read",
        "Microsoft.Storage/storageAccounts/blobServices/containers/read"}
    assert re.search(r"dataActions: \[\]", lister)
    listing = block(rbac, r"^resource containerListing ")
    assert "scope: storage" in listing and "hostStorageListerRoleGuid)" in listing
    storage = read(APP / "storage.bicep")
    assert set(strings_in(block(storage, r"^var hostContainerNames = "))) == {"azure-webjobs-hosts", "azure-webjobs-secrets"}
    assert "output appContainerNames array = concat([deploymentContainerName], hostContainerNames)" in storage
    assert "blobContainerNames: storage.outputs.appContainerNames" in block(read(MAIN), r"^module rbac ")


def test_app_reads_the_dead_letter_container_it_is_told_and_nothing_else_of_that_account():
    main = read(MAIN)
    grant = block(main, r"^module appDeadLetterAccessGrant 'app/dead-letter-access\.bicep' = \{")
    assert "principalId: identity.outputs.principalId" in grant and "containerName: deadLetterContainerName" in grant
    assert "storageAccountName: deadLetterStorage.outputs.name" in grant
    assert "DLP_DEADLETTER_CONTAINER: '${deadLetterStorage.outputs.blobEndpoint}${deadLetterContainerName}'" in main
    assert "scope: container" in read(APP / "dead-letter-access.bicep")
    assert "param appDeadLetterAccess" not in main and "APP_DEAD_LETTER_ACCESS" not in read(INFRA / "main.parameters.json")


GUARDRAIL_OPERATIONS = {
    "Microsoft.Authorization/roleAssignments/delete", "Microsoft.Authorization/roleDefinitions/write",
    "Microsoft.Authorization/roleDefinitions/delete", "Microsoft.EventGrid/systemTopics/write",
    "Microsoft.EventGrid/systemTopics/delete", "Microsoft.EventGrid/systemTopics/eventSubscriptions/write",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions/delete", "Microsoft.Authorization/policyExemptions/write",
    "Microsoft.Authorization/policyAssignments/write", "Microsoft.Authorization/denyAssignments/write",
    "Microsoft.Authorization/locks/write", "Microsoft.Resources/deploymentStacks/write",
}


def test_guardrail_alerts_in_every_monitored_subscription():
    access = read(APP / "subscription-access.bicep")
    module = block(access, r"^module guardrailAlerts ")
    assert "roleAssignmentId: responderAccess.id" in module and "systemTopicId: systemTopicId" in module
    assert "eventSubscriptionId: '${systemTopicId}/eventSubscriptions/${eventSubscriptionName}'" in module
    assert "actionGroupId: monitoring.outputs.actionGroupId" in block(read(MAIN), r"^module subscriptionAccess ")
    assert "eventSubscriptionName: eventSubscriptionName" in block(read(MAIN), r"^module subscriptionAccess ")
    alerts = read(APP / "guardrail-alerts.bicep")
    operations = set(strings_in(block(alerts, r"^var guardrails = "))) | set(strings_in(block(alerts, r"^var blockers = ")))
    assert GUARDRAIL_OPERATIONS <= operations
    for resource in ("guardrailAlert", "blockerAlert"):
        alert = block(alerts, rf"^resource {resource} ")
        assert "subscriptionScope" in alert and "actionGroups: actionGroups" in alert
    # the event subscription name the alert watches is the one the second stage creates (main.bicep's output, which
    # the postdeploy hooks pass to infra/eventgrid.bicep)
    assert "output EVENTGRID_SUBSCRIPTION_NAME string = eventSubscriptionName" in read(MAIN)
    assert re.search(r"^param eventSubscriptionName string$", read(INFRA / "eventgrid.bicep"), re.MULTILINE)
    for hook in ("postdeploy.sh", "postdeploy.ps1"):
        assert re.search(r'eventSubscriptionName="\$(env:)?EVENTGRID_SUBSCRIPTION_NAME"', read(INFRA / "hooks" / hook)), hook


def test_easy_auth_is_an_option_that_leaves_the_event_grid_webhook_open():
    api = read(APP / "api.bicep")
    auth = block(api, r"^resource authSettings ")
    assert "= if (!empty(authClientId))" in api and "name: 'authsettingsV2'" in auth
    assert "requireAuthentication: true" in auth and "unauthenticatedClientAction: 'Return401'" in auth
    paths = strings_in(block(api, r"^var unauthenticatedPaths = "))
    assert "/runtime/webhooks/eventgrid" in paths and not any(p.startswith("/api/recheck") for p in paths)
    assert "clientSecret" not in auth


@pytest.mark.parametrize("hook", ["postdeploy.sh", "postdeploy.ps1"])
def test_postdeploy_refuses_an_easy_auth_that_does_not_block_anonymous_callers(hook):
    text = read(INFRA / "hooks" / hook)
    assert "AZURE_FUNCTION_APP_AUTH" in text and "/api/recheck" in text and "401" in text
    # with the function key: otherwise the Functions host's own 401 (no key) would pass for Easy Auth's
    assert "x-functions-key" in text and "functionKeys.default" in text
    assert "output AZURE_FUNCTION_APP_AUTH string = authEnabled ? 'entra-id' : 'function-keys'" in read(MAIN)


def test_no_existing_resource_loops_across_subscriptions():
    """A topic's identity in another subscription is read by a module at its scope, not an `existing` loop."""
    for path in BICEP_FILES:
        code = mask(read(path), strings=False)
        for match in re.finditer(r"^resource (\w+) '[^']+' existing = \[for ", code, re.MULTILINE):
            assert "scope:" not in block(code[match.start():], r"= "), f"{path.name}: existing loop {match.group(1)} with a scope"
    stage_two = read(INFRA / "eventgrid.bicep")
    assert "principalId: topicIdentities[i].outputs.principalId" in stage_two
    assert "scope: resourceGroup(topic.subscriptionId, topic.resourceGroupName)" in block(stage_two, r"^module topicIdentities ")
