"""The example alert shown in docs/operations.md: `python -m dlp.outputs.alerts.example > docs/alert-card.json`.

A test checks that docs/alert-card.json is exactly what the builder makes for this alert, so
the picture in docs/operations.md cannot drift from the code. Paste the file into
https://adaptivecards.io/designer (host app "Microsoft Teams") to preview it.
"""

from __future__ import annotations

import json
import sys

from dlp.outputs.alerts import bodies, card
from dlp.outputs.alerts.alert import Alert, FailingRule

REGISTRY_ID = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-payments-prod/providers/"
               "Microsoft.ContainerRegistry/registries/acrpaymentsprod")


def example_alert() -> Alert:
    """A drift the responder could not revert by itself: an export pipeline exists."""
    return Alert(
        alert_id="4c1e2f0a-9b7d-4e55-8a31-6d2f0c9e7b12", registry_id=REGISTRY_ID, registry_name="acrpaymentsprod",
        resource_group="rg-payments-prod", subscription_id="00000000-0000-0000-0000-000000000001",
        previous="compliant", state="blocked", at="2026-03-02T09:14:07+00:00", mode="enforce", action="blocked",
        reason="export-pipelines",
        detail="delete export pipeline(s) nightly-to-blob (the responder never deletes them), then re-check",
        changes=(("publicNetworkAccess", "Enabled", "Disabled"), ("policies.exportPolicy.status", "enabled", "disabled")),
        failing=(
            FailingRule("DLP.ACR.ExportPolicy", "high",
                        "exportPolicy.status is enabled; must be disabled; publicNetworkAccess is Enabled; must be Disabled"),
            FailingRule("DLP.ACR.PublicNetworkAccess", "high", "publicNetworkAccess is Enabled; must be Disabled"),
            FailingRule("DLP.ACR.ExportPipelines", "high", "export pipeline(s) nightly-to-blob exist; none may exist"),
        ),
        caller="jane.doe@contoso.com", caller_ip="203.0.113.24", correlation_id="8d3f6a1e-2c4b-4f7d-9e0a-5b1c7d9e3f20",
        event_time="2026-03-02T09:14:03Z", trigger="event", evaluation_id="b7e4c2d1-0f3a-4a6b-8c9d-2e1f0a3b4c5d",
    )


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "card"
    if which == "card":
        print(json.dumps(card.message([example_alert()]), indent=2, ensure_ascii=False))
    elif which in ("html", "text"):
        mail = bodies.render([example_alert()])
        print(mail.html if which == "html" else mail.plain)
    else:
        raise SystemExit("usage: python -m dlp.outputs.alerts.example [card|html|text]")


if __name__ == "__main__":
    main()
