"""One credential per process: the Function App's managed identity in Azure, `az login` on a workstation."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

_lock = threading.Lock()
_credential: Any = None


def get_credential() -> Any:
    """DefaultAzureCredential: managed identity in Azure (AZURE_CLIENT_ID picks a user-assigned one),
    environment or Azure CLI elsewhere. Built lazily so importing function_app stays cheap."""
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            from dlp.azure.budget import BudgetRetryPolicy

            # The token request (managed identity at cold start and at refresh) is bounded by the
            # invocation's budget like every other call: azure-identity builds its pipeline from these.
            # Only where the platform's managed-identity endpoint is set (App Service / Functions): without it
            # DefaultAzureCredential builds an ImdsCredential, which sets its own retry_policy_class and raises
            # TypeError when given one (azure-identity 1.27), so `dlp scan` / `dlp replay` on a workstation
            # would crash before `az login` is even tried.
            options: dict = {"connection_timeout": 5, "read_timeout": 10}
            if os.environ.get("IDENTITY_ENDPOINT"):
                options["retry_policy_class"] = BudgetRetryPolicy
            _credential = DefaultAzureCredential(exclude_interactive_browser_credential=True, **options)
        return _credential


def reset() -> None:
    """Forget the process's credential (and its token cache): a fresh instance, for tests and the demo."""
    global _credential
    with _lock:
        _credential = None


# --- sign-in failures, for people at a terminal (dlp.cli) -------------------------------------------------------

# What DefaultAzureCredential reads from the environment (EnvironmentCredential, WorkloadIdentityCredential)
_SECRETS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_PASSWORD")


def quiet() -> None:
    """Keep azure-identity's chain report (a dozen WARNING lines, one per credential tried) off a person's terminal:
    the caller says what to do in one line, and with --verbose shows the chain from the exception itself."""
    import logging

    logging.getLogger("azure.identity").setLevel(logging.CRITICAL)


def is_sign_in_failure(exc: BaseException) -> bool:
    """No credential could get a token (nobody signed in, a service principal refused, a managed identity missing),
    as opposed to a service answering 401/403 to a token it was given (that has an HTTP status)."""
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None


def sign_in_fix(environ: Mapping[str, str], az_installed: bool) -> str:
    """The one thing to do, from what the environment shows (never a secret's value)."""
    if environ.get("IDENTITY_ENDPOINT") or environ.get("MSI_ENDPOINT"):
        return ("the managed identity got no token: check the identity assigned to this host (AZURE_CLIENT_ID "
                "names a user-assigned one) and its role assignments")
    named = [name for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", *_SECRETS) if environ.get(name)]
    if named:
        missing = [n for n in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID") if not environ.get(n)]
        if not any(environ.get(n) for n in _SECRETS):
            missing.append("AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH, or AZURE_FEDERATED_TOKEN_FILE)")
        if missing:
            return (f"{', '.join(named)} {'is' if len(named) == 1 else 'are'} set but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not: set them all for a service principal, or unset "
                    "them and run az login")
        return ("the service principal in AZURE_CLIENT_ID could not sign in: check AZURE_TENANT_ID and its secret, "
                "certificate or federated token (or unset them and run az login)")
    if not az_installed:
        return ("not signed in to Azure: install the Azure CLI and run az login, or set AZURE_TENANT_ID, "
                "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal")
    return ("not signed in to Azure: run az login (again, if your sign-in expired), or set AZURE_TENANT_ID, "
            "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal")


def chain_report(exc: BaseException) -> list[str]:
    """The credential chain's own account, one line per credential tried (for --verbose)."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    return [line for line in lines if line and not line.startswith(("Visit https://", "To mitigate this issue"))]
