"""A Teams Workflows ("When a Teams webhook request is received") trigger URL.

Any POST path is accepted (Workflows URLs come in several shapes); the `sig` query
parameter must match `secret`. The flow answers 202 with an empty body and runs later,
so a card Teams would reject still gets 202: `card_problems()` tells what would fail.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

from dlp.emulator.base import Emulator, Request, Response

MAX_CARD_BYTES = 28 * 1024
MAX_CARD_VERSION = (1, 5)
ADAPTIVE = "application/vnd.microsoft.card.adaptive"


def card_problems(message: Any) -> list[str]:
    """Why Teams would not show this Workflows message (empty list: it would)."""
    if not isinstance(message, dict) or message.get("type") != "message":
        return ["top-level 'type' must be 'message'"]
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return ["'attachments' must be a non-empty list"]
    problems = []
    for i, attachment in enumerate(attachments):
        content = attachment.get("content") if isinstance(attachment, dict) else None
        if not isinstance(attachment, dict) or attachment.get("contentType") != ADAPTIVE:
            problems.append(f"attachments[{i}].contentType must be {ADAPTIVE}")
            continue
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            problems.append(f"attachments[{i}].content must be an AdaptiveCard")
            continue
        try:
            version = tuple(int(p) for p in str(content.get("version", "")).split("."))
        except ValueError:
            version = ()
        if not version or version > MAX_CARD_VERSION:
            problems.append(f"attachments[{i}] card version {content.get('version')!r} is not <= 1.5")
        if len(json.dumps(content).encode()) > MAX_CARD_BYTES:
            problems.append(f"attachments[{i}] card is larger than {MAX_CARD_BYTES} bytes")
        for action in content.get("actions", []) or []:
            if isinstance(action, dict) and action.get("type") != "Action.OpenUrl":
                problems.append(f"attachments[{i}] action {action.get('type')!r} is not Action.OpenUrl")
    return problems


class TeamsEmulator(Emulator):
    name = "teams"

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.secret = secrets.token_urlsafe(32)
        self.messages: list[Any] = []      # JSON bodies of accepted posts, in order
        self._lock = threading.Lock()

    def reset_state(self) -> None:
        with self._lock:
            self.messages.clear()

    def webhook_url(self, workflow_id: str = "4f0c3b9e5a2d4c1e9b7a6d5c4b3a2f10") -> str:
        """A URL shaped like a Workflows trigger URL, carrying the `sig` secret."""
        return (f"{self.url}/workflows/{workflow_id}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.secret}")

    def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.error(404, "TriggerNotFound", "The workflow trigger does not accept this method.")
        if request.param("sig") != self.secret:
            return Response.error(401, "DirectApiInvalidAuthorizationSignature",
                                  "The provided authorization signature ('sig') is not valid.")
        try:
            message = request.json()
        except ValueError as exc:
            return Response.error(400, "InvalidRequestContent", f"The request content is not valid JSON: {exc}")
        with self._lock:
            self.messages.append(message)
        return Response(202)
