"""The time budget reaches every client: azure-core retries and the storage SDKs' per-attempt hook."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from azure.core.pipeline.transport import RequestsTransport

from dlp.azure.arm import ArmGateway
from dlp.azure.budget import Budget, BudgetExhausted, remaining
from dlp.azure.state import Remediation, TableState, table_service
from dlp.emulator.base import arm_error
from dlp.settings import load


def test_budget_is_per_thread_context():
    assert remaining() is None
    with Budget.of(5).active():
        assert 4 < remaining() <= 5
    assert remaining() is None


REGISTRY = "/subscriptions/x/resourceGroups/r/providers/Microsoft.ContainerRegistry/registries/abcde"


def test_storage_call_is_refused_when_the_budget_is_spent(azurite):
    state = TableState(table_service(load({"AzureWebJobsStorage": azurite}), None))
    assert state.recent_remediations(REGISTRY, datetime.now(timezone.utc)) == []      # works outside a budget
    with Budget.of(0.1).active(), pytest.raises(BudgetExhausted):
        state.record_remediation(REGISTRY, Remediation("2026-11-21T00:00:00+00:00", "", "e"))
    assert state.recent_remediations(REGISTRY, datetime(2026, 11, 21, 0, 30, tzinfo=timezone.utc)) == []


def test_retry_after_longer_than_the_budget_is_not_waited(azure_env):
    azure = azure_env
    reg = azure.arm.create("11111111-2222-3333-4444-555555555555", "rg", "acrbudget01")["id"]
    azure.arm.faults.add(method="GET", status=429, headers={"Retry-After": "60"}, times=None,
                         body=arm_error("TooManyRequests", "later"))
    gateway = ArmGateway(azure.arm.url, azure.credential(), transport=RequestsTransport())
    started = time.monotonic()
    with Budget.of(3).active(), pytest.raises(BudgetExhausted, match="does not fit the time budget"):
        gateway.get_registry(reg)
    assert time.monotonic() - started < 2


def test_hanging_arm_is_cut_at_the_budget(azure_env):
    from azure.core.exceptions import ServiceResponseError

    azure = azure_env
    reg = azure.arm.create("11111111-2222-3333-4444-555555555555", "rg", "acrbudget02")["id"]
    azure.arm.faults.add(method="GET", mode="hang", times=None)
    gateway = ArmGateway(azure.arm.url, azure.credential(), transport=RequestsTransport())
    started = time.monotonic()
    with Budget.of(2).active(), pytest.raises((BudgetExhausted, ServiceResponseError)):
        gateway.get_registry(reg)
    assert time.monotonic() - started < 2 + 1.5


def test_the_lro_poller_thread_stops_polling_when_the_budget_ends(azure_env):
    """azure-core polls an LRO on a thread of its own, which does not inherit the invocation's budget: after
    `wait(timeout)` gives up it must not go on polling ARM (issue 12: no work outlives its invocation)."""
    import threading

    azure = azure_env
    reg = azure.arm.create("11111111-2222-3333-4444-555555555555", "rg", "acrbudget03", export="enabled")["id"]
    azure.arm.set_lro(mode="async", polls=10_000, retry_after=None)       # never finishes
    gateway = ArmGateway(azure.arm.url, azure.credential(), transport=RequestsTransport())
    with Budget.of(2.5).active():
        result = gateway.update_registry(reg, {"policies": {"exportPolicy": {"status": "disabled"}}})
    assert not result.done
    time.sleep(1.5)                                          # the budget is over; a poll in flight may finish
    polls = azure.arm.log.count(service="arm-op")
    assert polls >= 1                                        # it did poll while the budget lasted
    time.sleep(3)                                            # three polling intervals later: no new poll
    assert azure.arm.log.count(service="arm-op") == polls
    assert not [t for t in threading.enumerate() if t.name.startswith("LROPoller(")]


def test_the_tables_sdk_backoff_does_not_sleep_past_the_budget(azurite):
    """azure-data-tables builds its own retry policy (our retry_policy is ignored): its exponential backoff is
    bounded by the budget through the transport's sleep."""
    from dlp.azure.budget import budget_transport

    transport = budget_transport()
    started = time.monotonic()
    with Budget.of(1.0).active(), pytest.raises(BudgetExhausted, match="does not fit"):
        transport.sleep(5)
    assert time.monotonic() - started < 0.5
    transport.sleep(0.01)                                    # outside a budget: an ordinary sleep
    service = table_service(load({"AzureWebJobsStorage": azurite}), None)
    assert type(service._client._client._pipeline._transport).__name__ == "BudgetTransport"
