"""The findings schema (dlp/outputs/findings.py): column names Log Analytics accepts, rows that match the columns,
and KQL that de-duplicates on the at-least-once delivery key."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dlp import __version__
from dlp.domain.model import (
    A_GONE,
    A_REMEDIATED,
    ENABLED,
    EXPORT_ENABLED,
    Change,
    Context,
    Evaluation,
    Outcome,
    Registry,
)
from dlp.domain.rules import evaluate, rules
from dlp.outputs import findings

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "infra" / "queries"
REG_ID = ("/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/rg-prod/providers/"
          "Microsoft.ContainerRegistry/registries/acrprod")


def drifted_evaluation(**overrides) -> Evaluation:
    registry = Registry(id=REG_ID, name="acrprod", sku="Premium", export_policy=EXPORT_ENABLED,
                        public_network_access=ENABLED)
    values = dict(
        evaluation_id="6f1c7a52-0b7e-4a0c-9a57-1f2d3c4b5a69", registry_id=REG_ID,
        context=Context(trigger="event", event_id="evt-1", correlation_id="corr-1", caller="alice@contoso.com",
                        caller_ip="203.0.113.7", operation_name="Microsoft.ContainerRegistry/registries/write"),
        mode="enforce",
        outcome=Outcome(A_REMEDIATED, "", "reverted", (Change("publicNetworkAccess", "Enabled", "Disabled"),)),
        assessment=evaluate(registry), started_at="2026-05-01T10:00:00.123456+00:00", duration_ms=412.5)
    values.update(overrides)
    return Evaluation(**values)


# --- column names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", findings.COLUMNS, ids=lambda c: c.name)
def test_every_column_obeys_the_custom_table_rules(column: findings.Column):
    assert findings.column_name_problems(column.name) == []
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{1,44}", column.name)
    assert column.name.lower() not in findings.RESERVED_COLUMN_NAMES
    assert column.type in findings.COLUMN_TYPES
    assert column.description


@pytest.mark.parametrize("name, why", [
    ("Type", "reserved"), ("type", "reserved"), ("TenantId", "reserved"), ("tenantid", "reserved"),
    ("_ResourceId", "letter"), ("id", "reserved"), ("SourceSystem", "reserved"), ("MG", "reserved"),
    ("_TimeReceived", "letter"), ("Title", "reserved"), ("UniqueId", "reserved"), ("Date", "reserved"),
    ("1stRule", "letter"), ("A", "letter"), ("A" * 46, "letter"), ("Rule-Id", "letter"), ("Rule Id", "letter"),
    ("Régistry", "letter"), ("Rule.Id", "letter"),
])
def test_the_name_check_refuses_what_log_analytics_refuses(name: str, why: str):
    problems = findings.column_name_problems(name)
    assert problems, name
    assert any(why in p for p in problems), problems


def test_column_names_are_unique_without_case_and_time_generated_is_a_datetime():
    lowered = [c.name.lower() for c in findings.COLUMNS]
    assert len(lowered) == len(set(lowered))
    by_name = {c.name: c for c in findings.COLUMNS}
    assert by_name["TimeGenerated"].type == "datetime"
    assert by_name["Changes"].type == "dynamic"
    for required in ("EvaluationId", "RegistryId", "RegistryName", "SubscriptionId", "ResourceGroup", "Sku", "RuleId",
                     "Severity", "Status", "Message", "Trigger", "EventId", "CorrelationId", "Caller",
                     "OperationName", "Mode", "Action", "ActionReason", "Changes", "ResponderVersion"):
        assert required in by_name, required


# --- rows ----------------------------------------------------------------------------------------------


def test_one_row_per_rule_with_exactly_the_declared_columns():
    evaluation = drifted_evaluation()
    rows = findings.rows(evaluation)
    assert [r["RuleId"] for r in rows] == [rule.id for rule in rules()]
    for row in rows:
        assert tuple(sorted(row)) == tuple(sorted(findings.COLUMN_NAMES))
    first = rows[0]
    assert first == {
        "TimeGenerated": "2026-05-01T10:00:00.123456+00:00",
        "EvaluationId": "6f1c7a52-0b7e-4a0c-9a57-1f2d3c4b5a69",
        "RegistryId": REG_ID,
        "RegistryName": "acrprod",
        "SubscriptionId": "00000000-0000-0000-0000-0000000000a1",
        "ResourceGroup": "rg-prod",
        "Sku": "Premium",
        "RuleId": "DLP.ACR.ExportPolicy",
        "Severity": "high",
        "Status": "fail",
        "Message": evaluation.assessment.finding("DLP.ACR.ExportPolicy").message,
        "Compliant": False,
        "Trigger": "event",
        "EventId": "evt-1",
        "CorrelationId": "corr-1",
        "Caller": "alice@contoso.com",
        "CallerIpAddress": "203.0.113.7",
        "CallerName": "",
        "CallerObjectId": "",
        "CallerAppId": "",
        "CallerTenantId": "",
        "CallerVerified": False,
        "OperationName": "Microsoft.ContainerRegistry/registries/write",
        "AnsweredEvents": [],
        "Mode": "enforce",
        "Action": "remediated",
        "ActionReason": "",
        "ActionDetail": "reverted",
        "Changes": {"publicNetworkAccess": {"old": "Enabled", "new": "Disabled"}},
        "Attempt": 0,
        "DeadLetterReason": "",
        "ReplayDelaySeconds": 0,
        "DurationMs": 412.5,
        "ResponderVersion": __version__,
        "ExposureOpenedAt": None, "ExposureClosedAt": None, "ExposureSeconds": None, "ExposureOpenedBy": "",
        "ExposureClosedBy": "", "ExposurePulls": None, "ExposurePullDetails": None, "ExposurePullsNote": "",
    }


def test_rows_are_plain_json_as_the_sdk_serialises_them():
    rows = findings.rows(drifted_evaluation())
    assert json.loads(json.dumps(rows)) == rows      # the SDK calls json.dumps: no datetime, no objects


def test_a_datetime_start_becomes_an_iso_string_in_utc():
    started = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    row = findings.rows(drifted_evaluation(started_at=started))[0]
    assert row["TimeGenerated"] == "2026-05-01T10:00:00+00:00"
    naive = findings.rows(drifted_evaluation(started_at=datetime(2026, 5, 1, 10, 0)))[0]
    assert naive["TimeGenerated"] == "2026-05-01T10:00:00+00:00"


def test_an_evaluation_without_findings_still_gets_one_row():
    gone = drifted_evaluation(assessment=None, outcome=Outcome(A_GONE, "deleted", "the registry no longer exists"))
    (row,) = findings.rows(gone)
    assert row["RuleId"] == "-"
    assert row["Status"] == "" and row["Severity"] == "" and row["Sku"] == ""
    assert row["Compliant"] is None
    assert row["Action"] == "gone" and row["Message"] == "the registry no longer exists"
    assert row["RegistryName"] == "acrprod" and row["ResourceGroup"] == "rg-prod"
    assert tuple(sorted(row)) == tuple(sorted(findings.COLUMN_NAMES))


def test_free_text_is_capped():
    long = drifted_evaluation(outcome=Outcome("failed", "X", "y" * 50_000))
    row = findings.rows(long)[0]
    assert len(row["ActionDetail"]) == findings.MAX_TEXT
    assert row["ActionDetail"].endswith("…")


# --- the operator queries -----------------------------------------------------------------------------

EXPECTED_QUERIES = ("noncompliant-registries.kql", "drift-over-time.kql", "remediations.kql",
                    "blocked-remediations.kql", "revert-wars.kql")


@pytest.mark.parametrize("name", EXPECTED_QUERIES)
def test_each_query_reads_the_table_and_deduplicates_on_evaluation_and_rule(name: str):
    text = (QUERIES / name).read_text()
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    assert findings.TABLE in code
    assert re.search(r"summarize\s+arg_max\(\s*TimeGenerated\s*,\s*\*\s*\)\s+by\s+EvaluationId\s*,\s*RuleId", code), name
    assert text.lstrip().startswith("//"), "every query starts with a comment saying what it answers"


@pytest.mark.parametrize("name", EXPECTED_QUERIES)
def test_no_query_folds_registry_ids_beyond_a_to_z(name: str):
    """tolower()/toupper() fold "\u212a" (Kelvin sign) to k: a look-alike resource group's registry would merge
    into another's line (and could hide it). IDs are compared A-Z folded only, as ARM and dlp/ids.py do."""
    code = "\n".join(line.split("//", 1)[0] for line in (QUERIES / name).read_text().splitlines())
    assert not re.search(r"\bto(lower|upper)\s*\(\s*RegistryId", code), name


@pytest.mark.parametrize("name", EXPECTED_QUERIES)
def test_each_query_uses_only_columns_of_the_table(name: str):
    """Identifiers that look like columns (CamelCase words used as `Name ==`, `by Name`, `project Name`) must be
    columns of COLUMNS or names the query itself defines (let, extend, summarize aliases)."""
    text = (QUERIES / name).read_text()
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    code = re.sub(r'"[^"]*"', '""', code)
    defined = set(re.findall(r"\blet\s+(\w+)", code)) | set(re.findall(r"\b([A-Za-z]\w*)\s*=(?!=)", code))
    used = set(re.findall(r"\b([A-Z][A-Za-z0-9]+)\b", code))
    unknown = used - set(findings.COLUMN_NAMES) - defined - {findings.TABLE}
    assert not unknown, f"{name}: {sorted(unknown)}"


# --- docs/operations.md documents the table, the settings and the queries -------------------------------------------


def readme_section(heading: str) -> str:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/operations.md has no '## {heading}' section"
    return match.group(1)


def test_readme_column_table_is_generated_from_columns():
    assert findings.markdown_columns() in readme_section("Log Analytics")


def test_readme_names_the_settings_and_every_query():
    text = readme_section("Log Analytics")
    for setting in ("DLP_LOGS_ENDPOINT", "DLP_LOGS_RULE_ID", "DLP_LOGS_STREAM"):
        assert f"`{setting}`" in text
    listed = set(re.findall(r"`([\w-]+\.kql)`", text))
    assert listed == {p.name for p in QUERIES.glob("*.kql")} == set(EXPECTED_QUERIES)
