"""Events that arrive as JSON documents (a file, stdin, a dead-letter blob), parsed with the Event Grid SDK.

Live events come through the Functions binding (dlp.inputs.events.from_function_event). Documents are read
here with `azure.eventgrid.EventGridEvent.from_dict` (Event Grid schema) and
`azure.core.messaging.CloudEvent.from_dict` (CloudEvents 1.0), then handed to the same
`dlp.inputs.events.intake` as a live event, so a replayed event can never mean more than a live one.

Three things the SDK does not do, kept here:
- it turns any JSON value into a string (an `id` of `["x"]` becomes the text "['x']"), so a field we
  act on that is not a string in the document counts as absent;
- its refusal (a CloudEvent without `source`, a time it cannot parse) must not lose an event that
  still names a registry, so such an event is read field by field (`intake` still checks each);
- it knows nothing of Event Grid's dead-letter metadata (`deadLetterReason`, `deliveryAttempts`,
  `lastDeliveryOutcome`, `lastHttpStatusCode`, `publishTime`, `lastDeliveryAttemptTime`, written
  beside the event's own fields, in camel case for the Event Grid schema and in lower case for
  CloudEvents, whose extension attributes must be lower-case), which is read and set apart first.

The SDK is imported on first use: `import function_app` does not pay for it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dlp.inputs.events import Intake, intake

log = logging.getLogger("dlp.event_files")

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024    # a dead-letter blob holds events of at most 1 MB each; more is not Event Grid
MAX_EVENTS = 5000                        # events read from one document

# Event Grid's dead-letter fields, by their lower-case name (CloudEvents writes them lower-case)
DEAD_LETTER_FIELDS = {name.lower(): name for name in (
    "deadLetterReason", "deliveryAttempts", "lastDeliveryOutcome", "lastHttpStatusCode", "publishTime",
    "lastDeliveryAttemptTime")}


class EventDocumentError(ValueError):
    """The document is not JSON, or not an event or an array of events (one line, no traceback)."""


@dataclass(frozen=True)
class DeadLetter:
    """Why Event Grid gave up on an event (its dead-letter metadata); text is kept short and as given."""

    reason: str = ""
    delivery_attempts: int = 0
    last_outcome: str = ""
    last_http_status: int = 0
    publish_time: str = ""


@dataclass(frozen=True)
class DocumentEvent:
    """One event of a document: what it asks for, its dead-letter metadata, and when it happened."""

    intake: Intake
    dead_letter: DeadLetter | None = None
    event_time: datetime | None = None


def _short(value: Any, limit: int = 128) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1_000_000 else 0


def _split_dead_letter(raw: Mapping[str, Any]) -> tuple[dict[str, Any], DeadLetter | None]:
    """The event without Event Grid's dead-letter fields, and those fields (None when it has none)."""
    event: dict[str, Any] = {}
    found: dict[str, Any] = {}
    for key, value in raw.items():
        name = DEAD_LETTER_FIELDS.get(key.lower()) if isinstance(key, str) else None
        if name:
            found[name] = value
        else:
            event[key] = value
    if not found:
        return event, None
    return event, DeadLetter(reason=_short(found.get("deadLetterReason")),
                             delivery_attempts=_count(found.get("deliveryAttempts")),
                             last_outcome=_short(found.get("lastDeliveryOutcome")),
                             last_http_status=_count(found.get("lastHttpStatusCode")),
                             publish_time=_short(found.get("publishTime"), 64))


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _malformed(raw: Any, why: str, dead_letter: DeadLetter | None = None) -> DocumentEvent:
    event_id = _short(raw.get("id")) if isinstance(raw, Mapping) else ""
    return DocumentEvent(Intake(event_id or "<no id>", malformed=why), dead_letter)


def parse_event(raw: Any, *, trigger: str = "event") -> DocumentEvent:
    """One JSON object in the Event Grid or CloudEvents schema -> what it asks for. Never raises."""
    if not isinstance(raw, Mapping):
        return _malformed(raw, "event is not a JSON object")
    event, dead_letter = _split_dead_letter(raw)
    cloud = "specversion" in event
    type_key = "type" if cloud else "eventType"
    for name in ("id", type_key, "subject"):         # the SDK would turn any value into text: not a string is absent
        if name in event and not isinstance(event[name], str):
            event[name] = None
    try:
        if cloud:
            from azure.core.messaging import CloudEvent

            parsed = CloudEvent.from_dict(event)
            fields = (parsed.id, parsed.type, parsed.subject, parsed.data, parsed.time)
        else:
            from azure.eventgrid import EventGridEvent

            parsed = EventGridEvent.from_dict(event)
            fields = (parsed.id, parsed.event_type, parsed.subject, parsed.data, parsed.event_time)
    except Exception as exc:                  # DeserializationError, ValueError, TypeError...
        # The SDK's refusal (no `source`, an unparseable time...) does not drop an event that still names a
        # registry: handling it costs one fresh read, which can never cause a wrong write.
        log.info("event %s is not valid for the Event Grid SDK (%s); read field by field",
                 _short(event.get("id")) or "<no id>", " ".join(str(exc).split())[:200] or type(exc).__name__)
        fields = (event.get("id"), event.get(type_key), event.get("subject"), event.get("data"), None)
    event_id, event_type, subject, data, moment = fields
    moment = _aware(moment)
    return DocumentEvent(intake(event_id, event_type, subject, data, moment.isoformat() if moment else "",
                                trigger=trigger), dead_letter, moment)


def parse_document(document: Any, *, trigger: str = "event") -> list[DocumentEvent]:
    """An event, or an array of events (what Event Grid delivers and what it dead-letters), -> one entry each."""
    if isinstance(document, Mapping):
        return [parse_event(document, trigger=trigger)]
    if isinstance(document, list):
        if len(document) > MAX_EVENTS:
            raise EventDocumentError(f"holds {len(document)} events; at most {MAX_EVENTS} are read from one document")
        return [parse_event(item, trigger=trigger) for item in document]
    raise EventDocumentError("is not an event (a JSON object) or an array of events")


def load_document(content: bytes | str, *, trigger: str = "event") -> list[DocumentEvent]:
    """Bytes or text of a JSON document -> its events; EventDocumentError when it is not one."""
    if len(content) > MAX_DOCUMENT_BYTES:
        raise EventDocumentError(f"is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
    try:
        document = json.loads(content)
    except (ValueError, RecursionError) as exc:      # UnicodeDecodeError is a ValueError
        raise EventDocumentError(f"is not JSON ({' '.join(str(exc).split())[:120]})") from None
    return parse_document(document, trigger=trigger)


def from_json(body: Any) -> Intake:
    """A raw Event Grid or CloudEvents JSON object (tests, the CLI, replayed dead letters) -> Intake, parsed with the
    Event Grid SDK like a dead-lettered event. Never raises."""
    return parse_event(body).intake


__all__ = ["DeadLetter", "DocumentEvent", "EventDocumentError", "from_json", "load_document", "parse_document", "parse_event"]
