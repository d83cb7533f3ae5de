"""`python -m dlp scan`: the live registries, listed through Azure Resource Graph, same rules and report.

Why a live mode: `evaluate` needs JSON files someone exported; `scan` asks Azure directly
(`DefaultAzureCredential`, so it works after `az login`) with the sweep's engine: one Resource
Graph query per 1,000 registries, and an ARM re-read only for registries that need a write.

Output and exit codes are `evaluate`'s: table / json / sarif on stdout; 0 nothing fails, 1 a
finding fails (the state found, before any remediation), 2 usage or Azure errors (the other
registries are still reported). `--format json` prints each registry's `evaluate` element
plus its `remediation` object (the same element as the HTTP re-check).
Progress and the remediation summary go to stderr, so stdout stays machine-readable.

`--remediate` writes (public network access and export policy only, with every guard of the
responder) after a confirmation on the terminal, or with `--yes`; without a terminal and without
`--yes` it refuses before any Azure call. Nothing is recorded to Log Analytics or alerted from a
workstation: the write raises an Event Grid event, which the deployed responder records.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from dlp.cli import report
from dlp.cli.console import EXIT_ERROR, EXIT_FAIL, EXIT_OK, environment_settings, error, warning
from dlp.domain.model import A_DEFERRED, A_ERROR, A_GONE, A_NONE, Context, Evaluation

NAME = "scan"
CLI_BUDGET_S = 3600.0            # a person waits; every single request is still capped (dlp.azure.budget)
# The one rule of --remediate, on every command that has it (docs/cli.md, "Azure: sign-in, scopes and writing")
REFUSE_WITHOUT_TERMINAL = "--remediate asks for confirmation on a terminal; pass --yes to remediate without asking"


def register(subparsers: Any) -> None:
    from dlp.cli import where

    parser = subparsers.add_parser(
        NAME, help="scan live registries through Azure Resource Graph (DefaultAzureCredential: works after az login)",
        description="List container registries with Azure Resource Graph and evaluate the DLP rules on them. "
                    "Only registries that need a write are re-read from ARM. Exit code: 0 nothing fails, "
                    "1 a finding fails, 2 usage or Azure errors.")
    where.add_arguments(parser)
    parser.add_argument("--remediate", action="store_true",
                        help="disable public network access / exports where the guards allow it (asks first)")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask before --remediate writes")
    parser.add_argument("-o", "--output", "--format", dest="format", choices=report.FORMATS, default="table",
                        help="output format (default: table)")
    parser.add_argument("-v", "--verbose", action="store_true", help="on a sign-in failure, each credential tried")
    parser.set_defaults(run=run)


def build_services(settings: Any, credential: Any) -> Any:
    """Adapters for a workstation: ARM and Resource Graph with the signed-in credential, breaker and
    leases in memory, no durable retry, nothing recorded or alerted (stdout is the record)."""
    from dlp.azure.arm import ArmGateway
    from dlp.azure.graph import ResourceGraph
    from dlp.azure.memory_state import MemoryState
    from dlp.outputs.alerting import NullNotifier
    from dlp.outputs.recording import LogRecorder
    from dlp.responder.services import Services

    return Services(settings=settings, arm=ArmGateway(settings.arm_endpoint, credential), state=MemoryState(),
                    recorder=LogRecorder(), notifier=NullNotifier(), retry=None,
                    graph=ResourceGraph(settings.arm_endpoint, credential))


def confirm(count: int, stdin: TextIO, stderr: TextIO) -> bool:
    """Ask on the terminal (stderr + stdin, so stdout stays clean for --format json)."""
    noun = "registry" if count == 1 else "registries"
    stderr.write(f"{count} {noun} need(s) a write. Disable public network access / exports where the guards "
                 "allow it? [y/N] ")
    stderr.flush()
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


class Progress:
    """`page n: rows/total` on stderr, only when the listing takes more than one page."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.rows = 0
        self.shown = False

    def __call__(self, page: Any) -> None:
        self.rows += len(page.rows)
        if page.number == 1 and not page.more:
            return
        self.shown = True
        end = "\r" if self.stream.isatty() and page.more else "\n"
        self.stream.write(f"{NAME}: page {page.number}: {self.rows}/{page.total} registries listed{end}")
        self.stream.flush()


def summary(evaluations: Sequence[Evaluation]) -> list[str]:
    """Lines for stderr: what remediation did or would do, per registry that is not `none`."""
    lines = []
    for e in evaluations:
        outcome = e.outcome
        if outcome.action in (A_NONE, A_ERROR, A_DEFERRED, A_GONE):
            continue
        reason = f" ({outcome.reason})" if outcome.reason else ""
        lines.append(f"{NAME}: {e.registry_name}: {outcome.action}{reason}: {' '.join(outcome.detail.split())}")
    return lines


def run(args: argparse.Namespace) -> int:
    from dlp.azure.budget import Budget
    from dlp.cli import azure_session, where
    from dlp.responder.sweep import collect, complete

    try:
        listing = where.where_of(args).listing()
    except ValueError as exc:
        error(NAME, str(exc))
        return EXIT_ERROR
    if args.remediate and not args.yes and not sys.stdin.isatty():
        error(NAME, REFUSE_WITHOUT_TERMINAL)
        return EXIT_ERROR
    settings = environment_settings(NAME)
    if settings is None:
        return EXIT_ERROR
    credential = azure_session.sign_in(NAME, settings, args.verbose)
    if credential is None:
        return EXIT_ERROR

    services = build_services(settings, credential)
    context = Context(trigger="cli", operation_name="dlp scan")
    progress = Progress(sys.stderr)
    budget = Budget.of(CLI_BUDGET_S)
    try:
        pending = collect(listing, services, context=context, budget=budget, enforce=args.remediate, on_page=progress)
    except Exception as exc:
        azure_session.failure(NAME, "Resource Graph could not list the registries", exc, args.verbose)
        return EXIT_ERROR

    enforce = args.remediate
    if enforce and pending.drifted and not args.yes and not confirm(len(pending.drifted), sys.stdin, sys.stderr):
        sys.stderr.write(f"{NAME}: not confirmed: nothing is written, the plan is reported\n")
        enforce = False
    if pending.drifted and progress.shown:
        sys.stderr.write(f"{NAME}: re-reading {len(pending.drifted)} registries that need a write\n")
    result = complete(pending, services, enforce=enforce)
    return emit(explain(result.evaluations, args.remediate), args.format)


def explain(evaluations: Sequence[Evaluation], remediate: bool) -> list[Evaluation]:
    """Without --remediate the plan is only reported: point at --remediate, not at DLP_MODE."""
    from dataclasses import replace

    from dlp.domain.remediation import R_AUDIT

    if remediate:
        return list(evaluations)
    return [replace(e, outcome=replace(e.outcome, detail="run again with --remediate to apply it"))
            if e.outcome.reason == R_AUDIT else e for e in evaluations]


def emit(evaluations: Sequence[Evaluation], fmt: str) -> int:
    """Print the report (stdout) and the problems and remediation summary (stderr); the exit code."""
    failed = False
    for e in evaluations:
        if e.outcome.action == A_GONE:
            sys.stderr.write(f"{NAME}: {e.registry_id} was deleted during the scan\n")
        elif e.outcome.action in (A_ERROR, A_DEFERRED):
            failed = True
            error(NAME, f"{e.registry_id}: {e.outcome.detail or e.outcome.reason}")
    shown = [e for e in evaluations if e.assessment is not None]
    assessments = [e.assessment for e in shown if e.assessment is not None]
    if fmt == "json":
        text = json.dumps([e.to_json() for e in shown], indent=2)
    else:
        text = report.render(assessments, fmt)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if fmt == "sarif" and report.sarif_limit_warning(assessments):
        warning(NAME, report.sarif_limit_warning(assessments))
    for line in summary(shown):
        sys.stderr.write(line + "\n")
    if failed:
        return EXIT_ERROR
    return EXIT_OK if all(a.compliant for a in assessments) else EXIT_FAIL
