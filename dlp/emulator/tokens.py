"""Opaque bearer tokens shared by the identity endpoint and the services that check them.

Real tokens are JWTs whose audience must match the service; here a token is JWT-shaped
(base64url header.payload.random signature, never verified by anyone) with the claims a
managed identity's token carries (`aud`, `appid`, `oid`, `tid`, `exp`), remembered with the
resource it was minted for, so a service can still answer 401
`InvalidAuthenticationTokenAudience` when code asks for the wrong scope (a classic mistake: an
ARM token sent to Logs Ingestion, or a custom ARM endpoint with the default scope).
A system-assigned identity is SYSTEM_CLIENT_ID; every client ID has a stable object ID.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from dlp.emulator.base import Request, Response, arm_error

DEFAULT_LIFETIME_S = 24 * 3600   # App Service hands out tokens valid ~24 h
SYSTEM_CLIENT_ID = "00000000-0000-0000-0000-00000000e11a"   # the app's system-assigned identity
TENANT_ID = "72f988bf-0000-4000-8000-00000000e11a"


def object_id_of(client_id: str) -> str:
    """The (stable, made-up) object ID of the service principal behind a client ID."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "dlp-emulator/" + client_id.lower()))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "RS256"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(24))}"


def resource_of_scope(scope: str) -> str:
    """`https://x/.default` -> `https://x` (what msal does before calling the identity endpoint)."""
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


def _norm(resource: str) -> str:
    return resource.strip().rstrip("/").lower()


@dataclass(frozen=True)
class Token:
    value: str
    resource: str
    expires_on: int
    client_id: str | None = None


class TokenStore:
    """Tokens minted so far; services ask `check()` whether a request's bearer token is good for them."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()
        self.lifetime_s = DEFAULT_LIFETIME_S

    def mint(self, resource: str, client_id: str | None = None) -> Token:
        expires = int(time.time()) + int(self.lifetime_s)
        app_id = client_id or SYSTEM_CLIENT_ID
        value = _jwt({"aud": resource, "appid": app_id, "oid": object_id_of(app_id), "tid": TENANT_ID,
                      "idtyp": "app", "exp": expires})
        token = Token(value, resource, expires, client_id)
        with self._lock:
            self._tokens[token.value] = token
        return token

    def get(self, value: str) -> Token | None:
        with self._lock:
            return self._tokens.get(value)

    def revoke_all(self) -> None:
        """Forget every token: the next request with an old one gets 401 (tests of re-authentication)."""
        with self._lock:
            self._tokens.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)

    def check(self, request: Request, audiences: Iterable[str]) -> Response | None:
        """None when the bearer token is known, unexpired and meant for one of `audiences`; else ARM's 401."""
        value = request.bearer
        if value is None:
            return _unauthorized("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                                 "The authentication failed because of missing 'Authorization' header.")
        token = self.get(value)
        if token is None or token.expires_on <= time.time():
            return _unauthorized("InvalidAuthenticationToken", "The access token is invalid.",
                                 "The access token is invalid or expired.")
        allowed = [a for a in audiences]
        if allowed and _norm(token.resource) not in {_norm(a) for a in allowed}:
            message = (f"The access token has been obtained for wrong audience or resource '{token.resource}'. "
                       f"It should exactly match with one of the allowed audiences "
                       f"{', '.join(repr(a) for a in allowed)}.")
            return _unauthorized("InvalidAuthenticationTokenAudience", message, "The access token audience is invalid.")
        return None


def _unauthorized(code: str, message: str, description: str) -> Response:
    challenge = (f'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                 f'error="invalid_token", error_description="{description}"')
    return Response.json(401, arm_error(code, message), {"WWW-Authenticate": challenge})


class EmulatorCredential:
    """A TokenCredential minting straight from the store (no HTTP): for benchmarks and unit tests.

    The app itself uses `DefaultAzureCredential` against the emulated identity endpoint.
    """

    def __init__(self, store: TokenStore) -> None:
        self._store = store
        self.calls = 0

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: object) -> AccessToken:
        info = self.get_token_info(*scopes)
        return AccessToken(info.token, info.expires_on)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        if len(scopes) != 1:
            raise ValueError("exactly one scope, as managed identity requires")
        self.calls += 1
        token = self._store.mint(resource_of_scope(scopes[0]))
        return AccessTokenInfo(token.value, token.expires_on)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> EmulatorCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
