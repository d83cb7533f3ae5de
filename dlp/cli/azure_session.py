"""How the commands that talk to Azure (`scan`, `exposure`, `replay`) sign in and fail: the same way each.

- One token request for ARM before any work, so a missing sign-in is one line naming the fix (`az login`, the
  `AZURE_*` variables, or the managed identity) and exit code 2, never a page of azure-identity's chain report
  and never a report whose every row says "error". `--verbose` adds the chain's account, one `note:` per line.
- Any other Azure failure is one line too: what could not be done, then the HTTP status, Azure's error code and
  its message, without repeating the code (dlp.azure.errors.classify).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from dlp.cli.console import error, note


def sign_in(command: str, settings: Any, verbose: bool = False) -> Any | None:
    """The process's credential, proven by one ARM token; None after one error line (the caller exits 2)."""
    from dlp.azure.credential import get_credential, quiet

    quiet()
    credential = get_credential()
    try:
        credential.get_token(settings.arm_scope)
    except Exception as exc:
        failure(command, "could not get a token for Azure Resource Manager", exc, verbose)
        return None
    return credential


def failure(command: str, what: str, exc: BaseException, verbose: bool = False) -> None:
    """One error line for an Azure failure (the sign-in fix when nobody could sign in); --verbose adds detail."""
    from dlp.azure.credential import chain_report, is_sign_in_failure, sign_in_fix
    from dlp.azure.errors import classify

    if is_sign_in_failure(exc):
        error(command, sign_in_fix(os.environ, shutil.which("az") is not None)
              + ("" if verbose else " (--verbose shows each credential tried)"))
        if verbose:
            for line in chain_report(exc):
                note(command, line)
        return
    error(command, f"{what}: {classify(exc)}")
