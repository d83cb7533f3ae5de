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

            _credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        return _credential
