"""Azure Monitor Logs Ingestion API (`POST /dataCollectionRules/{immutableId}/streams/{stream}`).

azure-monitor-ingestion 1.1 sends api-version 2023-01-01, gzip bodies (`Content-Encoding: gzip`)
of a JSON array, one request per <= 1 MiB chunk of serialised rows, token scope
`https://monitor.azure.com/.default`; 204 is success. The service keeps no idempotency key:
a retried chunk is stored twice here too, as in Log Analytics.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from dlp.emulator.base import Emulator, Request, Response
from dlp.emulator.tokens import TokenStore

AUDIENCES = ("https://monitor.azure.com",)
API_VERSION = "2023-01-01"
MAX_BODY_BYTES = 1024 * 1024        # the service's 1 MB limit per call
_PATH = re.compile(r"^/dataCollectionRules/(?P<rule>[^/]+)/streams/(?P<stream>[^/]+)$", re.IGNORECASE)


class LogsEmulator(Emulator):
    name = "logs"

    def __init__(self, tokens: TokenStore, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.tokens = tokens
        self.known_rules: set[str] | None = None   # None: any DCR immutable ID is accepted
        self.check_audience = True
        self.max_body_bytes: int | None = None      # set MAX_BODY_BYTES to enforce the 1 MB limit (413)
        self._rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.uploads = 0                            # accepted requests (chunks)
        self._lock = threading.Lock()

    def reset_state(self) -> None:
        with self._lock:
            self._rows.clear()
            self.uploads = 0
            self.check_audience = True
            self.max_body_bytes = None

    def rows(self, rule_id: str | None = None, stream: str | None = None) -> list[dict[str, Any]]:
        """Rows stored so far (all rules/streams when not given), in arrival order per stream."""
        with self._lock:
            return [row for (rule, name), rows in self._rows.items()
                    if (rule_id is None or rule.lower() == rule_id.lower())
                    and (stream is None or name.lower() == stream.lower())
                    for row in rows]

    def handle(self, request: Request) -> Response:
        audiences = (*AUDIENCES, self.url) if self.check_audience else ()
        denied = self.tokens.check(request, audiences)
        if denied is not None:
            return denied
        m = _PATH.match(request.path.rstrip("/"))
        if m is None or request.method != "POST":
            return Response.error(404, "NotFound", "The requested resource was not found.")
        if request.param("api-version") != API_VERSION:
            return Response.error(400, "InvalidApiVersion", f"The api-version '{request.param('api-version')}' is not "
                                                            f"supported. Supported: {API_VERSION}.")
        rule, stream = m.group("rule"), m.group("stream")
        if self.known_rules is not None and rule.lower() not in {r.lower() for r in self.known_rules}:
            return Response.error(404, "NotFound", f"Data collection rule with immutable Id '{rule}' not found.")
        if not stream.startswith(("Custom-", "Microsoft-")):
            return Response.error(400, "InvalidStream", f"Stream '{stream}' is not declared in the data collection rule.")
        if self.max_body_bytes is not None and len(request.body) > self.max_body_bytes:
            return Response.error(413, "ContentLengthLimitExceeded", "Maximum allowed content length: 1048576 bytes.")
        try:
            rows = request.json()
        except ValueError as exc:
            return Response.error(400, "InvalidContent", str(exc))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return Response.error(400, "InvalidContent", "The body must be a JSON array of objects.")
        with self._lock:
            self._rows.setdefault((rule, stream), []).extend(rows)
            self.uploads += 1
        return Response(204)
