"""`python -m dlp exposure`: every window in which a registry was open, from Azure's change history.

Why: the live state shows only the present. A registry whose exports were enabled and disabled again
reads compliant; its change history (Resource Graph's `resourcechanges`, kept 14 days) still shows who
opened it, when, and who closed it. This prints those windows per registry, oldest first, for the DLP
properties (export policy, public network access, firewall default action, anonymous pull, admin user).

With a registry-logs workspace (`--workspace`, else DLP_REGISTRY_LOGS_WORKSPACE), each closed window also shows
what was pulled while it was open (one Log Analytics query per window, at most MAX_PULL_LOOKUPS windows).

`DefaultAzureCredential` (works after `az login`); one Resource Graph query per 1,000 change rows.
Exit codes: 0 no window, 1 at least one window (open or closed), 2 usage or Azure errors.
Every name shown comes from outside (`changedBy`) and is printed through `exposure.display_text`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from dlp.cli.console import EXIT_ERROR, EXIT_FAIL, EXIT_OK, environment_settings, error

NAME = "exposure"
MAX_SINCE = timedelta(days=14)           # Resource Graph keeps change history 14 days
MAX_PULL_LOOKUPS = 50                    # windows whose pulls are looked up per run
FORMATS = ("table", "json")


def register(subparsers: Any) -> None:
    from dlp.cli import where

    parser = subparsers.add_parser(
        NAME, help="print every window in which a registry was open, from Azure's change history",
        description="Read Resource Graph's change history (resourcechanges, 14 days) and print, per registry, the "
                    "intervals in which a DLP property held its non-compliant value, who opened and who closed "
                    "each. Exit code: 0 no window, 1 a window found, 2 usage or Azure errors.")
    where.add_arguments(parser)
    parser.add_argument("--since", default="7d", help="how far back: 7d, 36h, 90m (default 7d, at most 14d)")
    parser.add_argument("--responder", action="append", default=[], metavar="ID",
                        help="the responder identity's client or object ID (repeatable): windows closed by it say "
                             "\"responder's identity\"")
    parser.add_argument("--workspace", default=None, metavar="ID",
                        help="Log Analytics workspace ID receiving the registries' resource logs: show the pulls of "
                             "each closed window (default: DLP_REGISTRY_LOGS_WORKSPACE; '' for none)")
    parser.add_argument("-o", "--output", "--format", dest="format", choices=FORMATS, default="table",
                        help="output format (default: table)")
    parser.add_argument("-v", "--verbose", action="store_true", help="on a sign-in failure, each credential tried")
    parser.set_defaults(run=run)


def since_of(text: str) -> timedelta:
    from dlp.domain.exposure import parse_since

    span = timedelta(seconds=parse_since(text))
    if span <= timedelta(0) or span > MAX_SINCE:
        raise ValueError(f"--since {text!r} must be more than 0 and at most 14d (Azure keeps 14 days of changes)")
    return span


def timeline(where: Any, since: datetime, graph: Any, responder: Sequence[str]) -> dict[str, tuple]:
    """Windows per registry key in these scopes: registries by ID, the rest by subscription/resource group."""
    from dlp.domain import exposure
    from dlp.responder.sweep import Listing

    registries = [s for s in where.scopes if s.count("/") >= 8]
    others = [s for s in where.scopes if s.count("/") < 8]
    rows: list[Any] = []
    if registries:
        rows += [r for page in graph.changes(since, registry_ids=registries) for r in page.rows]
    if others or not registries:
        listing = where.listing() if not registries else Listing.of_scopes(others)
        rows += [r for page in graph.changes(since, subscriptions=listing.subscriptions,
                                             resource_groups=listing.resource_groups) for r in page.rows]
    found = exposure.windows(rows)
    return {key: windows for key, windows in sorted(found.items()) if windows and where.contains(windows[0].registry_id)}


def pulls_of(found: dict[str, tuple], logs: Any, now: datetime) -> dict[str, Any]:
    """Pulls per window key (closed windows with a known start; the first MAX_PULL_LOOKUPS), each a Pulls."""
    from dlp.azure.logs_query import QueryFailed
    from dlp.domain import pulls

    out: dict[str, Any] = {}
    for windows in found.values():
        for window in windows:
            if not window.closed or window.opened_at is None or window.closed_at is None:
                continue
            if len(out) >= MAX_PULL_LOOKUPS:
                out[window.key] = pulls.unknown(f"not looked up: more than {MAX_PULL_LOOKUPS} windows")
                continue
            try:
                rows = logs.window_rows(window.registry_id, window.opened_at, window.closed_at, now=now)
            except QueryFailed as exc:
                out[window.key] = pulls.unknown(exc.reason)
                continue
            out[window.key] = pulls.count(rows.rows, window.opened_at, window.closed_at, truncated=rows.truncated)[0]
    return out


def table(found: dict[str, tuple], now: datetime, pulled: dict[str, Any] | None = None,
          responder: Sequence[str] = ()) -> str:
    """Offline, the responder's intents are not at hand: a close by its identity is labelled as such (what
    provenance can tell from `changedBy` alone), never taken as verified."""
    from dlp.domain.exposure import STILL_OPEN, display_text, iso
    from dlp.domain.provenance import Responder

    ours = Responder.of(app_ids=responder, object_ids=responder)

    if not found:
        return "No exposure window in the change history of this scope."
    lines = []
    for windows in found.values():
        still = sum(1 for w in windows if w.closer == STILL_OPEN)
        lines.append(f"{windows[0].registry_id}  ({len(windows)} window{'s' if len(windows) != 1 else ''}"
                     + (f", {still} still open" if still else "") + ")")
        lines.append(f"  {'OPENED (UTC)':<27} {'CLOSED (UTC)':<27} {'SECONDS':>9}  {'PROPERTY':<29} "
                     f"{'OPENED BY':<32} CLOSED BY")
        for w in windows:
            seconds = w.seconds(now)
            closed = {STILL_OPEN: "still open"}.get(w.closer, iso(w.closed_at))
            closer = "-" if w.closer == STILL_OPEN else (
                "responder's identity" if ours.named(w.closed_by) else display_text(w.closed_by, 48))
            lines.append(f"  {iso(w.opened_at) or 'before the history':<27} {closed:<27} "
                         f"{'?' if seconds is None else f'{seconds:g}':>9}  {w.property:<29} "
                         f"{display_text(w.opened_by, 32) or '?':<32} {closer}")
            if pulled is not None and w.key in pulled:
                lines.append(f"    pulls: {pulled[w.key].sentence}")
        lines.append("")
    return "\n".join(lines).rstrip()


def run(args: argparse.Namespace) -> int:
    from dlp.azure.budget import Budget
    from dlp.azure.graph import ResourceGraph
    from dlp.cli import azure_session, where

    try:
        selected = where.where_of(args)
        span = since_of(args.since)
    except ValueError as exc:
        error(NAME, str(exc))
        return EXIT_ERROR
    settings = environment_settings(NAME)
    if settings is None:
        return EXIT_ERROR
    credential = azure_session.sign_in(NAME, settings, args.verbose)
    if credential is None:
        return EXIT_ERROR

    workspace = settings.registry_logs_workspace if args.workspace is None else args.workspace.strip().lower()
    if workspace and not re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", workspace):
        error(NAME, f"--workspace {workspace[:60]!r} is not a workspace ID (a GUID)")
        return EXIT_ERROR
    now = datetime.now(timezone.utc)
    graph = ResourceGraph(settings.arm_endpoint, credential)
    pulled = None
    try:
        with Budget.of(600.0).active():
            found = timeline(selected, now - span, graph, args.responder)
            if workspace:
                from dlp.azure.logs_query import RegistryLogs

                logs = RegistryLogs(workspace, settings.logs_query_endpoint, credential)
                try:
                    pulled = pulls_of(found, logs, now)
                finally:
                    logs.close()
    except Exception as exc:
        azure_session.failure(NAME, "Resource Graph could not read the change history", exc, args.verbose)
        return EXIT_ERROR
    finally:
        graph.close()
    if args.format == "json":
        text = json.dumps([{"registryId": w[0].registry_id,
                            "windows": [{**x.to_json(now), **({"pulls": pulled[x.key].to_json()}
                                                              if pulled and x.key in pulled else {})} for x in w]}
                           for w in found.values()], indent=2)
    else:
        text = table(found, now, pulled, args.responder)
    sys.stdout.write(text + "\n")
    return EXIT_FAIL if found else EXIT_OK
