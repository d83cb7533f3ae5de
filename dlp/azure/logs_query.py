"""Registry resource logs in Log Analytics, read with azure-monitor-query: the rows of one exposure window.

The query only *selects* rows (dlp/domain/pulls.py counts, de-duplicates and groups them): the registry's
`_ResourceId`, the window's time range, the operations that move data out (pulls) and logins for context, the
columns needed, and a bound (`take`). `union isfuzzy=true` keeps the query working in a workspace that has
only one of the two tables yet (a table appears with its first row).

azure-monitor-query 2.x (`LogsQueryClient(credential, endpoint=...)`): an endpoint ending in `/v1` is cut to its
scheme and host, the API version `v1` is appended again, and the token audience is that host unless `audience`
is given (so the public cloud's `https://api.loganalytics.io/v1`, a sovereign cloud's and the local emulator's
endpoint all work unchanged). `query_workspace` returns a LogsQueryResult (tables of columns and rows; datetime
columns already parsed), a LogsQueryPartialResult when the service answered 200 with an `error` (partial data
plus `partial_error`), and raises HttpResponseError for 4xx/5xx (403 InsufficientAccessError, 404
WorkspaceNotFoundError, 400 BadArgumentError / SemanticError, 429 with Retry-After, 5xx).

Every failure becomes `QueryFailed` with a short reason for the record and the alert ("pulls unknown: ...");
the last one is kept for `GET /api/health`.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dlp.azure.budget import BudgetRetryPolicy

log = logging.getLogger("dlp.logs_query")

MAX_ROWS = 1000                 # rows one look reads at most; more: the count is a lower bound ("at least")
SERVER_TIMEOUT_S = 30           # the service's own limit for the query (Prefer: wait=)
COLUMNS = ("TimeGenerated", "Type", "OperationName", "Repository", "Tag", "Digest", "Identity", "CallerIpAddress",
           "ResultType", "CorrelationId", "LoginServer")
# A registry ID as the responder handles it (validated on the way in); checked again before it enters a query text
_REGISTRY_ID = re.compile(r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w._()]{1,90}/providers/"
                          r"Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50}$", re.IGNORECASE)


class QueryFailed(Exception):
    """The rows could not be read; `reason` is safe to record and alert (no secrets, one line)."""

    def __init__(self, reason: str, *, transient: bool = True):
        self.reason = reason
        self.transient = transient
        super().__init__(reason)


@dataclass(frozen=True)
class LogRows:
    rows: tuple[dict[str, Any], ...]
    truncated: bool              # the bound was hit: there may be more


def _kql_string(value: str) -> str:
    """A KQL string literal. Only validated registry IDs get here; quotes and backslashes are escaped anyway."""
    if any(ord(c) < 32 for c in value):
        raise ValueError("control character in a query value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kql_time(moment: datetime) -> str:
    return "datetime(" + moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + ")"


def window_query(registry_id: str, opened_at: datetime, closed_at: datetime, limit: int = MAX_ROWS) -> str:
    """The KQL selecting the window's pulls and logins of one registry (ValueError for anything but a registry ID)."""
    if not _REGISTRY_ID.match(registry_id or ""):
        raise ValueError("not a registry ID")
    where = (f"| where _ResourceId =~ {_kql_string(registry_id)}\n"
             f"| where TimeGenerated between ({_kql_time(opened_at)} .. {_kql_time(closed_at)})\n")
    return (f"union isfuzzy=true\n"
            f"  (ContainerRegistryRepositoryEvents\n  {where}  | where OperationName =~ \"Pull\"),\n"
            f"  (ContainerRegistryLoginEvents\n  {where})\n"
            f"| project {', '.join(COLUMNS)}\n"
            f"| top {int(limit) + 1} by TimeGenerated asc")


def describe(exc: BaseException) -> QueryFailed:
    """An SDK or transport failure as a short, secret-free reason."""
    from dlp.azure.errors import classify

    failure = classify(exc)
    model = getattr(exc, "model", None)
    code = getattr(model, "code", None) or failure.code
    message = getattr(model, "message", None) or failure.message
    where = f"HTTP {failure.status} " if failure.status else ""
    hint = {403: " (the app's identity needs read access to the workspace and the registry log tables)",
            404: " (check DLP_REGISTRY_LOGS_WORKSPACE: the workspace ID, not its name)"}.get(failure.status or 0, "")
    if "resolve table" in str(message):
        hint = " (no registry log has reached this workspace: is the registries' diagnostic setting on?)"
    return QueryFailed(f"{where}{code}: {str(message).splitlines()[0][:200] if message else ''}{hint}".strip(),
                       transient=failure.transient)


class RegistryLogs:
    """The registries' resource logs in one workspace. Thread-safe; built once per process."""

    def __init__(self, workspace_id: str, endpoint: str, credential: Any, **client_options: Any):
        from azure.monitor.query import LogsQueryClient

        self.workspace_id = workspace_id
        client_options.setdefault("retry_policy", BudgetRetryPolicy())
        self._client = LogsQueryClient(credential, endpoint=endpoint, **client_options)
        self._lock = threading.Lock()
        self.last_error: dict[str, str] | None = None     # {"at", "error"}: GET /api/health shows it
        self.last_success = ""

    def window_rows(self, registry_id: str, opened_at: datetime, closed_at: datetime, *, now: datetime) -> LogRows:
        """The rows of the window [opened_at, closed_at]; raises QueryFailed."""
        from azure.monitor.query import LogsQueryStatus

        try:
            query = window_query(registry_id, opened_at, closed_at)
        except ValueError as exc:
            raise QueryFailed(f"not queried: {exc}", transient=False) from exc
        # the service's own time filter as well: a whole second either side (the query's `between` is exact)
        timespan = (opened_at - timedelta(seconds=1), closed_at + timedelta(seconds=1))
        try:
            result = self._client.query_workspace(self.workspace_id, query, timespan=timespan,
                                                  server_timeout=SERVER_TIMEOUT_S)
        except Exception as exc:
            failed = describe(exc)
            self._failed(failed, now)
            raise failed from exc
        if result.status == LogsQueryStatus.PARTIAL:
            error = result.partial_error
            seen = sum(len(t.rows) for t in result.partial_data or ())
            failed = QueryFailed(f"partial result ({seen} row(s) read): "
                                 f"{getattr(error, 'code', '') or 'PartialError'}: {getattr(error, 'message', '')}"[:300])
            self._failed(failed, now)
            raise failed
        rows = [dict(zip(table.columns, list(row), strict=False)) for table in result.tables for row in table.rows]
        with self._lock:
            self.last_success = now.isoformat()
        return LogRows(tuple(rows[:MAX_ROWS]), len(rows) > MAX_ROWS)

    def _failed(self, failed: QueryFailed, now: datetime) -> None:
        log.warning("registry logs of workspace %s not read: %s", self.workspace_id, failed.reason)
        with self._lock:
            self.last_error = {"at": now.isoformat(), "error": failed.reason}

    def health(self) -> dict[str, Any]:
        """For GET /api/health: the workspace and its last query error (never a secret)."""
        with self._lock:
            return {"workspaceId": self.workspace_id, "lastError": self.last_error, "lastSuccess": self.last_success}

    def close(self) -> None:
        self._client.close()


__all__ = ["MAX_ROWS", "LogRows", "QueryFailed", "RegistryLogs", "describe", "window_query"]
