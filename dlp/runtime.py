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

from dlp.pipeline import Services
from dlp.settings import ConfigError, Settings, load

log = logging.getLogger("dlp.runtime")

_lock = threading.Lock()
_services: Services | None = None


def build(settings: Settings, *, credential: Any = None) -> Services:
    """Every adapter from validated settings. Tests call this with settings pointed at emulators."""
    from dlp.alerting import build_notifier
    from dlp.azure.arm import ArmGateway
    from dlp.azure.credential import get_credential
    from dlp.azure.state import MemoryState, TableState, table_service
    from dlp.own_writes import Identity, LearningCredential
    from dlp.recording import build_recorder

    credential = credential or get_credential()
    identity = Identity(settings.client_id)
    tables = table_service(settings, credential) if settings.storage_configured else None
    if tables is not None:
        state: Any = TableState(tables)
    else:
        log.warning("AzureWebJobsStorage is not configured: the revert-war breaker and leases are per process only, "
                    "and there is no durable retry")
        state = MemoryState()
    retry = None
    if settings.storage_connection_string or settings.storage_queue_uri:
        from dlp.azure.retryqueue import RetryQueue

        retry = RetryQueue.from_settings(settings, credential)
    return Services(
        settings=settings,
        arm=ArmGateway(settings.arm_endpoint, LearningCredential(credential, identity)),   # learns who we are
        state=state,
        retry=retry,
        recorder=build_recorder(settings, credential, tables),
        notifier=build_notifier(settings, credential, tables),
        identity=identity,
    )


def services(environ: Mapping[str, str] | None = None) -> Services:
    """The process's Services, built on first use. Raises ConfigError naming the bad settings."""
    global _services
    with _lock:
        if _services is None:
            settings = load(os.environ if environ is None else environ)
            _services = build(settings)
            log.info("responder ready: mode=%s outputs=%s", settings.mode, settings.outputs())
        return _services


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
