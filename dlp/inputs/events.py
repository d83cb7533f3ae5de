"""Event Grid / CloudEvents -> targets. Irrelevant input stops here with no I/O.

The Functions binding hands us a `func.CloudEvent` when the payload has `specversion`,
else a `func.EventGridEvent`, whatever the annotation says, so both are read by duck typing.

Two resource-group events matter too (issue 22, dlp/responder/scope_exits.py): a `ResourceActionSuccess` for
`Microsoft.Resources/subscriptions/resourceGroups/moveResources/action` and a `ResourceDeleteSuccess` for
`.../resourceGroups/delete`. Their subject (and `data.resourceUri`) is the resource group; their data is the usual
one (claims, correlationId, httpRequest with the POST URL): it does not list the moved resources nor name the target
resource group, because Event Grid's resource events carry no request body (Event Grid's Azure subscription event
schema). They become a `GroupChange`: every registry known there is read again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dlp.domain.model import GONE_DELETED, GONE_MOVED, Context, Target
from dlp.ids import fold, registry_of, resource_group_of
from dlp.inputs.claims import MAX_IP, OID, UPN, Caller, caller_from_claims, claims_of
from dlp.sanitize import clean

WRITE_SUCCESS = "microsoft.resources.resourcewritesuccess"
DELETE_SUCCESS = "microsoft.resources.resourcedeletesuccess"
ACTION_SUCCESS = "microsoft.resources.resourceactionsuccess"
RELEVANT_TYPES = (WRITE_SUCCESS, DELETE_SUCCESS, ACTION_SUCCESS)
OPERATION_PREFIX = "Microsoft.ContainerRegistry/registries"   # the event subscription filters on this too
MOVE_OPERATION = "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action"
GROUP_DELETE_OPERATION = "Microsoft.Resources/subscriptions/resourceGroups/delete"
# data.operationName prefixes the event subscription lets through (infra/app/event-subscription.bicep)
OPERATION_FILTERS = (OPERATION_PREFIX, MOVE_OPERATION, GROUP_DELETE_OPERATION)

LIVE = "event"     # the Event Grid trigger: claims ARM signed; any other source (a file, a blob) is anyone's text
__all__ = ["OID", "UPN", "GroupChange", "Intake", "caller_of", "from_function_event", "intake"]


@dataclass(frozen=True)
class GroupChange:
    """Registries may have left this resource group: moved away (`moveResources`) or deleted with it."""

    resource_group: str
    reason: str                 # dlp.domain.model.GONE_MOVED or GONE_DELETED
    context: Context


@dataclass(frozen=True)
class Intake:
    """What an event asks for: targets, or why nothing (ignored) or why it is unusable (malformed)."""

    event_id: str
    targets: tuple[Target, ...] = ()
    ignored: str = ""
    malformed: str = ""
    group_change: GroupChange | None = None


def _text(value: Any, limit: int = 512) -> str:
    """An outside string as one clean line (dlp/sanitize.py), bounded; "" for anything else."""
    return clean(value, limit) if isinstance(value, str) else ""


def caller_of(data: Mapping[str, Any]) -> Caller:
    """Who made the write (dlp/inputs/claims.py); the client IP from httpRequest, else the `ipaddr` claim.
    `data.claims` may be an object or, in older events, a JSON string of one."""
    caller = caller_from_claims(claims_of(data))
    http = data.get("httpRequest")
    ip = _text(http.get("clientIpAddress"), MAX_IP) if isinstance(http, Mapping) else ""
    return replace(caller, ip=ip or caller.ip)


def intake(event_id: Any, event_type: Any, subject: Any, data: Any, event_time: Any = "",
           trigger: str = "event") -> Intake:
    """One event's fields -> what to evaluate. Never raises."""
    eid = _text(event_id, 128) or "<no id>"
    if not isinstance(event_type, str) or not event_type:
        return Intake(eid, malformed="event has no event type")
    kind = fold(event_type)
    if kind not in RELEVANT_TYPES:
        return Intake(eid, ignored=f"event type {_text(event_type, 128)} is not a resource write, delete or action success")
    if not isinstance(data, Mapping):
        return Intake(eid, malformed="event data is not a JSON object")
    operation = data.get("operationName")
    if operation is not None and not isinstance(operation, str):
        return Intake(eid, malformed="data.operationName is not a string")
    operation = operation or ""
    resource = subject if isinstance(subject, str) and subject else data.get("resourceUri")
    group_reason = {(ACTION_SUCCESS, fold(MOVE_OPERATION)): GONE_MOVED,
                    (DELETE_SUCCESS, fold(GROUP_DELETE_OPERATION)): GONE_DELETED}.get((kind, fold(operation)))
    if group_reason:
        return _group_change(eid, group_reason, resource, operation,
                             _context(eid, event_type, operation, data, event_time, trigger))
    if operation and not fold(operation).startswith(fold(OPERATION_PREFIX)):
        return Intake(eid, ignored=f"operation {_text(operation, 128)} is not on a container registry")
    if kind == ACTION_SUCCESS or fold(operation).endswith("/action"):
        return Intake(eid, ignored=f"operation {_text(operation, 128)} is an action, not a write")
    if not isinstance(resource, str) or not resource:
        return Intake(eid, malformed="event has no subject or data.resourceUri")
    found = registry_of(resource)
    if found is None:
        if "/providers/microsoft.containerregistry/registries/" in fold(resource):
            return Intake(eid, malformed=f"subject is not a valid registry ID: {resource[:200]!r}")
        return Intake(eid, ignored="subject is not a container registry")
    registry_id, is_registry = found
    context = _context(eid, event_type, operation, data, event_time, trigger)
    deleted = kind == DELETE_SUCCESS and is_registry
    return Intake(eid, targets=(Target(registry_id, context, deleted=deleted),))


def _context(eid: str, event_type: str, operation: str, data: Mapping[str, Any], event_time: Any,
             trigger: str) -> Context:
    caller = caller_of(data)
    return Context(trigger=trigger, event_id=eid, event_type=_text(event_type, 128),
                   operation_name=_text(operation, 256), correlation_id=_text(data.get("correlationId"), 128),
                   caller=caller.name, caller_ip=caller.ip, caller_name=caller.display_name,
                   caller_object_id=caller.object_id, caller_app_id=caller.app_id,
                   caller_tenant_id=caller.tenant_id, caller_verified=bool(caller.name) and trigger == LIVE,
                   event_time=_text(event_time if isinstance(event_time, str) else
                                    getattr(event_time, "isoformat", lambda: "")(), 64))


def _group_change(eid: str, reason: str, resource: Any, operation: str, context: Context) -> Intake:
    """A move out of, or the deletion of, a resource group: its registries are read again."""
    group = resource_group_of(resource)
    if group is None:
        return Intake(eid, malformed=f"{_text(operation, 128)} event whose subject is not a resource group ID: "
                                     f"{_text(resource, 200)!r}")
    return Intake(eid, group_change=GroupChange(group, reason, context))


def from_function_event(event: Any) -> Intake:
    """A `func.EventGridEvent` or `func.CloudEvent` (or anything else) -> Intake. Never raises."""
    try:
        event_type = getattr(event, "event_type", None) or getattr(event, "type", None)
        event_time = getattr(event, "event_time", None) or getattr(event, "time", None)
        data = event.get_json() if hasattr(event, "get_json") else None
        return intake(getattr(event, "id", None), event_type, getattr(event, "subject", None), data, event_time)
    except Exception as exc:
        return Intake(_text(getattr(event, "id", None), 128) or "<no id>", malformed=f"unreadable event: {type(exc).__name__}")

