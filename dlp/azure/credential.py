"""One credential per process: the Function App's managed identity in Azure, `az login` on a workstation."""

from __future__ import annotations

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

            from dlp.budget import BudgetRetryPolicy

            # The token request (managed identity at cold start and at refresh) is bounded by the
            # invocation's budget like every other call: azure-identity builds its pipeline from these.
            _credential = DefaultAzureCredential(exclude_interactive_browser_credential=True,
                                                 retry_policy_class=BudgetRetryPolicy,
                                                 connection_timeout=5, read_timeout=10)
        return _credential


def reset() -> None:
    """Forget the process's credential (and its token cache): a fresh instance, for tests and the demo."""
    global _credential
    with _lock:
        _credential = None
