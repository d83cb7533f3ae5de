"""Every app setting the responder reads: one list, parsed and validated once.

The list is the source of truth: the settings table in docs/operations.md, `local.settings.sample.json`
and `infra/` are checked against it by tests (tests/test_settings_agree.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dlp.domain.formats import CONTAINER_RE, dead_letter_container, ncrontab_problem, url_parses
from dlp.domain.remediation import Exemption, Policy
from dlp.ids import RESOURCE_GROUP, fold

# Where a setting comes from when deployed:
#   "app"      set by infra/ as an app setting of the Function App
#   "secret"   set by infra/ as a Key Vault reference (never a literal value)
#   "platform" set by infra/ for the Functions host or the Azure SDK, read by our code too
#   "local"    only for running on a workstation / in tests (never set by infra/)
KINDS = ("app", "secret", "platform", "local")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    doc: str
    kind: str = "app"
    example: str = ""     # the value in local.settings.sample.json: optional outputs stay off locally

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} not in {KINDS}")


SETTINGS: tuple[Setting, ...] = (
    Setting("DLP_MODE", "audit",
            "`audit` reports what would be done; `enforce` reverts exportPolicy / publicNetworkAccess.",
            example="audit"),
    Setting("DLP_SCOPES", "",
            "Comma-separated subscription or resource-group IDs the responder acts on. "
            "Empty: every scope its identity can see. Set but listing nothing (` , `) is an error.",
            example=""),
    Setting("DLP_EXEMPTIONS", "",
            "Comma-separated registry or resource-group IDs never remediated, each optionally "
            "`@YYYY-MM-DD` (the last day the exemption holds). Controlled by the responder's operators only.",
            example=""),
    Setting("DLP_EXEMPT_TAG", "",
            "Name of a registry tag that exempts it (`true` or an ISO date). Empty (default): tags never exempt, "
            "because anyone who can drift a registry can also tag it. Every use is recorded and alerted.",
            example=""),
    Setting("DLP_ALLOW_LOCKOUT", "false",
            "`true` allows disabling public network access on a registry with no approved private endpoint "
            "(cuts every client off).", example="false"),
    Setting("DLP_MAX_REMEDIATIONS", "3",
            "Revert-war breaker: after this many remediations of one registry within an hour, stop writing to it.",
            example="3"),
    Setting("DLP_TIME_BUDGET_S", "20",
            "Seconds an invocation may spend on Azure calls (Event Grid waits 30 s); the rest goes to the durable retry.",
            example="20"),
    Setting("DLP_ARM_ENDPOINT", "https://management.azure.com",
            "Azure Resource Manager endpoint; sovereign clouds set theirs (the token scope follows it).",
            example="https://management.azure.com"),
    Setting("DLP_SWEEP_SCHEDULE", "0 0 */6 * * *",
            "NCRONTAB schedule of the scheduled sweep (default every 6 hours).", example="0 0 */6 * * *"),
    Setting("DLP_LOGS_ENDPOINT", "",
            "Logs ingestion endpoint (the DCR's `logsIngestion` endpoint or a DCE). Empty: findings go to the "
            "application log only.", example=""),
    Setting("DLP_LOGS_RULE_ID", "",
            "Immutable ID of the data collection rule (`dcr-...`).", example=""),
    Setting("DLP_LOGS_STREAM", "Custom-AcrDlpFindings",
            "Stream name declared in the DCR.", example="Custom-AcrDlpFindings"),
    Setting("DLP_TEAMS_WEBHOOK_URL", "",
            "Teams Workflows webhook URL (carries a `sig` secret: a Key Vault reference in Azure). Empty: no Teams alerts. "
            "Unusable (or an unresolved Key Vault reference): Teams is off, the rest goes on (see `GET /api/health`).",
            kind="secret", example=""),
    Setting("DLP_EMAIL_ENDPOINT", "",
            "Azure Communication Services endpoint for email alerts. Empty: no email alerts.",
            example=""),
    Setting("DLP_EMAIL_SENDER", "",
            "Sender address of a domain connected to the ACS resource.",
            example=""),
    Setting("DLP_EMAIL_TO", "",
            "Comma-separated recipient addresses.", example=""),
    Setting("DLP_RULE_DOCS_URL", "",
            "Base URL of the rule pages (docs/rules/) used in alert links, e.g. your fork's "
            "`https://github.com/<org>/<repo>/blob/main/docs/rules/`. Empty: links go to the rule's Microsoft Learn page.",
            example=""),
    Setting("DLP_ALERT_GROUP_WINDOW_S", "60",
            "Seconds that group a burst of alerts by one caller (or on one registry): the first goes out at once, the "
            "rest as one digest per channel when the window ends (each next window of a burst that goes on is twice as "
            "long, up to the cap window). `0`: every alert at once. Unusable: the default applies.", example="60"),
    Setting("DLP_ALERT_CAP_PER_REGISTRY", "3",
            "Alerts of one registry per cap window beyond which repeats are folded into the next digest (a kind of "
            "exposure the registry was not alerted for in the window is never folded).", example="3"),
    Setting("DLP_ALERT_CAP_PER_CALLER", "20",
            "Alerts of one caller per cap window beyond which repeats are folded into the next digest.", example="20"),
    Setting("DLP_ALERT_CAP_WINDOW_MIN", "60", "Minutes over which the alert caps count.", example="60"),
    Setting("DLP_DEADLETTER_CONTAINER", "",
            "Blob container where Event Grid dead-letters the events it could not deliver; the replay timer re-runs "
            "them every 5 minutes. A container name (on the app's own storage, `AzureWebJobsStorage`) or a container "
            "URL `https://<account>.blob.core.windows.net/<container>` (read with the managed identity; `infra/` sets "
            "this, its dead-letter account being separate). Empty: replay off.",
            example=""),
    Setting("DLP_REGISTRY_LOGS_WORKSPACE", "",
            "Workspace ID (a GUID) of the Log Analytics workspace that receives the registries' resource logs "
            "(`ContainerRegistryRepositoryEvents`, `ContainerRegistryLoginEvents`). Set: every exposure window records "
            "and alerts what was pulled while the registry was open (looks at +5 and +20 minutes). Empty: pulls are "
            "recorded as unknown.", example=""),
    Setting("DLP_LOGS_QUERY_ENDPOINT", "https://api.loganalytics.io/v1",
            "Log Analytics query API endpoint (sovereign clouds set theirs, e.g. `https://api.loganalytics.azure.cn/v1`); "
            "the token audience follows it.", example="https://api.loganalytics.io/v1"),
    Setting("AZURE_CLIENT_ID", "",
            "Client ID of the user-assigned managed identity the responder uses (read by azure-identity); change "
            "history names the responder's own writes by it, so exposure windows it closed say `responder`, and "
            "the events of its own writes cost nothing.",
            kind="platform", example=""),
    Setting("AzureWebJobsStorage", "",
            "Storage connection string (Azurite locally). In Azure, the identity-based `__*ServiceUri` settings are used.",
            kind="local", example="UseDevelopmentStorage=true"),
    Setting("AzureWebJobsStorage__credential", "",
            "`managedidentity` for identity-based storage access.", kind="platform", example=""),
    Setting("AzureWebJobsStorage__clientId", "",
            "Client ID of the identity used for storage.", kind="platform", example=""),
    Setting("AzureWebJobsStorage__blobServiceUri", "",
            "Blob endpoint of the app's storage (host leases, deployment package).", kind="platform", example=""),
    Setting("AzureWebJobsStorage__queueServiceUri", "",
            "Queue endpoint of the app's storage (the durable retry queue).", kind="platform", example=""),
    Setting("AzureWebJobsStorage__tableServiceUri", "",
            "Table endpoint of the app's storage (breaker, alert state, outbox).", kind="platform", example=""),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

MODES = ("audit", "enforce")
RETRY_QUEUE = "dlp-retry"        # queue read by the durable-retry function (name fixed: the trigger binds it)
STATE_TABLE = "dlpstate"         # breaker counts, alert state, per-registry leases
OUTBOX_TABLE = "dlpoutbox"       # findings and alerts not yet delivered

# Case-insensitive, but ASCII-only outside the resource-group name (`(?a:...)`): under re.IGNORECASE alone
# "/\u017fubscriptions/" (long s) or a registry name with a Kelvin sign would pass.
_SUB = r"(?a:/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
_RG = _SUB + r"(?a:/resourceGroups/)" + RESOURCE_GROUP
_REG = _RG + r"(?a:/providers/Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50})"
SCOPE_RE = re.compile(rf"^{_SUB}(?:(?a:/resourceGroups/){RESOURCE_GROUP})?$", re.IGNORECASE)
EXEMPTION_RE = re.compile(rf"^(?:{_REG}|{_RG})$", re.IGNORECASE)

# Limits of the numeric and choice settings; infra/main.bicep carries the same (@minValue/@maxValue/@allowed on
# the parameter that feeds the setting: tests/test_infra.py keeps them identical), so a value the app would refuse
# never deploys.
BOUNDS: dict[str, tuple[int, int]] = {
    "DLP_MAX_REMEDIATIONS": (1, 100),
    # Event Grid gives up (and redelivers) at 30 s; after a spent budget, handing over and keeping the record
    # in the outbox may take a few seconds more
    "DLP_TIME_BUDGET_S": (2, 22),
    # alert grouping and caps (an unusable value degrades to the default: alerts never stop for it)
    "DLP_ALERT_GROUP_WINDOW_S": (0, 3600),
    "DLP_ALERT_CAP_PER_REGISTRY": (1, 1000),
    "DLP_ALERT_CAP_PER_CALLER": (1, 10000),
    "DLP_ALERT_CAP_WINDOW_MIN": (5, 1440),
}
ALERT_LIMITS = ("DLP_ALERT_GROUP_WINDOW_S", "DLP_ALERT_CAP_PER_REGISTRY", "DLP_ALERT_CAP_PER_CALLER",
                "DLP_ALERT_CAP_WINDOW_MIN")
CHOICES: dict[str, tuple[str, ...]] = {"DLP_MODE": MODES, "DLP_ALLOW_LOCKOUT": ("true", "false")}
EXEMPT_TAG_MAX = 512
__all__ = ["CONTAINER_RE", "ncrontab_problem"]     # re-exported: the formats live in dlp.domain.formats


class ConfigError(ValueError):
    """A setting has a value the responder cannot use; the message names the setting."""

    def __init__(self, problems: list[tuple[str, str]], degraded: tuple[tuple[str, str], ...] = ()):
        self.problems = tuple(problems)
        self.degraded = degraded          # optional-output problems found as well (reported, not the cause)
        super().__init__("; ".join(f"{name}: {why}" for name, why in problems))


@dataclass(frozen=True)
class Settings:
    mode: str = "audit"
    scopes: tuple[str, ...] = ()
    exemptions: tuple[Exemption, ...] = ()
    exempt_tag: str = ""
    allow_lockout: bool = False
    max_remediations: int = 3
    time_budget_s: float = 20.0
    arm_endpoint: str = "https://management.azure.com"
    sweep_schedule: str = "0 0 */6 * * *"
    logs_endpoint: str = ""
    logs_rule_id: str = ""
    logs_stream: str = "Custom-AcrDlpFindings"
    teams_webhook_url: str = field(default="", repr=False)
    email_endpoint: str = ""
    email_sender: str = ""
    email_to: tuple[str, ...] = ()
    rule_docs_url: str = ""
    storage_connection_string: str = field(default="", repr=False)
    storage_table_uri: str = ""
    storage_queue_uri: str = ""
    storage_blob_uri: str = ""
    deadletter_container: str = ""
    deadletter_account_url: str = ""       # https://<account>.blob...: the container is on that account, not the app's
    degraded: tuple[tuple[str, str], ...] = ()    # (setting, problem): optional outputs turned off at start
    client_id: str = ""      # AZURE_CLIENT_ID: the responder's own identity in change history (dlp/domain/exposure.py)
    registry_logs_workspace: str = ""         # DLP_REGISTRY_LOGS_WORKSPACE: where the registries' resource logs are
    logs_query_endpoint: str = "https://api.loganalytics.io/v1"
    alert_group_window_s: float = 60.0        # dlp/outputs/alerts/grouping.py
    alert_cap_per_registry: int = 3
    alert_cap_per_caller: int = 20
    alert_cap_window_min: int = 60

    def policy(self, *, enforce: bool | None = None) -> Policy:
        """The slice of these settings the pure planner needs. `enforce`: whether this trigger may write (None:
        DLP_MODE decides)."""
        return Policy(enforce=self.mode == "enforce" if enforce is None else enforce, scopes=self.scopes,
                      exemptions=self.exemptions, exempt_tag=self.exempt_tag, allow_lockout=self.allow_lockout,
                      max_remediations=self.max_remediations)

    @property
    def logs_enabled(self) -> bool:
        return bool(self.logs_endpoint and self.logs_rule_id)

    @property
    def teams_enabled(self) -> bool:
        return bool(self.teams_webhook_url)

    @property
    def email_enabled(self) -> bool:
        return bool(self.email_endpoint and self.email_sender and self.email_to)

    @property
    def pulls_enabled(self) -> bool:
        """Exposure windows look up what was pulled (dlp/responder/impact.py)."""
        return bool(self.registry_logs_workspace)

    @property
    def storage_configured(self) -> bool:
        return bool(self.storage_connection_string or self.storage_table_uri)

    @property
    def deadletter_enabled(self) -> bool:
        return bool(self.deadletter_container and (self.deadletter_account_url or self.storage_connection_string
                                                    or self.storage_blob_uri))

    @property
    def responder_identities(self) -> tuple[str, ...]:
        """How change history names the responder's own writes (`changedBy`): its client ID when a user-assigned
        identity is configured; empty otherwise (its writes then read as anyone else's)."""
        return (self.client_id,) if self.client_id else ()

    @property
    def arm_scope(self) -> str:
        return self.arm_endpoint.rstrip("/") + "/.default"

    def outputs(self) -> dict[str, bool]:
        """Which outputs are configured, never their values (for /api/health and the start-up notice)."""
        return {"logAnalytics": self.logs_enabled, "teams": self.teams_enabled,
                "email": self.email_enabled, "storage": self.storage_configured,
                "deadLetterReplay": self.deadletter_enabled, "registryLogs": self.pulls_enabled}


DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


def _storage(value: str) -> str:
    """The Functions host understands UseDevelopmentStorage=true; the storage SDKs do not."""
    return DEVELOPMENT_STORAGE if value.strip().lower() == "usedevelopmentstorage=true" else value.strip()


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


KEY_VAULT_REFERENCE = "@microsoft.keyvault("

# What a bad optional setting turns off (the rest of the responder goes on)
OUTPUT_OF = {
    "DLP_TEAMS_WEBHOOK_URL": "Teams alerts",
    "DLP_EMAIL_ENDPOINT": "email alerts", "DLP_EMAIL_SENDER": "email alerts", "DLP_EMAIL_TO": "email alerts",
    "DLP_LOGS_ENDPOINT": "Log Analytics findings (they go to the application log only)",
    "DLP_LOGS_RULE_ID": "Log Analytics findings (they go to the application log only)",
    "DLP_LOGS_STREAM": "Log Analytics findings (they go to the application log only)",
    "DLP_RULE_DOCS_URL": "links to your rule pages (alerts link to Microsoft Learn instead)",
    "DLP_DEADLETTER_CONTAINER": "dead-letter replay (dead-lettered drift waits for the next sweep)",
    "DLP_REGISTRY_LOGS_WORKSPACE": "pull look-ups of exposure windows (pulls are recorded as unknown)",
    "DLP_LOGS_QUERY_ENDPOINT": "pull look-ups of exposure windows (pulls are recorded as unknown)",
    **{name: "alert grouping and caps as set (their defaults apply)" for name in ALERT_LIMITS},
}


def turned_off(degraded: tuple[tuple[str, str], ...]) -> list[str]:
    """The outputs the problems in `degraded` turned off, each once, in order."""
    return list(dict.fromkeys(OUTPUT_OF.get(name, name) for name, _ in degraded))


def _unresolved(value: str) -> bool:
    """App Service hands a Key Vault reference it could not resolve (no access, wrong URI, vault firewall) to the
    app as the literal `@Microsoft.KeyVault(...)` text."""
    return value.strip().lower().startswith(KEY_VAULT_REFERENCE)


def _https_url(name: str, value: str, problems: list[tuple[str, str]]) -> str:
    value = value.strip()
    if value and _unresolved(value):
        problems.append((name, "is an unresolved Key Vault reference: give the app's identity the Key Vault Secrets "
                               "User role on the vault and check the secret URI"))
        return ""
    if value and not (re.match(r"^https://[^\s/?#]+(/[^\s]*)?$", value) and url_parses(value)):
        # never echo the value: it may carry a secret (the Teams URL's `sig`)
        problems.append((name, "must be an https:// URL"))
        return ""
    return value


def _group(problems: list[tuple[str, str]], found: list[tuple[str, str]]) -> bool:
    """Record a group's problems; True when the group is usable."""
    problems.extend(found)
    return not found


def _outputs(get: Any, degraded: list[tuple[str, str]]) -> dict[str, Any]:
    """Parse the settings that only feed an output (-> Settings fields). A bad one turns off its own output
    (each group is empty when any of its settings is unusable) and says why in `degraded`; it never stops
    enforcement, and never takes another output with it."""
    found: list[tuple[str, str]] = []
    logs_endpoint = _https_url("DLP_LOGS_ENDPOINT", get("DLP_LOGS_ENDPOINT"), found)
    logs_rule_id = get("DLP_LOGS_RULE_ID")
    logs_stream = get("DLP_LOGS_STREAM")
    if _unresolved(logs_rule_id):
        found.append(("DLP_LOGS_RULE_ID", "is an unresolved Key Vault reference"))
    elif logs_rule_id and not re.match(r"^dcr-[0-9a-f]{32}$", logs_rule_id, re.IGNORECASE):
        found.append(("DLP_LOGS_RULE_ID", "must be a DCR immutable ID (dcr- and 32 hex digits)"))
    if not re.match(r"^Custom-[A-Za-z][A-Za-z0-9_]{0,60}$", logs_stream):
        found.append(("DLP_LOGS_STREAM", "must look like Custom-<Name>"))
    if bool(get("DLP_LOGS_ENDPOINT")) != bool(logs_rule_id):
        missing = "DLP_LOGS_RULE_ID" if get("DLP_LOGS_ENDPOINT") else "DLP_LOGS_ENDPOINT"
        found.append((missing, "must be set together with " +
                      ("DLP_LOGS_ENDPOINT" if missing == "DLP_LOGS_RULE_ID" else "DLP_LOGS_RULE_ID")))
    logs_on = _group(degraded, found) and bool(logs_endpoint and logs_rule_id)

    found = []
    teams = _https_url("DLP_TEAMS_WEBHOOK_URL", get("DLP_TEAMS_WEBHOOK_URL"), found)
    _group(degraded, found)

    found = []
    email_endpoint = _https_url("DLP_EMAIL_ENDPOINT", get("DLP_EMAIL_ENDPOINT"), found)
    email_sender = get("DLP_EMAIL_SENDER")
    raw_to = get("DLP_EMAIL_TO")
    email_to = tuple(_csv(raw_to))
    address = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
    if email_sender and not address.match(email_sender):
        found.append(("DLP_EMAIL_SENDER", "is not an email address" if not _unresolved(email_sender)
                      else "is an unresolved Key Vault reference"))
    bad_to = [addr for addr in email_to if not address.match(addr)]
    if bad_to:
        found.append(("DLP_EMAIL_TO", f"{len(bad_to)} of {len(email_to)} entries are not email addresses"))
    elif raw_to and not email_to:
        found.append(("DLP_EMAIL_TO", "is set but lists no address"))
    parts = {"DLP_EMAIL_ENDPOINT": get("DLP_EMAIL_ENDPOINT"), "DLP_EMAIL_SENDER": email_sender, "DLP_EMAIL_TO": raw_to}
    if any(parts.values()) and not all(parts.values()):
        found += [(name, "must be set when email alerts are configured") for name, value in parts.items() if not value]
    email_on = _group(degraded, found)

    found = []
    docs = _https_url("DLP_RULE_DOCS_URL", get("DLP_RULE_DOCS_URL"), found)
    _group(degraded, found)

    workspace, query_endpoint = _registry_logs(get, degraded)

    return dict(
        logs_endpoint=logs_endpoint if logs_on else "", logs_rule_id=logs_rule_id if logs_on else "",
        logs_stream=logs_stream if logs_on else BY_NAME["DLP_LOGS_STREAM"].default, teams_webhook_url=teams,
        email_endpoint=email_endpoint if email_on else "", email_sender=email_sender if email_on else "",
        email_to=email_to if email_on else (), rule_docs_url=docs, registry_logs_workspace=workspace,
        logs_query_endpoint=query_endpoint)


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _registry_logs(get: Any, degraded: list[tuple[str, str]]) -> tuple[str, str]:
    """DLP_REGISTRY_LOGS_WORKSPACE + DLP_LOGS_QUERY_ENDPOINT -> (workspace ID, endpoint); ("", default) when unset or
    unusable (the pulls of exposure windows are then recorded as unknown, nothing else changes).

    azure-monitor-query keeps only scheme and host of an endpoint that ends in `/v1` (and uses that as the token
    audience); any other path would be kept and `/v1` appended, so the endpoint must be a host, optionally `/v1`."""
    from urllib.parse import urlsplit

    found: list[tuple[str, str]] = []
    default = BY_NAME["DLP_LOGS_QUERY_ENDPOINT"].default
    workspace = get("DLP_REGISTRY_LOGS_WORKSPACE")
    if _unresolved(workspace):
        found.append(("DLP_REGISTRY_LOGS_WORKSPACE", "is an unresolved Key Vault reference"))
    elif workspace and not _GUID.match(workspace):
        found.append(("DLP_REGISTRY_LOGS_WORKSPACE", "must be a workspace ID (a GUID: the workspace's Overview page), "
                                                      "not its name or resource ID"))
    endpoint = _https_url("DLP_LOGS_QUERY_ENDPOINT", get("DLP_LOGS_QUERY_ENDPOINT"), found) or ""
    if (endpoint and urlsplit(endpoint).path.rstrip("/") not in ("", "/v1")) or "?" in endpoint:
        found.append(("DLP_LOGS_QUERY_ENDPOINT", "must be https://<host> or https://<host>/v1"))
    if not _group(degraded, found):
        return "", default
    return workspace.lower(), (endpoint or default).rstrip("/")


def _alert_limits(get: Any, degraded: list[tuple[str, str]]) -> dict[str, Any]:
    """The grouping window and caps; an unusable value is reported and its default used (alerts go on)."""
    values = []
    for name in ALERT_LIMITS:
        low, high = BOUNDS[name]
        text = get(name)
        value = int(BY_NAME[name].default)
        try:
            value = int(text)
        except ValueError:
            degraded.append((name, "must be a whole number"))
        else:
            if not low <= value <= high:
                degraded.append((name, f"must be between {low} and {high}"))
                value = int(BY_NAME[name].default)
        values.append(value)
    return dict(alert_group_window_s=float(values[0]), alert_cap_per_registry=values[1],
                alert_cap_per_caller=values[2], alert_cap_window_min=values[3])


def _entries(name: str, text: str, problems: list[tuple[str, str]]) -> list[str]:
    """A comma-separated list. Set but empty (" , ") is a mistake, not "none" / "everywhere"."""
    entries = _csv(text)
    if _unresolved(text):
        problems.append((name, "is an unresolved Key Vault reference"))
        return []
    if text.strip() and not entries:
        problems.append((name, "is set but lists nothing; remove the setting, or list at least one ID"))
    return entries


def load(environ: Mapping[str, str]) -> Settings:
    """Parse the environment once. Settings that decide what is enforced raise ConfigError naming every bad one;
    settings that only feed an output turn that output off and are listed in `Settings.degraded`."""
    problems: list[tuple[str, str]] = []
    degraded: list[tuple[str, str]] = []

    def get(name: str) -> str:
        return str(environ.get(name, BY_NAME[name].default) or "").strip()

    mode = get("DLP_MODE").lower() or "audit"
    if mode not in MODES:
        problems.append(("DLP_MODE", f"must be one of {', '.join(MODES)}, not {mode[:40]!r}"))

    scopes = []
    for entry in _entries("DLP_SCOPES", get("DLP_SCOPES"), problems):
        scope = entry.rstrip("/")
        if not SCOPE_RE.match(scope):
            problems.append(("DLP_SCOPES", f"{scope!r} is not a subscription or resource-group ID"))
        scopes.append(fold(scope))

    exemptions = []
    for entry in _entries("DLP_EXEMPTIONS", get("DLP_EXEMPTIONS"), problems):
        scope, _, until_text = entry.partition("@")
        until = None
        if "@" in entry and not until_text.strip():      # a pipeline variable that expanded to nothing
            problems.append(("DLP_EXEMPTIONS", f"{entry!r}: '@' without a date; write YYYY-MM-DD after it, "
                                               "or drop the '@' for an exemption with no end"))
        elif until_text:
            try:
                until = date.fromisoformat(until_text.strip())
            except ValueError:
                problems.append(("DLP_EXEMPTIONS", f"{entry!r}: date must be YYYY-MM-DD"))
        if not EXEMPTION_RE.match(scope.strip()):
            problems.append(("DLP_EXEMPTIONS", f"{scope!r} is not a registry or resource-group ID"))
        exemptions.append(Exemption(fold(scope.strip().rstrip("/")), until))

    exempt_tag = get("DLP_EXEMPT_TAG")
    if exempt_tag and not re.match(rf"^[^<>%&\\?/]{{1,{EXEMPT_TAG_MAX}}}$", exempt_tag):
        problems.append(("DLP_EXEMPT_TAG", "is not a valid tag name"))

    lockout_text = get("DLP_ALLOW_LOCKOUT").lower()
    if lockout_text not in ("true", "false", ""):
        problems.append(("DLP_ALLOW_LOCKOUT", "must be true or false"))

    def number(name: str, low: float, high: float, kind: type = int):
        text = get(name)
        try:
            value = kind(text)
        except ValueError:
            problems.append((name, f"must be a number, not {text[:40]!r}"))
            return kind(BY_NAME[name].default)
        if not low <= value <= high:
            problems.append((name, f"must be between {low:g} and {high:g}"))
        return value

    max_remediations = number("DLP_MAX_REMEDIATIONS", *BOUNDS["DLP_MAX_REMEDIATIONS"])
    budget = number("DLP_TIME_BUDGET_S", *BOUNDS["DLP_TIME_BUDGET_S"], float)

    arm = _https_url("DLP_ARM_ENDPOINT", get("DLP_ARM_ENDPOINT"), problems) or BY_NAME["DLP_ARM_ENDPOINT"].default
    schedule = get("DLP_SWEEP_SCHEDULE")
    schedule_problem = ncrontab_problem(schedule)
    if schedule_problem:
        problems.append(("DLP_SWEEP_SCHEDULE", schedule_problem))

    outputs = _outputs(get, degraded)
    alert_limits = _alert_limits(get, degraded)

    # Replay is a second chance for events Event Grid could not deliver: a bad value turns it off (the sweep
    # still finds their drift), it never stops enforcement
    deadletter, deadletter_account = dead_letter_container(get("DLP_DEADLETTER_CONTAINER"), degraded)

    if problems:
        raise ConfigError(problems, tuple(degraded))
    return Settings(
        mode=mode, scopes=tuple(scopes), exemptions=tuple(exemptions), exempt_tag=exempt_tag,
        allow_lockout=lockout_text == "true", max_remediations=int(max_remediations),
        time_budget_s=float(budget), arm_endpoint=arm.rstrip("/"), sweep_schedule=schedule,
        **outputs, **alert_limits, degraded=tuple(degraded),
        storage_connection_string=_storage(str(environ.get("AzureWebJobsStorage", "") or "")),
        storage_table_uri=str(environ.get("AzureWebJobsStorage__tableServiceUri", "") or ""),
        storage_queue_uri=str(environ.get("AzureWebJobsStorage__queueServiceUri", "") or ""),
        storage_blob_uri=str(environ.get("AzureWebJobsStorage__blobServiceUri", "") or ""),
        deadletter_container=deadletter, deadletter_account_url=deadletter_account,
        client_id=str(environ.get("AZURE_CLIENT_ID", "") or "").strip(),
    )
