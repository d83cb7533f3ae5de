"""The alert that says Event Grid dead-lettered events for the responder (issue 18).

A dead letter means Event Grid could not deliver an event to the responder for hours (30 attempts over
24 h by default) or was refused: the app was stopped, failing to start, or unreachable. The replay timer
(dlp/responder/deadletter.py) brings the events back, and each replayed evaluation alerts on its own state change;
this alert says that the responder was unreachable at all, with Event Grid's reasons. It goes through
`AlertNotifier.announce`, committed in the alert store under its own key with the replayed blob names
as signature, so every batch of dead letters is announced once whatever the number of instances.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

from dlp.outputs.alerts.alert import Alert
from dlp.outputs.alerts.states import S_DEAD_LETTERED

KEY = "/dlp/dead-letters"            # the alert store's key (never a registry ID)
REMIND_AFTER = timedelta(days=1)     # the same blobs again (a run that stopped half-way) only a day later
SEND_BUDGET_S = 10.0
MAX_NAMES = 5


def signature(report: Any) -> str:
    return hashlib.sha256("\n".join(sorted(b.name for b in report.blobs)).encode()).hexdigest()[:24]


def dead_letter_alert(report: Any, *, mode: str, at: str) -> Alert:
    """One alert for a replay run: how many events, Event Grid's reasons, which registries (never more than a few)."""
    names = list(dict.fromkeys(e.registry_name for b in report.blobs for e in b.evaluations))
    shown = ", ".join(names[:MAX_NAMES]) + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")
    set_aside = sum(1 for b in report.blobs if b.settled == "malformed")
    what = f"{report.events} event{'s' if report.events != 1 else ''} replayed"
    if set_aside:
        what += f", {set_aside} unreadable blob{'s' if set_aside != 1 else ''} set aside under malformed/"
    if report.stuck:
        what += (f", {len(report.stuck)} blob{'s' if len(report.stuck) != 1 else ''} that could not be replayed "
                 f"({report.stuck[0].problem[:160]})")
    return Alert(alert_id=str(uuid.uuid4()), registry_id="", registry_name=what, resource_group="",
                 subscription_id="", previous="delivered", state=S_DEAD_LETTERED, at=at, mode=mode, action="",
                 reason=", ".join(report.reasons) or "not given", detail=shown, trigger="dead-letter")


__all__ = ["KEY", "REMIND_AFTER", "SEND_BUDGET_S", "dead_letter_alert", "signature"]
