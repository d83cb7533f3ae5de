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

from dlp import __version__
from dlp.cli.console import EXIT_ERROR, EXIT_FAIL, EXIT_OK, PROG, environment_settings, error, note, warning

COMMANDS: tuple[str, ...] = ("evaluate", "scan", "exposure", "replay", "demo", "rules")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ACR DLP drift responder: evaluate container registries against the data-loss-prevention rules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"dlp.cli.{name}").register(subparsers)
    return parser


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


__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_FAIL", "EXIT_OK", "PROG", "build_parser", "environment_settings", "error",
           "main", "note", "warning"]
