"""`python -m dlp replay`: run events from a file (or the dead-letter container) through the pipeline.

Why: an operator holding a dead-letter blob downloaded by hand, or an event copied from the portal, wants
to know what the responder makes of it, now, with a fresh read of the registry. Each event goes through
the same intake and pipeline as a live one. Plan-only by default: nothing is written. `--remediate`
writes (with every guard) only when DLP_MODE is `enforce`, as `/api/recheck?remediate=true` does.

`--dead-letter` reads DLP_DEADLETTER_CONTAINER on AzureWebJobsStorage itself and leaves every blob where it
is: the replay timer of the deployed app records and moves them.

Exit codes: 0 every registry found compliant, 1 a registry was found drifted (the state found, before
any remediation), 2 a document or event could not be read, or any Azure error (sign-in, a registry that could
not be read or written: its row says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlp.cli.console import EXIT_ERROR, EXIT_FAIL, EXIT_OK, environment_settings, error
from dlp.domain.model import A_DEFERRED, A_ERROR

NAME = "replay"
CLI_BUDGET_S = 3600.0
FORMATS = ("table", "json")
FAILED = (A_ERROR, A_DEFERRED)          # actions that mean Azure did not answer as needed: exit code 2
OUTSIDE = "outside the --scope/--subscription/--resource-group given"


def register(subparsers: Any) -> None:
    from dlp.cli import where

    parser = subparsers.add_parser(
        NAME, help="run events (a file, stdin, or the dead-letter container) through the pipeline, plan-only",
        description="Run Event Grid or CloudEvents events through the responder's pipeline with a fresh read of "
                    "each registry: a single event, an array of events, or a dead-letter blob. Plan-only unless "
                    "--remediate (asks first, or --yes). Exit code: 0 compliant, 1 drift found, "
                    "2 unreadable input or Azure errors.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="JSON file of events; - reads stdin")
    parser.add_argument("--dead-letter", action="store_true",
                        help="read the blobs of DLP_DEADLETTER_CONTAINER on AzureWebJobsStorage (left in place)")
    where.add_arguments(parser)
    parser.add_argument("--remediate", action="store_true",
                        help="write where the guards allow it (asks first)")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask before --remediate writes")
    parser.add_argument("-o", "--output", "--format", dest="format", choices=FORMATS, default="table",
                        help="output format (default: table)")
    parser.add_argument("-v", "--verbose", action="store_true", help="on a sign-in failure, each credential tried")
    parser.set_defaults(run=run)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dlp.cli import azure_session, where
    from dlp.cli.scan import REFUSE_WITHOUT_TERMINAL, build_services

    if not args.paths and not args.dead_letter:
        error(NAME, "name a file of events (or - for stdin), or pass --dead-letter")
        return EXIT_ERROR
    try:
        selected = where.where_of(args)
    except ValueError as exc:
        error(NAME, str(exc))
        return EXIT_ERROR
    if selected.group and args.dead_letter:
        error(NAME, "--dead-letter with --resource-group needs --subscription (or --scope) too")
        return EXIT_ERROR
    if args.remediate and not args.yes and not sys.stdin.isatty():
        error(NAME, REFUSE_WITHOUT_TERMINAL)
        return EXIT_ERROR
    settings = environment_settings(NAME)
    if settings is None:
        return EXIT_ERROR
    if selected.scopes:
        narrowed = selected.narrow(settings.scopes)
        if not narrowed:
            error(NAME, "the scope given lies outside DLP_SCOPES: the responder would touch none of it")
            return EXIT_ERROR
        settings = replace(settings, scopes=narrowed)
    if args.remediate and not args.yes and not _confirm():
        sys.stderr.write(f"{NAME}: not confirmed: nothing is written, the plan is reported\n")
        args.remediate = False
    credential = azure_session.sign_in(NAME, settings, args.verbose)
    if credential is None:
        return EXIT_ERROR
    services = build_services(settings, credential)
    lines: list[dict[str, Any]] = []
    problems = 0
    for path in args.paths:
        problems += _replay_file(path, services, args.remediate, lines, selected)
    if args.dead_letter:
        problems += _replay_container(settings, services, args.remediate, lines, credential)
    return _emit(lines, args.format, problems)


def _confirm() -> bool:
    """Ask on the terminal (stderr + stdin, so stdout stays clean for -o json)."""
    sys.stderr.write("Write to the registries these events name (public network access / exports, where the guards "
                     "allow it)? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _replay_file(path: str, services: Any, remediate: bool, lines: list[dict[str, Any]], selected: Any) -> int:
    from dlp.azure.budget import Budget
    from dlp.inputs.event_files import EventDocumentError, load_document
    from dlp.responder import history
    from dlp.responder.deadletter import replay_targets
    from dlp.responder.pipeline import run as run_pipeline

    shown = "stdin" if path == "-" else path
    try:
        events = load_document(_read(path), trigger="cli")
    except OSError as exc:
        error(NAME, f"{shown}: {exc.strerror or exc}")
        return 1
    except EventDocumentError as exc:
        error(NAME, f"{shown} {exc}")
        return 1
    problems = 0
    for event in events:
        if event.intake.malformed:
            error(NAME, f"{shown}: event {event.intake.event_id}: {event.intake.malformed}")
            problems += 1
        elif event.intake.ignored:
            lines.append({"source": shown, "eventId": event.intake.event_id, "ignored": event.intake.ignored})
    targets = history.confirm_callers(services, replay_targets(events, services.clock())[0])
    for target in targets:
        if not selected.contains(target.registry_id):
            lines.append({"source": shown, "eventId": target.context.event_id, "registryId": target.registry_id,
                          "ignored": OUTSIDE})
            continue
        for evaluation in run_pipeline([target], services, enforce=remediate, budget=Budget.of(CLI_BUDGET_S)):
            lines.append(_line(shown, evaluation))
    return problems


def _replay_container(settings: Any, services: Any, remediate: bool, lines: list[dict[str, Any]],
                      credential: Any) -> int:
    from dlp.azure.errors import classify
    from dlp.responder.deadletter import DeadLetterContainer, Replayer

    container = DeadLetterContainer.from_settings(settings, credential)
    if container is None:
        error(NAME, "--dead-letter needs DLP_DEADLETTER_CONTAINER and AzureWebJobsStorage (a connection string, "
                    "or AzureWebJobsStorage__blobServiceUri)")
        return 1
    try:
        report = Replayer(services, container, enforce=remediate, settle=False).run(budget_s=CLI_BUDGET_S)
    except Exception as exc:
        error(NAME, f"the dead-letter container {settings.deadletter_container} could not be read: {classify(exc)}")
        return 1
    problems = 0
    for blob in report.blobs:
        if blob.problem:
            error(NAME, f"{blob.name}: {blob.problem}")
            problems += 1
        problems += blob.malformed
        lines.extend(_line(blob.name, evaluation) for evaluation in blob.evaluations)
    return problems


def _line(source: str, evaluation: Any) -> dict[str, Any]:
    context = evaluation.context
    reason = evaluation.outcome.reason
    detail = " ".join(evaluation.outcome.detail.split())
    line = {"source": source, "eventId": context.event_id, "registryId": evaluation.registry_id,
            "compliant": evaluation.compliant, "action": evaluation.outcome.action,
            "reason": reason, "detail": detail.removeprefix(f"{reason}: ") if reason else detail,
            "caller": context.caller}
    if context.dead_letter_reason:
        line["deadLetterReason"] = context.dead_letter_reason
        line["replayDelaySeconds"] = context.replay_delay_s
    return line


def _emit(lines: Sequence[dict[str, Any]], fmt: str, problems: int) -> int:
    from dlp.sanitize import clean  # event fields are anyone's text: one plain line on a terminal

    if fmt == "json":
        sys.stdout.write(json.dumps(list(lines), indent=2) + "\n")
    else:
        header = f"{'EVENT':<38} {'REGISTRY':<24} {'COMPLIANT':<9} {'ACTION':<15} DETAIL"
        rows = [header]
        for line in lines:
            if "ignored" in line:
                name = clean(line.get("registryId", "-").rsplit("/", 1)[-1])
                rows.append(f"{clean(line['eventId'])[:38]:<38} {name:<24} {'-':<9} {'ignored':<15} "
                            f"{clean(line['ignored'])}")
                continue
            name = line["registryId"].rsplit("/", 1)[-1]
            compliant = {True: "yes", False: "NO", None: "?"}[line["compliant"]]
            reason, detail = line["reason"], line["detail"]
            if not reason or reason not in detail:                      # "HTTP 403 Code: message" says it already
                detail = reason + (": " if reason and detail else "") + detail
            if line.get("deadLetterReason"):
                detail += f" [dead-lettered: {line['deadLetterReason']}, {line['replayDelaySeconds']} s late]"
            rows.append(f"{clean(line['eventId'])[:38]:<38} {name:<24} {compliant:<9} {line['action']:<15} "
                        f"{clean(detail)}")
        sys.stdout.write("\n".join(rows) + "\n")
    sys.stdout.flush()
    if problems or any(line.get("action") in FAILED for line in lines):
        return EXIT_ERROR
    return EXIT_FAIL if any(line.get("compliant") is False for line in lines) else EXIT_OK
