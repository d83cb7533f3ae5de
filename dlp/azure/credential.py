"""One credential per process: the Function App's managed identity in Azure, `az login` on a workstation."""

from __future__ import annotations

import os
import threading
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
