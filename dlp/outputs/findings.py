"""The findings table, defined once: one row per rule result per evaluation, passes included.

infra/ (table `AcrDlpFindings_CL` and the DCR stream) is checked against `COLUMNS` by tests.
Delivery is at least once (the Logs Ingestion API has no idempotency key), so every row
carries `EvaluationId` + `RuleId`, the key the queries in infra/queries/ de-duplicate on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dlp import __version__
from dlp.domain.model import FAIL, PULLS_COUNTED, Evaluation, Pulls, parse_registry_id
from dlp.sanitize import clean

TABLE = "AcrDlpFindings_CL"
STREAM = "Custom-AcrDlpFindings"


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # Log Analytics column type: string, datetime, dynamic, boolean, int, real
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("TimeGenerated", "datetime", "When the evaluation started (UTC); for a row recorded again by a later pull "
                                        "look (same EvaluationId), when that look ran: the newest row wins."),
    Column("EvaluationId", "string", "One evaluation of one registry; with RuleId, the de-duplication key."),
    Column("RegistryId", "string", "ARM ID of the registry."),
    Column("RegistryName", "string", "Registry name."),
    Column("SubscriptionId", "string", "Subscription of the registry."),
    Column("ResourceGroup", "string", "Resource group of the registry."),
    Column("Sku", "string", "Basic, Standard or Premium."),
    Column("RuleId", "string", "Stable rule ID, e.g. DLP.ACR.ExportPolicy; '-' for an evaluation with no findings."),
    Column("Severity", "string", "high, medium or low."),
    Column("Status", "string", "pass, fail, not-applicable or unknown."),
    Column("Message", "string", "What was found and what is required."),
    Column("Compliant", "boolean", "No finding of this evaluation failed; empty when the registry could not be read."),
    Column("Trigger", "string", "event, http, sweep, cli, retry (the durable retry) or dead-letter "
                                "(a replayed dead-lettered event)."),
    Column("EventId", "string", "Event Grid event ID, when an event triggered the evaluation."),
    Column("CorrelationId", "string", "ARM correlation ID of the write that raised the event."),
    Column("Caller", "string", "Who made the write: the UPN, else unique_name, else app:<app ID>, else "
                               "object:<object ID> (never the free-text display name). For Trigger=http: who requested "
                               "the re-check."),
    Column("CallerIpAddress", "string", "Client IP address of the write."),
    Column("CallerName", "string", "The caller's display name (the token's free-text name claim, chosen by the caller)."),
    Column("CallerObjectId", "string", "Object ID of the caller."),
    Column("CallerAppId", "string", "Application (client) ID the caller used."),
    Column("CallerTenantId", "string", "Tenant ID of the caller."),
    Column("CallerVerified", "boolean", "The caller comes from ARM's claims, or from App Service Authentication for "
                                        "a re-check; false: a header anyone could send."),
    Column("OperationName", "string", "ARM operation, e.g. Microsoft.ContainerRegistry/registries/write."),
    Column("AnsweredEvents", "dynamic", "Other events this evaluation answered (a burst for one registry read "
                                        "once): a list of {eventId, caller}; empty for a single event."),
    Column("Mode", "string", "audit or enforce."),
    Column("Action", "string", "Remediation outcome: none, would-remediate, remediated, blocked, failed, exempt, "
                               "error, gone, deferred; or exposure (a window found in change history)."),
    Column("ActionReason", "string", "Guard or error code behind the action, e.g. export-pipelines."),
    Column("ActionDetail", "string", "What a human must do, or what happened."),
    Column("Changes", "dynamic", "Property -> {old, new} written or planned."),
    Column("Attempt", "int", "Durable-retry attempt (0 for the first)."),
    Column("DeadLetterReason", "string", "For a replayed dead-lettered event (Trigger dead-letter): Event Grid's "
                                         "deadLetterReason, e.g. MaxDeliveryAttemptsExceeded."),
    Column("ReplayDelaySeconds", "int", "For a replayed dead-lettered event: seconds from the event to its replay."),
    Column("DurationMs", "real", "Time the evaluation took."),
    Column("ResponderVersion", "string", "Version of the responder that wrote the row."),
    Column("ExposureOpenedAt", "datetime", "When the registry became open (change history, else the event time); "
                                           "empty when unknown or not an exposure."),
    Column("ExposureClosedAt", "datetime", "When it was closed again (empty while still open)."),
    Column("ExposureSeconds", "real", "Seconds it was open (empty when a bound is unknown)."),
    Column("ExposureOpenedBy", "string", "Who opened it (change history's changedBy, or the event's caller)."),
    Column("ExposureClosedBy", "string", "Who closed it: 'responder', or the change history's changedBy."),
    Column("ExposurePulls", "int", "Pull operations inside the window, from the registry's resource logs "
                                   "(ContainerRegistryRepositoryEvents); empty, never 0, when the logs were not read "
                                   "(not yet, failed, or DLP_REGISTRY_LOGS_WORKSPACE not set: see ExposurePullsNote)."),
    Column("ExposurePullDetails", "dynamic", "Up to 20 of those pulls, oldest first: a list of {time, repository, "
                                             "reference (:tag or @digest), identity, callerIp}."),
    Column("ExposurePullsNote", "string", "What is known of the pulls: counted, unknown: <why>, pending (the first look "
                                          "is due at ...), off; and the alert's sentence."),
)

COLUMN_NAMES = tuple(c.name for c in COLUMNS)

# Custom-table column rules, from Microsoft's "Add or delete tables and columns in Azure Monitor Logs"
# (learn.microsoft.com/azure/azure-monitor/logs/create-custom-table, section "Add or delete a custom
# column"): start with an ASCII letter, then letters, digits or underscores, 2 to 45 characters, and
# none of the system or reserved names listed there: id, BilledSize, IsBillable, InvalidTimeGenerated,
# TenantId, Title, Type, UniqueId, _ItemId, _ResourceGroup, _ResourceId, _SubscriptionId, _TimeReceived.
# Also refused here: the other standard columns Log Analytics fills itself ("Standard columns in Azure
# Monitor Logs", learn.microsoft.com/azure/azure-monitor/logs/log-standard-columns: _IsBillable,
# _BilledSize), the columns classic (HTTP Data Collector / agent) custom-log tables carry (SourceSystem,
# MG, ManagementGroupName, Computer, RawData), and `Date`, which the AzLogDcrIngestPS module's
# ProhibitedColumnNames list refuses. Compared without case: Auxiliary tables refuse names that differ
# only in case, and such names confuse every query.
RESERVED_COLUMN_NAMES = frozenset(name.lower() for name in (
    "id", "BilledSize", "IsBillable", "InvalidTimeGenerated", "TenantId", "Title", "Type", "UniqueId",
    "_ItemId", "_ResourceGroup", "_ResourceId", "_SubscriptionId", "_TimeReceived",
    "_IsBillable", "_BilledSize", "SourceSystem", "MG", "ManagementGroupName", "Computer", "RawData", "Date",
))
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,44}$")
COLUMN_TYPES = ("string", "datetime", "dynamic", "boolean", "int", "long", "real", "guid")
_OUTSIDE_TEXT = ("EventId", "CorrelationId", "Caller", "CallerIpAddress", "CallerName", "CallerObjectId", "CallerAppId",
                 "CallerTenantId", "OperationName", "ActionReason")
MAX_TEXT = 8000        # characters kept of a free-text value (a message is a sentence, not a document)


def column_name_problems(name: str) -> list[str]:
    """Why `name` cannot be a custom-table column (empty when it can)."""
    problems = []
    if not _COLUMN_NAME.match(name):
        problems.append("must start with an ASCII letter, then 1 to 44 letters, digits or underscores")
    if name.lower() in RESERVED_COLUMN_NAMES:
        problems.append("is a reserved Log Analytics column name")
    return problems


def markdown_columns() -> str:
    """The column table of docs/operations.md, generated from COLUMNS (tests/test_findings.py keeps it in step)."""
    lines = ["| Column | Type | Description |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.description.replace('|', '/')} |" for c in COLUMNS]
    return "\n".join(lines)


def rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The rows of one evaluation, in rule order; an evaluation without findings (gone, error) still gets one row.

    Every value is plain JSON (the SDK serialises with `json.dumps`, which refuses datetimes):
    times are ISO 8601 strings, `Changes` a mapping of property -> {old, new}.
    """
    context = evaluation.context
    assessment = evaluation.assessment
    registry = assessment.registry if assessment is not None else None
    parts = parse_registry_id(evaluation.registry_id) or ("", "", evaluation.registry_name)
    outcome = evaluation.outcome
    base: dict[str, Any] = {
        "TimeGenerated": iso8601(evaluation.started_at),
        "EvaluationId": evaluation.evaluation_id,
        "RegistryId": evaluation.registry_id,
        "RegistryName": evaluation.registry_name,
        "SubscriptionId": parts[0],
        "ResourceGroup": parts[1],
        "Sku": registry.sku if registry is not None else "",
        "Compliant": evaluation.compliant,
        "Trigger": context.trigger,
        "EventId": context.event_id,
        "CorrelationId": context.correlation_id,
        "Caller": context.caller,
        "CallerIpAddress": context.caller_ip,
        "CallerName": context.caller_name,
        "CallerObjectId": context.caller_object_id,
        "CallerAppId": context.caller_app_id,
        "CallerTenantId": context.caller_tenant_id,
        "CallerVerified": context.caller_verified if context.caller else None,
        "OperationName": context.operation_name,
        "AnsweredEvents": [{"eventId": c.event_id, "caller": c.caller} for c in evaluation.answered],
        "Mode": evaluation.mode,
        "Action": outcome.action,
        "ActionReason": outcome.reason,
        "ActionDetail": _text(" ".join([outcome.detail, *(f"Warning: {w}." for w in evaluation.warnings)]).strip()),
        "Changes": {c.property: {"old": c.old, "new": c.new} for c in outcome.changes},
        "Attempt": context.attempt,
        "DeadLetterReason": context.dead_letter_reason,
        "ReplayDelaySeconds": context.replay_delay_s,
        "DurationMs": evaluation.duration_ms,
        "ResponderVersion": __version__,
        **exposure_columns(evaluation),
    }
    # texts that carry outside input (claims, headers, tag values, ARM messages): one clean line each
    # (dlp/sanitize.py); IDs and names were validated by pattern on the way in
    for key in _OUTSIDE_TEXT:
        base[key] = clean(base[key])
    findings = assessment.findings if assessment is not None else ()
    if not findings and evaluation.exposure is not None and evaluation.exposure.rule_id:
        # an exposure evaluation: one row for the window, under the rule of the property that was open
        return [{**base, "RuleId": evaluation.exposure.rule_id, "Severity": "high", "Status": FAIL,
                 "Message": _text(evaluation.exposure.sentence)}]
    if not findings:
        return [{**base, "RuleId": "-", "Severity": "", "Status": "", "Message": _text(outcome.detail)}]
    return [{**base, "RuleId": f.rule_id, "Severity": f.severity, "Status": f.status, "Message": _text(f.message)}
            for f in findings]


def exposure_columns(evaluation: Evaluation) -> dict[str, Any]:
    """The Exposure* columns: null datetimes and seconds when there is no window (Log Analytics takes null)."""
    window = evaluation.exposure
    if window is None:
        return {"ExposureOpenedAt": None, "ExposureClosedAt": None, "ExposureSeconds": None,
                "ExposureOpenedBy": "", "ExposureClosedBy": "", **pull_columns(None)}
    return {"ExposureOpenedAt": window.opened_at or None, "ExposureClosedAt": window.closed_at or None,
            "ExposureSeconds": window.seconds, "ExposureOpenedBy": window.opened_by,
            "ExposureClosedBy": window.closed_by, **pull_columns(window.pulls)}


def pull_columns(pulls: Pulls | None) -> dict[str, Any]:
    """ExposurePulls (None unless counted: an unknown is never a zero), ExposurePullDetails, ExposurePullsNote."""
    if pulls is None:
        return {"ExposurePulls": None, "ExposurePullDetails": None, "ExposurePullsNote": ""}
    counted = pulls.status == PULLS_COUNTED
    note = pulls.status + (f": {pulls.note}" if pulls.note else "") + (f" | {pulls.sentence}" if pulls.sentence else "")
    return {"ExposurePulls": pulls.count if counted else None,
            "ExposurePullDetails": [p.to_json() for p in pulls.details] if counted else None,
            "ExposurePullsNote": _text(note)}


def iso8601(value: str | datetime) -> str:
    """An ISO 8601 UTC string for TimeGenerated, whether the evaluation holds a string or a datetime."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).isoformat()
    return value


def _text(value: str) -> str:
    value = clean(value)
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
