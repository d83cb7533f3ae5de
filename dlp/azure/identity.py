"""Who the responder is: learnt only from values nobody else can set.

AZURE_CLIENT_ID (a user-assigned identity's client ID) and the `appid`/`azp`, `oid` and `tid` claims of the ARM tokens
this process obtained (`LearningCredential`; a system-assigned identity is known after its first token). Free text
(UPN, `name`, display names) never counts. What is known is handed to dlp.domain.provenance as a `Responder` value:
deciding whether a change or an event is the responder's own is provenance's, not this module's.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from typing import Any

from dlp.domain.provenance import Responder


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

    def responder(self) -> Responder:
        """What is known now, as the value dlp.domain.provenance decides with."""
        with self._guard:
            return Responder.of(self.app_ids, self.object_ids, self.tenant_ids)


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


__all__ = ["Identity", "LearningCredential"]
