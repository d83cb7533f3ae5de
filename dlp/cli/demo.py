"""`python -m dlp demo`: the whole responder flow on this machine, no Azure account needed.

A local emulator plays ARM, managed identity, Log Analytics, Teams and email over HTTPS;
the responder runs exactly as in Azure (same handler, same SDK clients), only its endpoints
point at 127.0.0.1. Durable state is in memory here (the tests use Azurite).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from dlp.cli.console import EXIT_ERROR, EXIT_FAIL, EXIT_OK, error

# What the emulator needs beyond requirements.txt (the deployed package has neither the emulator nor these).
DEV_ONLY = frozenset({"trustme"})
INSTALL_DEV = ".venv/bin/pip install -r requirements-dev.txt"
INSTALL_EXTRA = "pip install trustme (or, from a clone of the repository, pip install '.[demo]')"


def install_hint() -> str:
    """In a clone, the quick start's requirements; installed with pip (`acr-dlp`), the package's demo extra."""
    clone = Path(__file__).resolve().parents[2] / "requirements-dev.txt"
    return INSTALL_DEV if clone.is_file() else INSTALL_EXTRA
SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-payments"
NAME = "acrpayments01"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the responder end to end against a local Azure emulator",
                                   description=__doc__)
    parser.add_argument("--mode", choices=("enforce", "audit"), default="enforce",
                        help="responder mode for the demo (default: enforce)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency the emulator adds to every response")
    parser.set_defaults(run=run)


# ASCII for what a terminal's encoding lacks (a Windows console in cp1252 has no arrow); anything else becomes "?"
_ASCII = {"\u2192": "->", "\u2190": "<-", "\u2026": "...", "\u2014": "-", "\u2013": "-", "\u2264": "<=", "\u2265": ">=",
          "\u00d7": "x", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def printable(text: str, encoding: str | None) -> str:
    """The text as the stream's encoding can show it: every line without trailing spaces, and characters the
    encoding lacks as ASCII look-alikes."""
    lines = "\n".join(line.rstrip() for line in text.split("\n"))
    try:
        lines.encode(encoding or "utf-8")
        return lines
    except (UnicodeEncodeError, LookupError):
        pass
    out = []
    for char in lines:
        try:
            char.encode(encoding or "ascii")
            out.append(char)
        except (UnicodeEncodeError, LookupError):
            out.append(_ASCII.get(char, "?"))
    return "".join(out)


def _print(text: str) -> None:
    print(printable(text, getattr(sys.stdout, "encoding", None)))


def _say(step: str, text: str = "") -> None:
    _print(f"\n== {step}" + (f"\n{text}" if text else ""))


def _event(registry_id: str, claims: dict[str, str] | None = None, correlation: str = "",
           at: dt.datetime | None = None) -> Any:
    """The Event Grid event ARM raises for a registry write (`at`: its eventTime, default now)."""
    import azure.functions as func

    data = {"authorization": {"scope": registry_id, "action": "Microsoft.ContainerRegistry/registries/write"},
            "claims": claims or {UPN: "mallory@contoso.com", "ipaddr": "203.0.113.9"},
            "correlationId": correlation or "6f1c2d3e-0000-4000-8000-000000000001",
            "httpRequest": {"clientIpAddress": "203.0.113.9", "method": "PATCH"},
            "operationName": "Microsoft.ContainerRegistry/registries/write", "resourceProvider":
            "Microsoft.ContainerRegistry", "resourceUri": registry_id, "status": "Succeeded", "subscriptionId": SUB}
    return func.EventGridEvent(id="demo-event-1", data=data, topic=f"/subscriptions/{SUB}", subject=registry_id,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=at or dt.datetime.now(dt.timezone.utc), data_version="2")


def _flip_and_restore(azure: Any, services: Any) -> None:
    """Step 10: exports enabled, three images pulled, exports disabled again, all before anyone looked; the delayed
    check finds the window in change history and its first look finds the pulls in the registry's resource logs."""
    from dlp.responder import timeline

    name = "acrpayments02"
    registry_id = azure.arm.create(SUB, RG, name, export="disabled", public="Disabled")["id"]
    opened = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=8)
    azure.arm.write(registry_id, {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}},
                    caller="mallory@contoso.com", at=opened)
    for seconds, repository, tag in ((20, "payments/api", "1.4"), (35, "payments/api", "1.5"),
                                     (50, "payments/worker", "2.0")):
        azure.logs_query.add_pull(registry_id, opened + dt.timedelta(seconds=seconds), repository, tag,
                                  identity="mallory@contoso.com", caller_ip="198.51.100.7:49152")
    azure.arm.write(registry_id, {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}},
                    caller="mallory@contoso.com", at=opened + dt.timedelta(seconds=93))
    azure.logs_query.add_pull(registry_id, opened + dt.timedelta(minutes=3), "payments/api", "1.6",
                              identity="ci@contoso.com", caller_ip="10.1.2.3")       # after the close: not counted
    cards = len(azure.teams.messages)
    body = {"kind": timeline.CHECK_KIND, "checkId": "demo-check", "registryId": registry_id,
            "eventTime": (opened + dt.timedelta(seconds=93)).isoformat()}
    quiet = logging.getLogger("dlp.timeline")
    level = quiet.level
    quiet.setLevel(logging.ERROR)          # its "window(s) recorded" warning is for operators, not this story
    try:
        found = timeline.run_check(body, services)
    finally:
        quiet.setLevel(level)
    _say("10. Flip and restore, and what left meanwhile",
         "   mallory enabled exports, pulled three images and disabled exports again within 93 s; the delayed check "
         "(7 minutes after the event) reads change history and the registry's resource logs:")
    for evaluation in found:
        print(f"   {evaluation.exposure.sentence}")
        print(f"   Pulls while open: {evaluation.exposure.pulls.sentence}")
    print(f"   Teams cards: {len(azure.teams.messages) - cards}; Log Analytics queries: {len(azure.logs_query.queries)}")


def run(args: argparse.Namespace) -> int:
    from dlp import runtime
    from dlp.settings import load
    from dlp.triggers import handlers

    try:
        from dlp.emulator import LocalAzure
    except ModuleNotFoundError as exc:
        if exc.name not in DEV_ONLY:
            raise
        error("demo", f"the local Azure emulator needs {exc.name}, a development requirement; install it with: "
                      f"{install_hint()}")
        return EXIT_ERROR

    with LocalAzure() as azure, azure.environ():
        azure.set_latency(args.latency_ms / 1000)
        os.environ["DLP_MODE"] = args.mode
        os.environ.update(azure.registry_logs_env())     # the registries' resource logs, for step 10
        _say("1. Local Azure", f"ARM {azure.arm.url}, managed identity {azure.identity.endpoint}, "
                               f"Log Analytics {azure.logs.url}, Teams and ACS email on 127.0.0.1 (HTTPS, throwaway CA)")
        registry = azure.arm.create(SUB, RG, NAME, export="disabled", public="Disabled")
        registry_id = registry["id"]
        _say("2. A locked registry", f"{registry_id}\n   exportPolicy=disabled publicNetworkAccess=Disabled, "
                                    "private endpoint pe1 Approved")

        drifted = json.loads(json.dumps(registry))
        drifted["properties"]["policies"]["exportPolicy"]["status"] = "enabled"
        azure.arm.add(drifted)
        _say("3. Drift", "mallory@contoso.com (203.0.113.9) runs:\n   az resource update -g rg-payments -n acrpayments01 "
                         "--resource-type Microsoft.ContainerRegistry/registries --set "
                         "properties.policies.exportPolicy.status=enabled")

        services = runtime.build(load(os.environ), in_process=True)
        runtime.reset(services)
        azure.arm.log.reset()
        event = _event(registry_id)
        _say("4. Event Grid delivers", f"{event.event_type} id={event.id} subject=.../registries/{NAME}")
        started = time.monotonic()
        (evaluation,) = handlers.on_event(event)
        elapsed = (time.monotonic() - started) * 1000

        _say("5. Detection", "\n".join(f"   {f.status:>14}  {f.rule_id:<28} {f.message}"
                                       for f in evaluation.assessment.findings if f.status in ("fail", "unknown")))
        outcome = evaluation.outcome
        _say("6. Remediation", f"   mode={evaluation.mode} action={outcome.action} {outcome.reason}\n   {outcome.detail}")
        for record in azure.arm.log.filter(service="arm"):
            body = f" {record.body.decode()}" if record.method == "PATCH" else ""
            _print(f"   {record.method:5} {record.path.split('/providers/')[-1]}{body} -> {record.status}")
        props = azure.arm.get(registry_id)["properties"]
        reached = ("verified state" if outcome.action == "remediated"
                   else f"decision ({outcome.action}: nothing written)")
        _say("7. Verification" if outcome.action == "remediated" else "7. State (unchanged)",
             f"   exportPolicy={props['policies']['exportPolicy']['status']} "
             f"publicNetworkAccess={props['publicNetworkAccess']}"
             f"\n   {evaluation.duration_ms:.0f} ms from event to {reached}; "
             f"{elapsed:.0f} ms with recording and alerting (first call: token, clients)")

        rows = azure.logs.rows(azure.rule_id, azure.stream)
        mine = [r for r in rows if r.get("EvaluationId") == evaluation.evaluation_id]
        failed = [r["RuleId"] for r in mine if r.get("Status") == "fail"]
        _say("8. Recorded", f"   Log Analytics: {len(mine)} rows in {azure.stream} (failing: {', '.join(failed) or 'none'})"
                            f"\n   Teams cards: {len(azure.teams.messages)}   emails: {len(azure.email.sent)}")
        for message in azure.teams.messages[:1]:
            card = message["attachments"][0]["content"]
            title = next((b.get("text") for b in card.get("body", []) if b.get("type") == "TextBlock"), "")
            _print(f"   Teams card: {title}")

        if outcome.action == "remediated":      # in audit mode nothing was written, so no own-write event exists
            from dlp.emulator.tokens import SYSTEM_CLIENT_ID, TENANT_ID, object_id_of

            ours = azure.arm.write_correlation(registry_id)   # ARM puts our PATCH's correlation ID in its event
            azure.arm.log.reset()
            own = {"appid": SYSTEM_CLIENT_ID, "http://schemas.microsoft.com/identity/claims/objectidentifier":
                   object_id_of(SYSTEM_CLIENT_ID), "http://schemas.microsoft.com/identity/claims/tenantid": TENANT_ID}
            handlers.on_event(_event(registry_id, own, ours))
            _say("9. The responder's own write raises an event too",
                 f"   its claims name the responder's identity and its correlation ID is the one our PATCH sent: it "
                 f"costs {azure.arm.log.count(service='arm')} ARM requests, no row and no alert")
        _flip_and_restore(azure, services)
        runtime.reset()
        expected = "remediated" if args.mode == "enforce" else "would-remediate"
        return EXIT_OK if outcome.action == expected else EXIT_FAIL
