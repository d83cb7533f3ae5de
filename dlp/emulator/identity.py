"""The App Service / Functions managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).

azure-identity 1.27 delegates to msal's ManagedIdentityClient, which for App Service sends
`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<scope minus /.default>` plus
`client_id` / `mi_res_id` / `object_id` for a user-assigned identity, with headers
`X-IDENTITY-HEADER: <IDENTITY_HEADER>` and `Metadata: true`, and reads `access_token`,
`expires_on` (epoch seconds; a string on App Service), `resource`, `token_type`.
App Service serves it on plain http://localhost, and so do we (no bearer policy involved).
msal caches the token per resource for the credential's lifetime (refreshes at half-life
when the lifetime is >= 2 h), so count token requests per credential instance.
"""

from __future__ import annotations

import secrets

from dlp.emulator.base import Emulator, Request, Response
from dlp.emulator.tokens import SYSTEM_CLIENT_ID, TokenStore

TOKEN_PATH = "/msi/token"
API_VERSION = "2019-08-01"


class IdentityEmulator(Emulator):
    name = "identity"
    scheme = "http"

    def __init__(self, tokens: TokenStore, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.tokens = tokens
        self.header_secret = secrets.token_hex(16)
        # None: any client_id / mi_res_id / object_id is accepted (user-assigned identities exist)
        self.client_ids: set[str] | None = None

    @property
    def endpoint(self) -> str:
        """Value for IDENTITY_ENDPOINT (App Service uses http://localhost:<port>/msi/token)."""
        return self.url + TOKEN_PATH

    @property
    def token_requests(self) -> int:
        return self.log.count(method="GET", path_contains=TOKEN_PATH)

    def handle(self, request: Request) -> Response:
        if request.method != "GET" or request.path.rstrip("/").lower() != TOKEN_PATH:
            return _msi_error(404, "Not found")
        if request.headers.get("X-IDENTITY-HEADER") != self.header_secret:
            return _msi_error(401, "Unauthorized: X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER")
        if request.param("api-version") != API_VERSION:
            return _msi_error(400, f"Unsupported api-version '{request.param('api-version')}'; expected {API_VERSION}")
        resource = request.param("resource")
        if not resource:
            return _msi_error(400, "The 'resource' query parameter is required")
        client_id = request.param("client_id") or request.param("mi_res_id") or request.param("object_id") or None
        if client_id and self.client_ids is not None and client_id not in self.client_ids:
            return _msi_error(400, f"No user-assigned identity with id '{client_id}' is assigned to this app")
        token = self.tokens.mint(resource, client_id)
        payload = {"access_token": token.value, "expires_on": str(token.expires_on), "resource": resource,
                   "token_type": "Bearer", "client_id": client_id or SYSTEM_CLIENT_ID}
        return Response.json(200, payload)


def _msi_error(status: int, message: str) -> Response:
    """App Service's own error shape (msal turns a body without access_token into `invalid_scope`)."""
    return Response.json(status, {"statusCode": status, "message": message})
