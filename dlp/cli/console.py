"""What every subcommand says and returns: one line per message on stderr, and the exit codes (docs/cli.md).

A module of its own so that the subcommands (dlp/cli/<name>.py) import it, never the package that registers them:
no import circle between `dlp.cli` and its commands.
"""

from __future__ import annotations

import os
import sys
from typing import Any

# `acr-dlp` when installed with pip (pyproject [project.scripts]), else the module form
PROG = "acr-dlp" if os.path.basename(sys.argv[0] if sys.argv else "") == "acr-dlp" else "python -m dlp"

# Exit codes shared by every command (docs/cli.md)
EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2



def error(command: str, message: str) -> None:
    """One line on stderr per problem, never a traceback."""
    print(f"{PROG} {command}: error: {' '.join(str(message).split())}", file=sys.stderr)


def warning(command: str, message: str) -> None:
    """One line on stderr about output that a consumer may refuse or cut; the exit code is unchanged."""
    print(f"{PROG} {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def note(command: str, message: str) -> None:
    """One informational line on stderr (e.g. --verbose), never mistaken for an error."""
    print(f"{PROG} {command}: note: {' '.join(str(message).split())}", file=sys.stderr)


def environment_settings(command: str) -> Any:
    """The app settings from the environment, parsed like the Function App's, or None after one error line naming
    the bad ones (the commands that talk to Azure read DLP_ARM_ENDPOINT, DLP_MODE, DLP_SCOPES... from there)."""
    from dlp.settings import ConfigError, load

    try:
        return load(os.environ)
    except ConfigError as exc:
        error(command, f"invalid settings in the environment: {exc}")
        return None
