"""The findings table, defined once: one row per rule result per evaluation, passes included.

infra/ (table `AcrDlpFindings_CL` and the DCR stream) is checked against `COLUMNS` by tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlp import __version__
from dlp.model import Evaluation

TABLE = "AcrDlpFindings_CL"
STREAM = "Custom-AcrDlpFindings"


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # Log Analytics column type: string, datetime, dynamic, boolean, int, real
    description: str


COLUMNS: tuple[Column, ...] = (
    Column("TimeGenerated", "datetime", "When the evaluation started (UTC)."),
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
    Column("Compliant", "boolean", "No finding of this evaluation failed."),
    Column("Trigger", "string", "event, http, sweep or cli."),
    Column("EventId", "string", "Event Grid event ID, when an event triggered the evaluation."),
    Column("CorrelationId", "string", "ARM correlation ID of the write that raised the event."),
    Column("Caller", "string", "Who made the write (UPN, name, app ID or object ID)."),
    Column("CallerIpAddress", "string", "Client IP address of the write."),
    Column("OperationName", "string", "ARM operation, e.g. Microsoft.ContainerRegistry/registries/write."),
    Column("Mode", "string", "audit or enforce."),
    Column("Action", "string", "Remediation outcome: none, would-remediate, remediated, blocked, failed, exempt, "
                               "error, gone, deferred."),
    Column("ActionReason", "string", "Guard or error code behind the action, e.g. export-pipelines."),
    Column("ActionDetail", "string", "What a human must do, or what happened."),
    Column("Changes", "dynamic", "Property -> {old, new} written or planned."),
    Column("Attempt", "int", "Durable-retry attempt (0 for the first)."),
    Column("DurationMs", "real", "Time the evaluation took."),
    Column("ResponderVersion", "string", "Version of the responder that wrote the row."),
)

COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The rows of one evaluation; an evaluation without findings (gone, error) still gets one row."""
    context = evaluation.context
    assessment = evaluation.assessment
    registry = assessment.registry if assessment is not None else None
    from dlp.model import parse_registry_id

    parts = parse_registry_id(evaluation.registry_id) or ("", "", evaluation.registry_name)
    outcome = evaluation.outcome
    base = {
        "TimeGenerated": evaluation.started_at,
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
        "OperationName": context.operation_name,
        "Mode": evaluation.mode,
        "Action": outcome.action,
        "ActionReason": outcome.reason,
        "ActionDetail": outcome.detail,
        "Changes": {c.property: {"old": c.old, "new": c.new} for c in outcome.changes},
        "Attempt": context.attempt,
        "DurationMs": evaluation.duration_ms,
        "ResponderVersion": __version__,
    }
    findings = assessment.findings if assessment is not None else ()
    if not findings:
        return [{**base, "RuleId": "-", "Severity": "", "Status": "", "Message": outcome.detail}]
    return [{**base, "RuleId": f.rule_id, "Severity": f.severity, "Status": f.status, "Message": f.message}
            for f in findings]
