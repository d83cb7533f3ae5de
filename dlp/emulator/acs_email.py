"""Azure Communication Services Email (`POST /emails:send`, then poll the operation).

azure-communication-email 1.1 sends `POST {endpoint}/emails:send?api-version=2025-09-01`
with an optional `Operation-Id` header (the `operation_id=` argument) and a bearer token for
scope `https://communication.azure.com//.default` (double slash: msal turns it into the
resource `https://communication.azure.com/`). It expects 202 + `Operation-Location`, polls
that URL (`{"id", "status": "Running"}` ... `"Succeeded"`) and returns the last status body.
A `Retry-After` on 202/polls overrides the caller's `polling_interval`, so ours is 0 (absent
in effect) unless `retry_after` is set. A repeated `Operation-Id` returns the existing
operation and stores no second mail (the idempotency `operation_id` promises).
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from dlp.emulator.base import Emulator, Request, Response
from dlp.emulator.tokens import TokenStore

AUDIENCES = ("https://communication.azure.com",)
API_VERSIONS = ("2023-03-31", "2024-07-01-preview", "2025-09-01")
_OPERATION = re.compile(r"^/emails/operations/(?P<id>[^/]+)$", re.IGNORECASE)


@dataclass
class EmailOperation:
    id: str
    message: dict[str, Any]
    polls_needed: int
    outcome: str
    polls: int = 0
    status: str = "Running"


class EmailEmulator(Emulator):
    name = "email"

    def __init__(self, tokens: TokenStore, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.tokens = tokens
        self.polls = 1                     # Running answers before the terminal status
        self.outcome = "Succeeded"         # or "Failed"
        self.retry_after = 0               # seconds in Retry-After; 0 lets the client's polling_interval rule
        self.check_audience = True
        self.operations: dict[str, EmailOperation] = {}
        self.sent: list[dict[str, Any]] = []   # accepted messages (one per operation id), each with "operationId"
        self._lock = threading.Lock()

    def reset_state(self) -> None:
        with self._lock:
            self.polls, self.outcome, self.retry_after, self.check_audience = 1, "Succeeded", 0, True
            self.operations.clear()
            self.sent.clear()

    def classify(self, request: Request) -> str:
        return "email-op" if _OPERATION.match(request.path.rstrip("/")) else "email"

    def handle(self, request: Request) -> Response:
        audiences = (*AUDIENCES, self.url) if self.check_audience else ()
        denied = self.tokens.check(request, audiences)
        if denied is not None:
            return denied
        version = request.param("api-version")
        if version not in API_VERSIONS:
            return Response.error(400, "InvalidApiVersion", f"The api-version '{version}' is not supported.")
        path = request.path.rstrip("/")
        if path.lower() == "/emails:send" and request.method == "POST":
            return self._send(request, version)
        if (m := _OPERATION.match(path)) and request.method == "GET":
            return self._poll(request, m.group("id"), version)
        return Response.error(404, "NotFound", "The requested resource was not found.")

    def _headers(self, request: Request, op: EmailOperation, version: str) -> dict[str, str]:
        headers = {"Operation-Location": f"{request.base_url}/emails/operations/{op.id}?api-version={version}",
                   "x-ms-request-id": str(uuid.uuid4())}
        if op.status == "Running":
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def _send(self, request: Request, version: str) -> Response:
        try:
            message = request.json()
        except ValueError as exc:
            return Response.error(400, "InvalidRequest", str(exc))
        problem = _validate(message)
        if problem:
            return Response.error(400, "InvalidRequest", problem)
        op_id = request.headers.get("Operation-Id") or str(uuid.uuid4())
        with self._lock:
            op = self.operations.get(op_id)
            if op is None:
                op = EmailOperation(op_id, message, self.polls, self.outcome)
                self.operations[op_id] = op
                self.sent.append({**message, "operationId": op_id})
            body = {"id": op.id, "status": op.status, "error": None}
            return Response.json(202, body, self._headers(request, op, version))

    def _poll(self, request: Request, op_id: str, version: str) -> Response:
        with self._lock:
            op = self.operations.get(op_id)
            if op is None:
                return Response.error(404, "NotFound", f"Operation '{op_id}' was not found.")
            op.polls += 1
            if op.status == "Running" and op.polls > op.polls_needed:
                op.status = op.outcome
            body: dict[str, Any] = {"id": op.id, "status": op.status, "error": None}
            if op.status == "Failed":
                body["error"] = {"code": "DeliveryFailed", "message": "The email could not be delivered."}
            return Response.json(200, body, self._headers(request, op, version))


def _validate(message: Any) -> str:
    if not isinstance(message, dict):
        return "The request body must be a JSON object."
    if not message.get("senderAddress"):
        return "senderAddress is required."
    recipients = message.get("recipients") or {}
    if not any(recipients.get(kind) for kind in ("to", "cc", "bcc")):
        return "At least one recipient (to, cc or bcc) is required."
    content = message.get("content") or {}
    if not content.get("subject"):
        return "content.subject is required."
    if not (content.get("plainText") or content.get("html")):
        return "content.plainText or content.html is required."
    return ""
