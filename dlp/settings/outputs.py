"""The optional outputs' settings (Log Analytics, Teams, email, rule docs, registry logs, alert grouping): a value that
cannot be used turns its output off (or its default on) and is reported, never stopping enforcement.
"""

from __future__ import annotations

import re
from typing import Any

from dlp.domain.formats import url_parses
from dlp.settings.catalogue import ALERT_LIMITS, BOUNDS, BY_NAME

KEY_VAULT_REFERENCE = "@microsoft.keyvault("


def unresolved(value: str) -> bool:
    """App Service hands a Key Vault reference it could not resolve (no access, wrong URI, vault firewall) to the
    app as the literal `@Microsoft.KeyVault(...)` text."""
    return value.strip().lower().startswith(KEY_VAULT_REFERENCE)


def https_url(name: str, value: str, problems: list[tuple[str, str]]) -> str:
    value = value.strip()
    if value and unresolved(value):
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


def parse_outputs(get: Any, degraded: list[tuple[str, str]]) -> dict[str, Any]:
    """Parse the settings that only feed an output (-> Settings fields). A bad one turns off its own output
    (each group is empty when any of its settings is unusable) and says why in `degraded`; it never stops
    enforcement, and never takes another output with it."""
    found: list[tuple[str, str]] = []
    logs_endpoint = https_url("DLP_LOGS_ENDPOINT", get("DLP_LOGS_ENDPOINT"), found)
    logs_rule_id = get("DLP_LOGS_RULE_ID")
    logs_stream = get("DLP_LOGS_STREAM")
    if unresolved(logs_rule_id):
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
    teams = https_url("DLP_TEAMS_WEBHOOK_URL", get("DLP_TEAMS_WEBHOOK_URL"), found)
    _group(degraded, found)

    found = []
    email_endpoint = https_url("DLP_EMAIL_ENDPOINT", get("DLP_EMAIL_ENDPOINT"), found)
    email_sender = get("DLP_EMAIL_SENDER")
    raw_to = get("DLP_EMAIL_TO")
    email_to = tuple(csv_list(raw_to))
    address = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")
    if email_sender and not address.match(email_sender):
        found.append(("DLP_EMAIL_SENDER", "is not an email address" if not unresolved(email_sender)
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
    docs = https_url("DLP_RULE_DOCS_URL", get("DLP_RULE_DOCS_URL"), found)
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
    if unresolved(workspace):
        found.append(("DLP_REGISTRY_LOGS_WORKSPACE", "is an unresolved Key Vault reference"))
    elif workspace and not _GUID.match(workspace):
        found.append(("DLP_REGISTRY_LOGS_WORKSPACE", "must be a workspace ID (a GUID: the workspace's Overview page), "
                                                      "not its name or resource ID"))
    endpoint = https_url("DLP_LOGS_QUERY_ENDPOINT", get("DLP_LOGS_QUERY_ENDPOINT"), found) or ""
    if (endpoint and urlsplit(endpoint).path.rstrip("/") not in ("", "/v1")) or "?" in endpoint:
        found.append(("DLP_LOGS_QUERY_ENDPOINT", "must be https://<host> or https://<host>/v1"))
    if not _group(degraded, found):
        return "", default
    return workspace.lower(), (endpoint or default).rstrip("/")


def parse_alert_limits(get: Any, degraded: list[tuple[str, str]]) -> dict[str, Any]:
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


def csv_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
