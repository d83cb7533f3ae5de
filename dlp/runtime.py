"""The composition root: settings parsed once, adapters built once per process, then injected.

Nothing here runs at import time, so importing function_app stays cheap; the first
invocation pays for the SDK imports it needs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from dlp.responder.services import Services
from dlp.settings import ConfigError, Settings, load

log = logging.getLogger("dlp.runtime")

_lock = threading.Lock()
_services: Services | None = None


NO_STORAGE = ("AzureWebJobsStorage is not configured: the revert-war breaker, leases, alert de-duplication and the "
              "outboxes are per process only, there is no durable retry, and findings Log Analytics does not take "
              "fail the invocation")


def build(settings: Settings, *, credential: Any = None, in_process: bool = False) -> Services:
    """Every adapter from validated settings. Tests call this with settings pointed at emulators.

    `in_process=True` is for runs whose state is meant to live in this process (`dlp demo`, benchmarks):
    the missing storage is then said at debug level; in the Function App it is a warning, once.
    """
    from dlp.azure.arm import ArmGateway
    from dlp.azure.credential import get_credential
    from dlp.azure.identity import Identity, LearningCredential
    from dlp.azure.inventory import MemoryInventory, TableInventory
    from dlp.azure.memory_state import MemoryState
    from dlp.azure.state import TableState, table_service
    from dlp.outputs.alerting import build_notifier
    from dlp.outputs.recording import build_recorder
    from dlp.responder.deadletter import DeadLetterContainer

    credential = credential or get_credential()
    identity = Identity(settings.client_id)
    tables = table_service(settings, credential) if settings.storage_configured else None
    if tables is not None:
        state: Any = TableState(tables)
    else:
        log.log(logging.DEBUG if in_process else logging.WARNING, NO_STORAGE)
        state = MemoryState()
    retry = None
    if settings.storage_connection_string or settings.storage_queue_uri:
        from dlp.azure.retryqueue import RetryQueue

        retry = RetryQueue.from_settings(settings, credential)
    from dlp.azure.impacts import MemoryImpacts, TableImpacts

    registry_logs = None
    if settings.pulls_enabled:
        from dlp.azure.logs_query import RegistryLogs

        registry_logs = RegistryLogs(settings.registry_logs_workspace, settings.logs_query_endpoint, credential)
    return Services(
        settings=settings,
        arm=ArmGateway(settings.arm_endpoint, LearningCredential(credential, identity)),   # learns who we are
        state=state,
        retry=retry,
        recorder=build_recorder(settings, credential, tables),
        notifier=build_notifier(settings, credential, tables, schedule=retry.schedule if retry is not None else None),
        identity=identity,
        dead_letters=DeadLetterContainer.from_settings(settings, credential),
        registry_logs=registry_logs,
        impacts=TableImpacts(tables) if tables is not None else MemoryImpacts(),
        inventory=TableInventory(tables) if tables is not None else MemoryInventory(),
    )


def services(environ: Mapping[str, str] | None = None) -> Services:
    """The process's Services, built on first use. Raises ConfigError naming the bad settings that decide what
    is enforced; a bad optional-output setting only turns that output off (`announce_degraded`)."""
    global _services
    started = None
    with _lock:
        if _services is None:
            settings = load(os.environ if environ is None else environ)
            _services = started = build(settings)
            log.info("responder ready: mode=%s outputs=%s", settings.mode, settings.outputs())
        current = _services
    if started is not None and started.settings.degraded:
        announce_degraded(started)
    return current


def announce_degraded(services_: Services) -> None:
    """Start-up: an error log line per unusable optional setting, and one alert on the outputs that still work
    (dlp/outputs/alerts/config.py). Never raises: the invocation that started the process goes on."""
    from dlp.azure.budget import Budget
    from dlp.outputs.alerts.config import KEY, REMIND_AFTER, SEND_BUDGET_S, misconfiguration_alert, signature
    from dlp.settings import OUTPUT_OF

    settings = services_.settings
    for name, problem in settings.degraded:
        log.error("setting %s %s; turned off: %s (enforcement and the other outputs go on)", name, problem,
                  OUTPUT_OF.get(name, name))
    announce = getattr(services_.notifier, "announce", None)
    if announce is None:
        return
    try:
        with Budget.of(SEND_BUDGET_S).active():
            announce(KEY, signature(settings), misconfiguration_alert(settings, at=services_.clock().isoformat()),
                     remind_after=REMIND_AFTER)
    except Exception:
        log.exception("the misconfigured-output alert could not be sent")


def configuration_error(environ: Mapping[str, str] | None = None) -> ConfigError | None:
    try:
        load(os.environ if environ is None else environ)
    except ConfigError as exc:
        return exc
    return None


def reset(replacement: Services | None = None) -> None:
    """Forget (or replace) the process's Services: tests use it to simulate a fresh instance."""
    global _services
    with _lock:
        _services = replacement
