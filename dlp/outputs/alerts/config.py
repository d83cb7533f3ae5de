"""The one alert that says an optional output is misconfigured (issue 11).

A bad DLP_TEAMS_WEBHOOK_URL, DLP_EMAIL_*, DLP_LOGS_* or DLP_RULE_DOCS_URL turns that output
off at start (dlp/settings/outputs.py) while enforcement goes on. Whoever broke it (an operator, or
someone who revoked the app's access to Key Vault) must not thereby silence the responder
unnoticed, so the outputs that still work carry one alert. "One": it is committed in the
alert store under a key of its own, with the problems as signature, so many instances and
restarts send it once; the same problems are announced again only after `REMIND_AFTER`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from dlp.outputs.alerts.alert import Alert
from dlp.outputs.alerts.states import S_MISCONFIGURED
from dlp.settings import Settings, turned_off

KEY = "/dlp/configuration"          # the alert store's key (never a registry ID)
REMIND_AFTER = timedelta(hours=24)
SEND_BUDGET_S = 5.0                  # a start-up announcement may delay the first invocation this much at most


def signature(settings: Settings) -> str:
    return hashlib.sha256(repr(sorted(settings.degraded)).encode()).hexdigest()[:24]


def misconfiguration_alert(settings: Settings, *, at: str) -> Alert:
    """The alert for the outputs `settings.degraded` turned off (never a setting's value: it may be a secret)."""
    names = ", ".join(dict.fromkeys(name for name, _ in settings.degraded))
    problems = "; ".join(f"{name} {why}" for name, why in settings.degraded)
    return Alert(alert_id=str(uuid.uuid4()), registry_id="", registry_name=", ".join(turned_off(settings.degraded)),
                 resource_group="", subscription_id="", previous="configured", state=S_MISCONFIGURED, at=at,
                 mode=settings.mode, action="", reason=names, detail=problems, trigger="start-up")
