"""Every app setting the responder reads: one list, parsed and validated once.

The list is the source of truth: the settings table in docs/operations.md, `local.settings.sample.json`
and `infra/` are checked against it by tests (tests/test_settings_agree.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from dlp.domain.formats import CONTAINER_RE, dead_letter_container, ncrontab_problem
from dlp.domain.remediation import Exemption, Policy
from dlp.ids import RESOURCE_GROUP, fold
from dlp.settings.catalogue import (
    ALERT_LIMITS,
    BOUNDS,
    BY_NAME,
    CHOICES,
    EXEMPT_TAG_MAX,
    KINDS,
    MODES,
    OUTBOX_TABLE,
    OUTPUT_OF,
    RETRY_QUEUE,
    SETTINGS,
    STATE_TABLE,
    Setting,
    turned_off,
)
from dlp.settings.outputs import csv_list, https_url, parse_alert_limits, parse_outputs, unresolved

# Case-insensitive, but ASCII-only outside the resource-group name (`(?a:...)`): under re.IGNORECASE alone
# "/\u017fubscriptions/" (long s) or a registry name with a Kelvin sign would pass.
_SUB = r"(?a:/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
_RG = _SUB + r"(?a:/resourceGroups/)" + RESOURCE_GROUP
_REG = _RG + r"(?a:/providers/Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50})"
SCOPE_RE = re.compile(rf"^{_SUB}(?:(?a:/resourceGroups/){RESOURCE_GROUP})?$", re.IGNORECASE)
EXEMPTION_RE = re.compile(rf"^(?:{_REG}|{_RG})$", re.IGNORECASE)

# Re-exported: the catalogue (dlp.settings.catalogue) and the formats (dlp.domain.formats) are read through here.
__all__ = ["ALERT_LIMITS", "BOUNDS", "BY_NAME", "CHOICES", "CONTAINER_RE", "EXEMPT_TAG_MAX", "KINDS", "MODES",
           "OUTBOX_TABLE", "OUTPUT_OF", "RETRY_QUEUE", "SETTINGS", "STATE_TABLE", "ConfigError", "Setting", "Settings",
           "load", "ncrontab_problem", "turned_off"]


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





def _entries(name: str, text: str, problems: list[tuple[str, str]]) -> list[str]:
    """A comma-separated list. Set but empty (" , ") is a mistake, not "none" / "everywhere"."""
    entries = csv_list(text)
    if unresolved(text):
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

    arm = https_url("DLP_ARM_ENDPOINT", get("DLP_ARM_ENDPOINT"), problems) or BY_NAME["DLP_ARM_ENDPOINT"].default
    schedule = get("DLP_SWEEP_SCHEDULE")
    schedule_problem = ncrontab_problem(schedule)
    if schedule_problem:
        problems.append(("DLP_SWEEP_SCHEDULE", schedule_problem))

    outputs = parse_outputs(get, degraded)
    alert_limits = parse_alert_limits(get, degraded)

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
