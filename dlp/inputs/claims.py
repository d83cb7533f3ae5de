"""Who made a write, from the claims ARM puts in a resource event: attribution an attacker cannot dress up.

The caller controls their token's `name` claim (a display name anyone can set to "Security
Team"), so it is never the identity shown as "Changed by": that is the UPN, else the
`unique_name` / xmlsoap name claim, else `app:<appid>` for a service principal, else
`object:<oid>`. The display name is kept as a secondary value, and the object, app and tenant
IDs travel with every record and alert so a person can look the caller up. Every value is
cleaned (dlp/sanitize.py) and bounded.

Small functions on plain mappings, so any event parser (the Functions binding today, the
azure-eventgrid SDK's models later) can hand its `data` or `claims` over as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dlp.sanitize import clean

UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
XMLSOAP_NAME = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID = "http://schemas.microsoft.com/identity/claims/tenantid"

MAX_CLAIMS_JSON = 64 * 1024     # a token's claims are a few KB; a larger string is not claims
MAX_NAME = 256
MAX_ID = 128
MAX_IP = 64

# "Changed by": most trustworthy first. (claim, prefix)
_IDENTITY = ((UPN, ""), ("upn", ""), ("unique_name", ""), (XMLSOAP_NAME, ""),
             ("appid", "app:"), ("azp", "app:"), (OID, "object:"), ("oid", "object:"))


@dataclass(frozen=True)
class Caller:
    """The principal behind a write, each value cleaned; "" where the claims do not say."""

    name: str = ""              # shown as "Changed by"
    display_name: str = ""      # the free-text `name` claim: secondary, never the identity
    object_id: str = ""
    app_id: str = ""
    tenant_id: str = ""
    ip: str = ""


def claims_of(data: Any) -> Mapping[str, Any]:
    """`data.claims` as a mapping: the object form, or the JSON string older events carry. {} otherwise."""
    if not isinstance(data, Mapping):
        return {}
    return parse_claims(data.get("claims"))


def parse_claims(raw: Any) -> Mapping[str, Any]:
    """Claims given as an object or as a JSON string of one -> a mapping ({} when it is neither)."""
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return {}
    if not isinstance(raw, str) or len(raw) > MAX_CLAIMS_JSON:
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, Mapping) else {}


def _first(claims: Mapping[str, Any], *keys: str, limit: int = MAX_ID) -> str:
    for key in keys:
        value = claims.get(key)
        if isinstance(value, str):
            text = clean(value, limit)
            if text:
                return text
    return ""


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    """The Caller the claims describe (any unusable value is skipped, never trusted)."""
    name = ""
    for key, prefix in _IDENTITY:
        value = _first(claims, key, limit=MAX_NAME)
        if value:
            name = (prefix + value)[:MAX_NAME]
            break
    return Caller(name=name, display_name=_first(claims, "name", limit=MAX_NAME),
                  object_id=_first(claims, OID, "oid"), app_id=_first(claims, "appid", "azp"),
                  tenant_id=_first(claims, TID, "tid"), ip=_first(claims, "ipaddr", limit=MAX_IP))
