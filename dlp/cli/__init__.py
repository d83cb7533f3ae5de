"""`python -m dlp`: one argparse program whose subcommands are modules of this package.

Adding a subcommand (`scan`, `demo`, ...) is one new module plus its name in COMMANDS.
The module defines `register(subparsers)`, which adds its sub-parser and sets the default
`run=<function(args) -> int>` (the exit code). Modules are imported when the program starts,
so `import dlp.cli` itself stays cheap and a broken command cannot break the others' imports
at package import time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from dlp import __version__

# `acr-dlp` when installed with pip (pyproject [project.scripts]), else the module form
PROG = "acr-dlp" if os.path.basename(sys.argv[0] if sys.argv else "") == "acr-dlp" else "python -m dlp"
COMMANDS: tuple[str, ...] = ("evaluate", "scan", "exposure", "replay", "demo", "rules")

# Exit codes shared by every command (docs/cli.md)
EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ACR DLP drift responder: evaluate container registries against the data-loss-prevention rules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"dlp.cli.{name}").register(subparsers)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the chosen command, return its exit code (argparse's usage errors give 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help, --version, usage errors: keep argparse's code
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:             # `... | head`: stop quietly, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
