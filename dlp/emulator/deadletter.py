"""Dead-letter blobs as Event Grid writes them, into Azurite's blob service (tests and the demo).

Shape, from Microsoft's "Set dead-letter location and retry policy" and "Event Grid message delivery and
retry" pages: Event Grid writes into the container one blob per dead-lettering, named
`<EVENT-SUBSCRIPTION-NAME>/<yyyy>/<m>/<d>/<h>/<guid>.json` (the subscription name upper-cased, date and hour
in UTC without zero padding); the blob is a JSON array of one or more events, each in the subscription's
delivery schema with the dead-letter fields beside the event's own: `deadLetterReason`
(e.g. `MaxDeliveryAttemptsExceeded`, `UndeliverableDueToClientError`), `deliveryAttempts`,
`lastDeliveryOutcome` (e.g. `TimedOut`, `Probation`, `BadRequest`), `lastHttpStatusCode`, `publishTime` and
`lastDeliveryAttemptTime`. A CloudEvents subscription writes them as lower-case extension attributes
(a CloudEvents attribute name must be lower-case letters and digits).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any


def blob_name(subscription: str, when: datetime, topic: str = "") -> str:
    when = when.astimezone(timezone.utc)
    prefix = f"{topic.strip('/')}/" if topic else ""
    return f"{prefix}{subscription.upper()}/{when.year}/{when.month}/{when.day}/{when.hour}/{uuid.uuid4()}.json"


def dead_lettered(event: Mapping[str, Any], *, reason: str = "MaxDeliveryAttemptsExceeded", attempts: int = 30,
                  outcome: str = "TimedOut", status: int = 408, when: datetime | None = None) -> dict[str, Any]:
    """`event` (Event Grid or CloudEvents schema) with the dead-letter fields Event Grid adds."""
    moment = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    fields = {"deadLetterReason": reason, "deliveryAttempts": attempts, "lastDeliveryOutcome": outcome,
              "lastHttpStatusCode": status, "publishTime": moment, "lastDeliveryAttemptTime": moment}
    if "specversion" in event:
        fields = {name.lower(): value for name, value in fields.items()}
    return {**event, **fields}


def container_client(connection_string: str, container: str) -> Any:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(connection_string, container)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    return client


def write_dead_letters(connection_string: str, container: str, events: Sequence[Mapping[str, Any]] | bytes, *,
                       subscription: str = "dlp-acr-events", when: datetime | None = None, topic: str = "",
                       name: str | None = None) -> str:
    """Write one dead-letter blob (the events as given, or raw bytes for a damaged blob); its name."""
    client = container_client(connection_string, container)
    name = name or blob_name(subscription, when or datetime.now(timezone.utc), topic)
    body = events if isinstance(events, bytes) else json.dumps(list(events)).encode()
    client.upload_blob(name, body, overwrite=True)
    return name


def blob_names(connection_string: str, container: str) -> list[str]:
    return sorted(b.name for b in container_client(connection_string, container).list_blobs())


__all__ = ["blob_name", "blob_names", "container_client", "dead_lettered", "write_dead_letters"]
