"""Logs Ingestion adapter: rows to a DCR stream through azure-monitor-ingestion, failures returned, not raised.

`LogsIngestionClient.upload` cuts the rows into <= 1 MiB chunks, gzips and POSTs each to
`{endpoint}/dataCollectionRules/{rule}/streams/{stream}?api-version=2023-01-01`. With `on_error`
it goes on after a failed chunk and hands us exactly that chunk's rows: we return them with the
service's status, code and message, so the caller can keep them (outbox) or set them aside
(rejected). The client is built once per process with the budget-bounded retry policy, so
azure-core's retries (POST is retried on 500/503/504 and on anything carrying Retry-After)
never outlast the invocation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dlp.azure.budget import BudgetRetryPolicy
from dlp.azure.errors import AzureFailure, classify

log = logging.getLogger("dlp.logs")

# 4xx answers that say nothing about the rows themselves: the identity lacks the Monitoring Metrics
# Publisher role (403), the token is refused (401) or the DCR / stream is wrong (404). The rows stay in
# the retry path so they go out once an operator fixes the configuration.
CONFIGURATION_STATUS = frozenset({401, 403, 404})
RETRYABLE_STATUS = frozenset({408, 429})
# Token audience per cloud, told apart by the ingestion endpoint's domain (the SDK defaults to the public cloud).
SCOPES = ((".azure.us", "https://monitor.azure.us/.default"), (".azure.cn", "https://monitor.azure.cn/.default"))
PUBLIC_SCOPE = "https://monitor.azure.com/.default"


def scope_for(endpoint: str) -> str:
    """The Logs Ingestion token scope for `endpoint`: sovereign clouds have their own audience."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return next((scope for suffix, scope in SCOPES if host.endswith(suffix)), PUBLIC_SCOPE)


@dataclass(frozen=True)
class FailedChunk:
    """Rows the service did not take, and why (no secrets: status, error code, first line of the message)."""

    rows: tuple[Mapping[str, Any], ...]
    failure: AzureFailure

    @property
    def rejected(self) -> bool:
        """The service refused these rows for good (a 4xx other than 408/429 and the configuration errors):
        sending them again would fail again."""
        status = self.failure.status
        return (status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS
                and status not in CONFIGURATION_STATUS)


class LogsIngestion:
    """One DCR stream. Thread-safe (azure-core clients are), shared by every invocation of the process."""

    def __init__(self, endpoint: str, credential: Any, rule_id: str, stream: str, **client_options: Any):
        from azure.monitor.ingestion import LogsIngestionClient

        self.rule_id = rule_id
        self.stream = stream
        client_options.setdefault("retry_policy", BudgetRetryPolicy())
        client_options.setdefault("credential_scopes", [scope_for(endpoint)])
        self._client = LogsIngestionClient(endpoint=endpoint, credential=credential, **client_options)

    def upload(self, rows: Sequence[Mapping[str, Any]]) -> list[FailedChunk]:
        """Send `rows` (plain JSON values only); return the chunks that failed, in order. Never raises for a
        service or network failure: every chunk is tried, the failed ones come back."""
        if not rows:
            return []
        failed: list[FailedChunk] = []

        def on_error(error: Any) -> None:
            failed.append(FailedChunk(tuple(error.failed_logs), classify(error.error)))

        self._client.upload(rule_id=self.rule_id, stream_name=self.stream, logs=list(rows), on_error=on_error)
        for chunk in failed:
            log.debug("chunk of %d row(s) failed: %s", len(chunk.rows), chunk.failure)
        return failed

    def close(self) -> None:
        self._client.close()


__all__ = ["FailedChunk", "LogsIngestion", "scope_for"]
