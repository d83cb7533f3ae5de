"""The example alert of the docs, made by a real pipeline run on the local emulators, never by hand.

    python -m dlp.cli.alert_example card > docs/alert-card.json     # the Teams message (Adaptive Card)
    python -m dlp.cli.alert_example html                            # the email's HTML body
    python -m dlp.cli.alert_example text                            # the email's plain-text body
    docs/render-alert-card.sh                                       # docs/alert-card.png from docs/alert-card.json

The scenario is the demo's (`python -m dlp demo`) with an export pipeline: acrpayments01 is locked (exports
disabled, public network access off, a private endpoint) and has an export pipeline; mallory@contoso.com enables
exports and public network access; Event Grid delivers the event to the real handler in enforce mode. What the
responder does then is whatever the code does today (the pipeline guard holds the export policy; public network
access is closed all the same). The Teams card and the email are what the emulators received.

Only the values a run cannot repeat are pinned, after the run, in the Alert the notifier built: its ID and the
evaluation ID (random UUIDs). The clock and the event's time are fixed for the run, so times and the exposure's
length are the same every run. tests/test_alert_example.py checks that the card the Teams emulator received is the
builder's card of that Alert, and that docs/alert-card.json is the pinned one, so the docs cannot drift.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

SUB = "11111111-2222-3333-4444-555555555555"
RG = "rg-payments"
NAME = "acrpayments01"
PIPELINE = "nightly-to-partner"
EVENT_AT = datetime(2026, 3, 2, 9, 14, 3, tzinfo=timezone.utc)      # when mallory's write raised the event
RUN_AT = EVENT_AT + timedelta(seconds=2, milliseconds=380)          # the responder's clock during the run
ALERT_ID = "4c1e2f0a-9b7d-4e55-8a31-6d2f0c9e7b12"
EVALUATION_ID = "b7e4c2d1-0f3a-4a6b-8c9d-2e1f0a3b4c5d"


@dataclass(frozen=True)
class Example:
    """One run: the Alert the notifier built (with the run's random IDs), the same pinned, and what was sent."""

    alert: Any                  # dlp.outputs.alerts.alert.Alert, as the run built it
    pinned: Any                 # the same with ALERT_ID and EVALUATION_ID
    teams: list[dict[str, Any]]  # messages the Teams emulator received
    mail: list[dict[str, Any]]   # messages the ACS email emulator accepted
    action: str                 # what the responder did (Outcome.action)
    patches: list[str]          # the PATCH bodies ARM received


def run_scenario() -> Example:
    """The demo's scenario with an export pipeline, through the real Event Grid handler, in enforce mode."""
    from dlp import runtime
    from dlp.azure import credential
    from dlp.cli.demo import _event
    from dlp.emulator import LocalAzure
    from dlp.outputs.alerting import AlertNotifier, build_channels
    from dlp.outputs.alerts.alert import build_alert
    from dlp.outputs.alerts.batch import MemoryOutbox
    from dlp.outputs.alerts.states import observe
    from dlp.outputs.alerts.store import MemoryAlertStore
    from dlp.settings import load
    from dlp.triggers import handlers

    saved = dict(os.environ)
    try:
        with LocalAzure() as azure, azure.environ():
            os.environ["DLP_MODE"] = "enforce"
            credential.reset()
            registry = azure.arm.create(SUB, RG, NAME, export="disabled", public="Disabled")
            drifted = json.loads(json.dumps(registry))
            drifted["properties"]["policies"]["exportPolicy"]["status"] = "enabled"
            drifted["properties"]["publicNetworkAccess"] = "Enabled"
            azure.arm.add(drifted)
            azure.arm.set_pipelines(registry["id"], [PIPELINE])
            settings = load(os.environ)
            services = runtime.build(settings, in_process=True)
            store = MemoryAlertStore()

            def clock() -> datetime:
                return RUN_AT

            services.clock = clock
            services.notifier = AlertNotifier(store, build_channels(settings, credential.get_credential()),
                                              MemoryOutbox(), clock=clock)
            runtime.reset(services)
            azure.arm.log.reset()
            try:
                (evaluation,) = handlers.on_event(_event(registry["id"], at=EVENT_AT))
            finally:
                runtime.reset()
            stored = store.get(registry["id"])
            seen = observe(evaluation)
            if stored is None or seen is None:
                raise RuntimeError(f"the run raised no alert (action {evaluation.outcome.action})")
            alert = build_alert(evaluation, None, seen.state, alert_id=stored.alert_id, at=stored.since)
            patches = [r.body.decode() for r in azure.arm.log.filter(service="arm", method="PATCH")]
            return Example(alert, replace(alert, alert_id=ALERT_ID, evaluation_id=EVALUATION_ID),
                           list(azure.teams.messages), list(azure.email.sent), evaluation.outcome.action, patches)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        credential.reset()


def render(example: Example, which: str) -> str:
    from dlp.outputs.alerts import bodies, card

    if which == "card":
        return json.dumps(card.message([example.pinned]), indent=2, ensure_ascii=False)
    mail = bodies.render([example.pinned])
    if which == "html":
        return mail.html
    if which == "text":
        return mail.plain
    raise ValueError(which)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    which = args[0] if args else "card"
    if which not in ("card", "html", "text"):
        print("usage: python -m dlp.cli.alert_example [card|html|text]", file=sys.stderr)
        return 2
    sys.stdout.write(render(run_scenario(), which) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
