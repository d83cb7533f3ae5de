"""Log Analytics query API (`POST /v1/workspaces/{workspaceId}/query`) serving registry resource-log rows.

What azure-monitor-query 2.x sends: a JSON body {"query", "timespan": "<start>/<end>", "workspaces"}, an optional
`Prefer: wait=<s>` header, a bearer token for the endpoint's host (or `https://api.loganalytics.io`). What it
gets back on 200: {"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}], "rows": [[...]]}]}, plus an
`error` (code PartialError) for a partial result. Errors are {"error": {"code", "message", "innererror"?}}:
403 InsufficientAccessError, 404 WorkspaceNotFoundError, 400 BadArgumentError with a SemanticError inside (a
table that does not exist), 429 with Retry-After (the shapes follow the API's documented errors; the exact
texts are this emulator's).

No KQL is run. The rows added with `add` (as a diagnostic setting would send them) are filtered by what the
responder's query says: the tables named, `_ResourceId =~ "<id>"`, `TimeGenerated between (datetime(a) ..
datetime(b))`, `OperationName =~ "Pull"` for the repository table, and `top N`; and by the body's timespan.
A table with no row added is "not found" unless `known_tables` lists it (a workspace that never got a row of it).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from dlp.domain.exposure import parse_time
from dlp.emulator.base import Emulator, Request, Response
from dlp.emulator.tokens import TokenStore

AUDIENCES = ("https://api.loganalytics.io",)
REPOSITORY_EVENTS = "ContainerRegistryRepositoryEvents"
LOGIN_EVENTS = "ContainerRegistryLoginEvents"
_PATH = re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query$", re.IGNORECASE)
_RESOURCE = re.compile(r'_ResourceId\s*=~\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)
_BETWEEN = re.compile(r"TimeGenerated\s+between\s*\(\s*datetime\(([^)]+)\)\s*\.\.\s*datetime\(([^)]+)\)\s*\)",
                      re.IGNORECASE)
_TOP = re.compile(r"\|\s*(?:top|take|limit)\s+(\d+)", re.IGNORECASE)
_PULL = re.compile(r'OperationName\s*=~\s*"Pull"', re.IGNORECASE)
COLUMN_TYPES = {"TimeGenerated": "datetime", "Size": "int"}


def _time(text: str) -> datetime:
    moment = parse_time(text.strip().strip("'\""))
    if moment is None:
        raise ValueError(f"not a time: {text[:40]!r}")
    return moment


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LogsQueryEmulator(Emulator):
    name = "logs-query"

    def __init__(self, tokens: TokenStore, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.tokens = tokens
        self.workspaces: set[str] | None = None      # None: any workspace ID exists
        self.known_tables: set[str] = set()           # tables that exist although no row was added
        self.forbidden = False                        # answer 403 InsufficientAccessError
        self.partial_error = False                    # answer 200 with the rows and a PartialError
        self._rows: list[tuple[float, dict[str, Any]]] = []     # (visible at, row)
        self.queries: list[dict[str, Any]] = []       # bodies received, for tests and benchmarks
        self._lock = threading.Lock()

    def reset_state(self) -> None:
        with self._lock:
            self._rows.clear()
            self.queries.clear()
        self.workspaces = None
        self.known_tables = set()
        self.forbidden = False
        self.partial_error = False

    @property
    def endpoint(self) -> str:
        """DLP_LOGS_QUERY_ENDPOINT for this emulator."""
        return self.url + "/v1"

    # --- rows, as a diagnostic setting would send them -------------------------------------------------------
    def add(self, table: str, row: Mapping[str, Any], *, lag_s: float = 0.0) -> dict[str, Any]:
        """One resource-log row of `table`, visible to queries after `lag_s` seconds."""
        stored = {"Type": table, **row}
        if isinstance(stored.get("TimeGenerated"), datetime):
            stored["TimeGenerated"] = _iso(stored["TimeGenerated"])
        with self._lock:
            self._rows.append((time.time() + lag_s, stored))
        return stored

    def add_pull(self, registry_id: str, at: datetime, repository: str, tag: str = "", *, identity: str = "",
                 caller_ip: str = "", digest: str = "", result: str = "200", lag_s: float = 0.0) -> dict[str, Any]:
        """A `Pull` row of ContainerRegistryRepositoryEvents (the columns of Azure Monitor's table reference)."""
        name = registry_id.rstrip("/").rsplit("/", 1)[-1].lower()
        return self.add(REPOSITORY_EVENTS, {
            "TimeGenerated": at, "OperationName": "Pull", "Repository": repository, "Tag": tag,
            "Digest": digest or "sha256:" + format(abs(hash((repository, tag))), "x").rjust(64, "0")[:64],
            "Identity": identity, "CallerIpAddress": caller_ip, "LoginServer": f"{name}.azurecr.io",
            "_ResourceId": registry_id.upper(), "ResultType": result, "ResultDescription": "",
            "UserAgent": "docker/27.0.3", "CorrelationId": f"{time.time_ns():x}", "DurationMs": "12",
            "Size": 1234, "Category": REPOSITORY_EVENTS, "MediaType": "application/vnd.oci.image.manifest.v1+json",
            "ArtifactType": "", "Region": "westeurope"}, lag_s=lag_s)

    def add_login(self, registry_id: str, at: datetime, *, identity: str = "", caller_ip: str = "",
                  result: str = "200", lag_s: float = 0.0) -> dict[str, Any]:
        name = registry_id.rstrip("/").rsplit("/", 1)[-1].lower()
        return self.add(LOGIN_EVENTS, {
            "TimeGenerated": at, "OperationName": "Login", "Identity": identity, "CallerIpAddress": caller_ip,
            "LoginServer": f"{name}.azurecr.io", "_ResourceId": registry_id.upper(), "ResultType": result,
            "ResultDescription": "", "UserAgent": "docker/27.0.3", "CorrelationId": f"{time.time_ns():x}",
            "DurationMs": "20", "Category": LOGIN_EVENTS, "JwtId": "", "Region": "westeurope"}, lag_s=lag_s)

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [row for _, row in self._rows]

    # --- the API ----------------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        denied = self.tokens.check(request, (*AUDIENCES, self.url))
        if denied is not None:
            return denied
        m = _PATH.match(request.path.rstrip("/"))
        if m is None or request.method != "POST":
            return Response.error(404, "PathNotFoundError", f"The requested path does not exist: {request.path}")
        workspace = m.group("workspace").lower()
        if self.workspaces is not None and workspace not in {w.lower() for w in self.workspaces}:
            return Response.error(404, "WorkspaceNotFoundError", f"Workspace {workspace} not found")
        if self.forbidden:
            return Response.error(403, "InsufficientAccessError",
                                  "The provided credentials have insufficient access to perform the requested operation")
        try:
            body = request.json()
        except ValueError as exc:
            return Response.error(400, "BadArgumentError", str(exc))
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return Response.error(400, "BadArgumentError", "The request had some invalid properties")
        with self._lock:
            self.queries.append(body)
        return self._answer(body["query"], body.get("timespan"))

    def _answer(self, query: str, timespan: Any) -> Response:
        tables = [t for t in (REPOSITORY_EVENTS, LOGIN_EVENTS) if t.lower() in query.lower()]
        now = time.time()
        with self._lock:
            visible = [row for at, row in self._rows if at <= now]
        existing = {str(r["Type"]).lower() for r in visible} | {t.lower() for t in self.known_tables}
        present = [t for t in tables if t.lower() in existing]
        if tables and not present:
            return Response.json(400, {"error": {
                "code": "BadArgumentError", "message": "The request had some invalid properties",
                "innererror": {"code": "SemanticError", "message": "A semantic error occurred.",
                               "innererror": {"code": "SEM0100", "message": f"'union' operator: Failed to resolve "
                                                                            f"table expression named '{tables[0]}'"}}}})
        selected = [row for row in visible if str(row["Type"]).lower() in {t.lower() for t in present}
                    and self._matches(row, query, timespan)]
        selected.sort(key=lambda r: str(r.get("TimeGenerated")))
        top = _TOP.search(query)
        if top:
            selected = selected[: int(top.group(1))]
        columns = self._columns(query, selected)
        payload: dict[str, Any] = {"tables": [{"name": "PrimaryResult",
                                               "columns": [{"name": c, "type": COLUMN_TYPES.get(c, "string")}
                                                           for c in columns],
                                               "rows": [[row.get(c) for c in columns] for row in selected]}]}
        if self.partial_error:
            payload["error"] = {"code": "PartialError", "message": "There were some errors when processing your query.",
                                "details": [{"code": "EngineError", "message": "Query exceeded the allowed limits"}]}
        return Response.json(200, payload)

    @staticmethod
    def _columns(query: str, rows: list[dict[str, Any]]) -> list[str]:
        project = re.search(r"\|\s*project\s+([^|]+)", query, re.IGNORECASE)
        if project:
            return [c.strip() for c in project.group(1).split(",") if c.strip()]
        return list(dict.fromkeys(k for row in rows for k in row))

    @staticmethod
    def _matches(row: dict[str, Any], query: str, timespan: Any) -> bool:
        resource = _RESOURCE.search(query)
        if resource and str(row.get("_ResourceId", "")).lower() != resource.group(1).replace('\\"', '"').lower():
            return False
        at = _time(str(row.get("TimeGenerated")))
        between = _BETWEEN.search(query)
        if between and not (_time(between.group(1)) <= at <= _time(between.group(2))):
            return False
        if isinstance(timespan, str) and "/" in timespan:
            start, end = (_time(part) for part in timespan.split("/", 1))
            if not start <= at <= end:
                return False
        if _PULL.search(query) and row["Type"] == REPOSITORY_EVENTS and str(row.get("OperationName")).lower() != "pull":
            return False
        return True


__all__ = ["LOGIN_EVENTS", "REPOSITORY_EVENTS", "LogsQueryEmulator"]
