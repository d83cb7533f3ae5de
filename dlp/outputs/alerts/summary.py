"""What a digest says in one line: its title, each registry in brief, and the changes folded over a cap. Pure.

The card and the mail both use these, so they name the same registries the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from dlp.outputs.alerts.alert import Alert

MAX_STATES = 6          # state labels shown per folded line ("non-compliant → compliant → ...")
MAX_DONE = 160          # characters of "what the responder did" per registry line


def title(alerts: Sequence[Alert]) -> str:
    """"3 registries changed state", or "9 changes on 2 registries" when some registry changed more than once."""
    registries = len({(a.registry_id, a.registry_name) for a in alerts})
    if registries == len(alerts):
        return f"{registries} registr{'y' if registries == 1 else 'ies'} changed state"
    return f"{len(alerts)} changes on {registries} registr{'y' if registries == 1 else 'ies'}"


def split(alerts: Sequence[Alert], folded: Sequence[str]) -> tuple[list[Alert], list[Alert]]:
    """(listed in full, folded) in their order."""
    ids = set(folded)
    return [a for a in alerts if a.alert_id not in ids], [a for a in alerts if a.alert_id in ids]


def brief(alert: Alert) -> str:
    """One registry in one line: name, where, the state change, who, when, and what the responder did."""
    where = " · ".join(part for part in (alert.resource_group, alert.subscription_id) if part)
    when = _clock(alert.event_time or alert.at)
    done = alert.done if len(alert.done) <= MAX_DONE else alert.done[:MAX_DONE - 1].rstrip() + "…"
    return (f"{alert.registry_name}{f' ({where})' if where else ''}: {alert.previous} → {alert.label}, "
            f"by {alert.who}{f' at {when} UTC' if when else ''}. {done}")


def folded_lines(alerts: Sequence[Alert]) -> list[str]:
    """One line per registry and caller: "7 more changes on acrX by mallory, 14:03–14:52 UTC: a → b → c"."""
    runs: dict[tuple[str, str], list[Alert]] = {}
    for alert in alerts:
        runs.setdefault((alert.registry_name, alert.who), []).append(alert)
    lines = []
    for (name, who), group in runs.items():
        times = sorted(_clock(a.event_time or a.at) for a in group if (a.event_time or a.at))
        span = f", {times[0]}–{times[-1]} UTC" if times else ""
        labels: list[str] = []
        for alert in group:
            if not labels or labels[-1] != alert.label:
                labels.append(alert.label)
        shown = " → ".join(labels[:MAX_STATES]) + (" → …" if len(labels) > MAX_STATES else "")
        count = len(group)
        lines.append(f"{count} more change{'s' if count != 1 else ''} on {name} by {who}{span}: {shown}")
    return lines


def _clock(moment: str) -> str:
    try:
        return datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(timezone.utc).strftime("%H:%M")
    except ValueError:
        return ""
