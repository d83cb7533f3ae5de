"""Helpers shared by the alert tests: evaluations in each alert state, and notifiers wired to
the emulators and Azurite the way dlp.runtime wires them (real SDK clients, nothing patched)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

from dlp.domain.model import (
    A_BLOCKED,
    A_DEFERRED,
    A_ERROR,
    A_EXEMPT,
    A_FAILED,
    A_GONE,
    A_NONE,
    A_REMEDIATED,
    A_WOULD,
    Change,
    Context,
    Evaluation,
    Outcome,
    Registry,
)
from dlp.domain.remediation import R_AUDIT, R_BREAKER, R_NO_PRIVATE_ENDPOINT, R_PIPELINES, R_TAG_EXEMPTION
from dlp.domain.rules import evaluate
from dlp.outputs.alerting import AlertNotifier
from dlp.outputs.alerts.acs import EmailChannel
from dlp.outputs.alerts.store import TableAlertStore
from dlp.outputs.alerts.teams import TeamsChannel
from dlp.outputs.outbox import Outbox

SUB = "00000000-0000-0000-0000-0000000000a1"
CHANGES = (Change("publicNetworkAccess", "Enabled", "Disabled"), Change("policies.exportPolicy.status", "enabled",
                                                                        "disabled"))
CALLER = Context(trigger="event", event_id="ev-1", caller="mallory@contoso.com", caller_ip="203.0.113.7",
                 correlation_id="5f1c9e0a-0000-4000-8000-000000000001", event_time="2026-03-01T10:00:00+00:00")


def registry_id(name: str, rg: str = "rg-dlp") -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"


def unique_name(prefix: str = "acr") -> str:
    return prefix + uuid.uuid4().hex[:12]


def drifted(rid: str) -> Registry:
    return Registry(id=rid, name=rid.rsplit("/", 1)[-1], export_policy="enabled", public_network_access="Enabled",
                    export_pipelines=())


def locked(rid: str) -> Registry:
    return Registry(id=rid, name=rid.rsplit("/", 1)[-1], export_policy="disabled", public_network_access="Disabled",
                    network_default_action="Deny", network_bypass_options="None", data_endpoint_enabled=True)


def evaluation(rid: str, state: str, *, context: Context = CALLER, mode: str = "", **outcome_fields) -> Evaluation:
    """An Evaluation as the pipeline would produce it for each alert state (real rule results);
    would-remediate only happens in audit mode, everything else is shown in enforce mode."""
    mode = mode or ("audit" if state == "non-compliant" else "enforce")
    bad, good = evaluate(drifted(rid)), evaluate(locked(rid))
    outcomes = {
        "compliant": (Outcome(A_NONE), good),
        "non-compliant": (Outcome(A_WOULD, R_AUDIT, "audit mode: set DLP_MODE=enforce to revert automatically",
                                  CHANGES), bad),
        "remediated": (Outcome(A_REMEDIATED, "", "reverted", CHANGES), bad),
        "blocked": (Outcome(A_BLOCKED, R_NO_PRIVATE_ENDPOINT, "add and approve a private endpoint first", CHANGES), bad),
        "pipelines": (Outcome(A_BLOCKED, R_PIPELINES, "delete export pipeline(s) nightly, then re-check", CHANGES), bad),
        "breaker": (Outcome(A_BLOCKED, R_BREAKER, "remediated 3 times in the last hour: someone keeps changing it back",
                            CHANGES), bad),
        "failed": (Outcome(A_FAILED, "RequestDisallowedByPolicy", "HTTP 403 RequestDisallowedByPolicy: denied", CHANGES,
                           "RequestDisallowedByPolicy"), bad),
        "error": (Outcome(A_ERROR, "AuthorizationFailed", "HTTP 403 AuthorizationFailed: no read permission",
                          error_code="AuthorizationFailed"), None),
        "tag-exempt": (Outcome(A_EXEMPT, R_TAG_EXEMPTION, "tag dlp-exempt=true", CHANGES), bad),
        "exempt": (Outcome(A_EXEMPT, "exemption", "DLP_EXEMPTIONS lists the registry with no end date", CHANGES), bad),
        "deferred": (Outcome(A_DEFERRED, "BudgetExhausted", "retry later"), None),
        "gone": (Outcome(A_GONE, "deleted", "the registry no longer exists"), None),
    }
    outcome, assessment = outcomes[state]
    if outcome_fields:
        outcome = replace(outcome, **outcome_fields)
    return Evaluation(str(uuid.uuid4()), rid, context, mode, outcome, assessment,
                      started_at="2026-03-01T10:00:01+00:00", tag_exemption=state == "tag-exempt",
                      recent_callers=("mallory@contoso.com",) if state == "breaker" else ())


def table_name(prefix: str) -> str:
    """A fresh table per test: Azurite is shared by the whole run."""
    return prefix + uuid.uuid4().hex[:16]


def tables(connection_string: str):
    """The app's TableServiceClient, built exactly as dlp.runtime builds it."""
    from dlp.azure.state import table_service
    from dlp.settings import load

    return table_service(load({"AzureWebJobsStorage": connection_string}), None)


def notifier(service, *, teams_url: str = "", email=None, state_table: str = "", outbox_table: str = "",
             credential=None) -> tuple[AlertNotifier, Outbox]:
    """An AlertNotifier on Azurite tables of its own; `email` = (endpoint, sender, recipients)."""
    channels = []
    if teams_url:
        channels.append(TeamsChannel(teams_url))
    if email:
        endpoint, sender, recipients = email
        channels.append(EmailChannel(endpoint, credential, sender, recipients))
    outbox = Outbox(service, outbox_table or table_name("outbox"))
    return AlertNotifier(TableAlertStore(service, state_table or table_name("state")), channels, outbox), outbox


class ReadTogether(TableAlertStore):
    """Both instances read the row before either commits: the race the ETag must settle."""

    def __init__(self, service, table, barrier: threading.Barrier):
        super().__init__(service, table)
        self._barrier: threading.Barrier | None = barrier
        self.lost = 0

    def get(self, registry_id):
        stored = super().get(registry_id)
        barrier, self._barrier = self._barrier, None     # only the first read waits for the other instance
        if barrier is not None:
            barrier.wait(timeout=10)
        return stored

    def commit(self, registry_id, previous, new, keep=(), **claim):
        committed = super().commit(registry_id, previous, new, keep, **claim)
        self.lost += committed is None
        return committed


def racing_instances(connection_string: str, teams_url: str, state_table: str,
                     outbox_table: str = "") -> list[tuple[AlertNotifier, ReadTogether]]:
    """Two app instances (own Table clients, own notifiers) on one alert-state table, reading it together."""
    barrier = threading.Barrier(2)
    instances = []
    for _ in range(2):
        service = tables(connection_string)
        store = ReadTogether(service, state_table, barrier)
        instances.append((AlertNotifier(store, [TeamsChannel(teams_url)],
                                        Outbox(service, outbox_table or table_name("outbox"))), store))
    return instances
