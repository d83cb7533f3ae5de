"""Azure Resource Graph (`POST /providers/Microsoft.ResourceGraph/resources`) over the registry store.

Real ARG runs KQL; this runs none. The query text is only scanned for:

* `microsoft.containerregistry/registries` anywhere (case-insensitive), else no rows
  (the emulator knows no other resource type);
* `<column> =~ '<v>'`, `<column> == '<v>'` and `<column> in~ ('<a>', '<b>')` (also `in`) for the
  columns resourceGroup, name, id, subscriptionId, location: values of one column are OR-ed,
  different columns AND-ed, all compared without case;
* everything else (`project`, `extend`, `order by`, ...) is ignored: rows always carry every column.

Rows look like ARG's: `type` lower-cased, `resourceGroup` lower-cased, `properties` as stored,
ordered by lower-cased ID. Paging: at most 1000 rows per page (`$top` sets the page size,
1..1000), `$skip` honoured, an opaque `$skipToken` while rows remain. `totalRecords` counts
every matching row. Optional throttling (`quota` requests per `window_s`) answers 429 with
Retry-After and the `x-ms-user-quota-*` headers like ARG.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dlp.emulator.base import Response, arm_error
from dlp.emulator.changes import ChangeLog
from dlp.emulator.registries import RegistryStore, split_registry_id

MAX_PAGE = 1000
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
_EQ = re.compile(r"\b(resourceGroup|name|id|subscriptionId|location)\s*(?:=~|==)\s*(['\"])(.*?)\2", re.IGNORECASE)
_IN = re.compile(r"\b(resourceGroup|name|id|subscriptionId|location)\s+in~?\s*\(([^)]*)\)", re.IGNORECASE)
_ROW_COLUMNS = (("id", "string"), ("name", "string"), ("type", "string"), ("tenantId", "string"),
                ("kind", "string"), ("location", "string"), ("resourceGroup", "string"),
                ("subscriptionId", "string"), ("managedBy", "string"), ("sku", "object"), ("plan", "object"),
                ("properties", "object"), ("tags", "object"), ("identity", "object"), ("zones", "object"),
                ("extendedLocation", "object"))


def parse_filters(query: str) -> dict[str, set[str]] | None:
    """Column -> allowed lower-case values; None when the query is not about registries."""
    if "microsoft.containerregistry/registries" not in query.lower():
        return None
    filters: dict[str, set[str]] = {}
    for column, _, value in _EQ.findall(query):
        filters.setdefault(column.lower(), set()).add(value.lower())
    for column, values in _IN.findall(query):
        items = {v.strip().strip("'\"").lower() for v in values.split(",") if v.strip()}
        filters.setdefault(column.lower(), set()).update(items)
    return filters


def _column(registry: Mapping[str, Any], column: str) -> str:
    if column == "id":
        return registry["id"].lower()
    if column in ("name", "location"):
        return str(registry.get(column, "")).lower()
    parts = registry["id"].split("/")
    return (parts[4] if column == "resourcegroup" else parts[2]).lower()


def to_row(registry: Mapping[str, Any]) -> dict[str, Any]:
    sub, rg, _ = split_registry_id(registry["id"])
    return {
        "id": registry["id"], "name": registry["name"], "type": registry["type"].lower(), "tenantId": TENANT_ID,
        "kind": "", "location": registry.get("location", ""), "resourceGroup": rg.lower(), "subscriptionId": sub,
        "managedBy": "", "sku": registry.get("sku"), "plan": None, "properties": registry.get("properties", {}),
        "tags": registry.get("tags") or {}, "identity": registry.get("identity"), "zones": None,
        "extendedLocation": None,
    }


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"$o": offset}).encode()).decode()


def _offset(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["$o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("invalid $skipToken") from exc


def _bad(message: str, detail_code: str) -> Response:
    return Response.json(400, arm_error("BadRequest", "Please provide below info when asking for support: "
                                        f"timestamp = {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}.",
                                        details=[{"code": detail_code, "message": message}]))


class Graph:
    """Answers Resource Graph queries from a RegistryStore."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.changes = ChangeLog()        # the `resourcechanges` table (dlp/emulator/changes.py)
        self.quota: int | None = None     # requests allowed per window; None: never throttled
        self.window_s = 5.0
        self._calls: list[float] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.changes.reset()
        self.quota = None
        self.window_s = 5.0
        with self._lock:
            self._calls.clear()

    def _throttle(self) -> tuple[Response | None, dict[str, str]]:
        if self.quota is None:
            return None, {}
        now = time.monotonic()
        with self._lock:
            self._calls = [t for t in self._calls if now - t < self.window_s]
            resets = self.window_s - (now - self._calls[0]) if self._calls else self.window_s
            reset_text = time.strftime("%H:%M:%S", time.gmtime(max(resets, 0)))
            if len(self._calls) >= self.quota:
                headers = {"Retry-After": str(max(1, round(resets))), "x-ms-user-quota-remaining": "0",
                           "x-ms-user-quota-resets-after": reset_text}
                return Response.error(429, "RateLimiting", "Please provide below info when asking for support: "
                                      "the client has exceeded the Resource Graph request quota.", headers), {}
            self._calls.append(now)
            return None, {"x-ms-user-quota-remaining": str(self.quota - len(self._calls)),
                          "x-ms-user-quota-resets-after": reset_text}

    def _matching(self, subscriptions: Iterable[str] | None, filters: dict[str, set[str]]) -> list[str]:
        keys = self.store.keys_in(subscriptions)
        if not filters:
            return keys
        out = []
        for key in keys:
            registry = self.store.get_by_key(key)
            if registry is not None and all(_column(registry, c) in allowed for c, allowed in filters.items()):
                out.append(key)
        return out

    def query(self, body: Any) -> Response:
        throttled, quota_headers = self._throttle()
        if throttled is not None:
            return throttled
        if not isinstance(body, Mapping) or not isinstance(body.get("query"), str) or not body["query"].strip():
            return _bad("The request body must carry a non-empty 'query'.", "InvalidQuery")
        options = body.get("options") or {}
        subscriptions = body.get("subscriptions") or None      # none given: every subscription (tenant scope)
        top = options.get("$top")
        if top is not None and not (isinstance(top, int) and 1 <= top <= MAX_PAGE):
            return _bad(f"The $top value must be between 1 and {MAX_PAGE}.", "InvalidTopValue")
        page = top or MAX_PAGE
        try:
            start = _offset(options["$skipToken"]) if options.get("$skipToken") else int(options.get("$skip") or 0)
        except ValueError:
            return _bad("The $skipToken is invalid.", "InvalidSkipToken")

        if "resourcechanges" in body["query"].lower():
            every = self.changes.matching(body["query"], subscriptions)
            return _page(every[start:start + page], len(every), start + page < len(every), start + page,
                         options, quota_headers, tuple((n, "object" if n == "properties" else "string")
                                                       for n in every[0]) if every else ())
        filters = parse_filters(body["query"])
        with self.store.lock:
            keys = [] if filters is None else self._matching(subscriptions, filters)
            rows = [to_row(self.store.get_by_key(k)) for k in keys[start:start + page]]
            return _page(rows, len(keys), start + page < len(keys), start + page, options, quota_headers,
                         _ROW_COLUMNS)


def _page(rows: list[dict[str, Any]], total: int, more: bool, next_offset: int, options: Mapping[str, Any],
          headers: dict[str, str], columns: tuple[tuple[str, str], ...]) -> Response:
    payload: dict[str, Any] = {"totalRecords": total, "count": len(rows)}
    if options.get("resultFormat", "objectArray") == "table":
        payload["data"] = {"columns": [{"name": n, "type": t} for n, t in columns],
                           "rows": [[row[n] for n, _ in columns] for row in rows]}
    else:
        payload["data"] = rows
    payload["facets"] = []
    payload["resultTruncated"] = "false"
    if more:
        payload["$skipToken"] = _token(next_offset)
    return Response.json(200, payload, headers)
