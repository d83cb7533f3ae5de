"""The catalogue of app settings: every name the responder reads, its default, its meaning, where it is set, and
the limits infra/ must carry too. dlp.settings parses them; docs/operations.md, `local.settings.sample.json` and
infra/ are checked against this list by tests.
"""

from __future__ import annotations

from dataclasses import dataclass

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
