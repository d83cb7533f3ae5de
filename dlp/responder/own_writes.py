"""Own writes: the event each remediation raises costs nothing.

The responder's PATCH raises a `ResourceWriteSuccess` whose caller is the responder itself. Its
result was verified when the PATCH answered, and any other write raises its own event, so it is
recorded at debug level only: no ARM request, no row, no alert.

Who "itself" is comes only from values nobody else can set: the `appid`/`azp` and object ID claims
of the event (ARM copies them from the validated token), compared with AZURE_CLIENT_ID (a
user-assigned identity's client ID) and with the claims of the ARM tokens this process obtained
(`LearningCredential`; a system-assigned identity is known after its first token). Free text (UPN,
`name`, display names) never counts.

A user-assigned identity can be attached to other resources by anyone with Contributor, so a write
"by the responder's identity" is skipped only when the responder recorded a write attempt on that
registry shortly before (the breaker's row, written before every PATCH, shared by every instance):
a write by the identity that the responder did not make is evaluated like any other.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from datetime import datetime, timedelta
from typing import Any

from dlp.domain.model import Context

log = logging.getLogger("dlp.own_writes")

OWN_WRITE_WINDOW = timedelta(minutes=15)     # an own write's event arrives within this of our breaker row
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Identity:
    """The responder's own principal: app (client) IDs, object IDs and tenants, all lower-case GUIDs."""

    def __init__(self, client_id: str = "") -> None:
        self._guard = threading.Lock()
        self.app_ids: set[str] = {client_id.strip().lower()} if client_id.strip() else set()
        self.object_ids: set[str] = set()
        self.tenant_ids: set[str] = set()

    def learn(self, token: str) -> None:
        """Remember `appid`/`azp`, `oid` and `tid` of an access token this process obtained (never raises: a token
        that is not a JWT teaches nothing). The token is ours, from our credential: its signature is not checked."""
        claims = _jwt_claims(token)
        with self._guard:
            for key, into in (("appid", self.app_ids), ("azp", self.app_ids), ("oid", self.object_ids),
                              ("tid", self.tenant_ids)):
                value = claims.get(key)
                if isinstance(value, str) and value.strip():
                    into.add(value.strip().lower())

    def owns(self, context: Context) -> bool:
        """True when the event's signed claims name this identity (its app ID or object ID, GUIDs only; never the
        caller's name or display name)."""
        app_id, object_id, tenant_id = (_guid(context.caller_app_id), _guid(context.caller_object_id),
                                        _guid(context.caller_tenant_id))
        with self._guard:
            if tenant_id and self.tenant_ids and tenant_id not in self.tenant_ids:
                return False
            return bool((app_id and app_id in self.app_ids) or (object_id and object_id in self.object_ids))


def _guid(value: str) -> str:
    """`value` lower-cased when it is exactly a GUID, else "" (a claim that is not one names nobody)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    return text if _GUID.match(text) else ""


def _jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return payload if isinstance(payload, dict) else {}


class LearningCredential:
    """A TokenCredential that hands out its inner credential's tokens and teaches `identity` their claims."""

    def __init__(self, inner: Any, identity: Identity) -> None:
        self._inner = inner
        self.identity = identity

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = self._inner.get_token(*scopes, **kwargs)
        self.identity.learn(token.token)
        return token

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        getter = getattr(self._inner, "get_token_info", None)
        if getter is None:                   # an older credential: azure-core falls back the same way
            return self.get_token(*scopes)
        info = getter(*scopes, **kwargs)
        self.identity.learn(info.token)
        return info

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def is_own_write(context: Context, registry_id: str, identity: Identity | None, state: Any, now: datetime) -> bool:
    """An event of the responder's own write: its claims name our identity, and its correlation ID is the one our
    PATCH sent, recorded with the write attempt on the registry within OWN_WRITE_WINDOW (one storage query, no ARM
    request)."""
    if identity is None or context.trigger != "event" or not identity.owns(context):
        return False
    try:
        recent = state.recent_remediations(registry_id, now)
    except Exception:
        log.warning("breaker rows of %s could not be read: the event of our identity is evaluated", registry_id,
                    exc_info=True)
        return False
    cutoff = (now - OWN_WRITE_WINDOW).isoformat()
    # our PATCH went out with the intent's evaluation id as its correlation ID, which ARM puts in the event: only
    # that write is ours. Another write with our identity (borrowed by someone who attached it elsewhere), even
    # right after one of ours, carries its own correlation ID and is evaluated.
    if context.correlation_id and any(r.when >= cutoff and r.evaluation_id == context.correlation_id for r in recent):
        return True
    log.warning("a write to %s by the responder's identity (app %s, object %s) that the responder did not record: "
                "evaluated like any other write", registry_id, context.caller_app_id or "-",
                context.caller_object_id or "-")
    return False
