"""Alerts as an Adaptive Card 1.4 inside the Teams Workflows message envelope. Pure.

Version 1.4 because Workflows posts fail with 1.6 and Teams shows at most 1.5; only
`Action.OpenUrl`, because the flow bot cannot receive submits. Teams drops cards above
about 28 KB and Workflows gets slow well before that, so a message is kept under
`MAX_MESSAGE_BYTES` (20 KB) by showing fewer rules / registries and shorter messages,
always saying how many were left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dlp.outputs.alerts import summary
from dlp.outputs.alerts.alert import Alert, rule_doc_url

CARD_VERSION = "1.4"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 20_000
RULE_ACTIONS = 2            # Action.OpenUrl buttons for rule pages (Teams shows about six buttons in all)

_COLOURS = {"good": "Good", "warning": "Warning", "attention": "Attention", "info": "Accent"}
# (rules or registries shown, characters per message): tried in order until the message fits
_LIMITS = ((50, 400), (20, 300), (10, 200), (5, 160), (3, 120), (1, 80))


def encode(message: dict[str, Any]) -> bytes:
    """The exact bytes posted (and measured against the size limit)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def md(text: str) -> str:
    """Escape the Markdown that TextBlock and FactSet render, so a caller name or message stays literal."""
    out = str(text)
    for char in ("\\", "*", "_", "[", "]", "`", "<", ">", "#"):
        out = out.replace(char, "\\" + char)
    return out


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _heading(text: str) -> dict[str, Any]:
    return _text(text, weight="Bolder", spacing="Medium")


def envelope(card: dict[str, Any]) -> dict[str, Any]:
    """The Workflows "When a Teams webhook request is received" message shape."""
    return {"type": "message",
            "attachments": [{"contentType": CONTENT_TYPE, "contentUrl": None, "content": card}]}


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    card: dict[str, Any] = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": CARD_VERSION,
                            "msteams": {"width": "Full"}, "body": body}
    if actions:
        card["actions"] = actions
    return card


def _open_url(title: str, url: str) -> dict[str, Any]:
    return {"type": "Action.OpenUrl", "title": title, "url": url}


def _rule_button(rule_id: str) -> str:
    """Short enough for a Teams button: "ExportPolicy rule" (the full ID is in the rule list)."""
    return rule_id.removeprefix("DLP.ACR.") + " rule"


def _facts(alert: Alert) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": t, "value": md(_cut(v, 200))} for t, v in alert.facts]}


def _single(alert: Alert, docs_base: str, shown: int, chars: int) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        _text(md(alert.title), size="Medium", weight="Bolder", color=_COLOURS.get(alert.severity, "Default")),
        _text(f"ACR DLP responder · alert {alert.alert_id[:8]}", isSubtle=True, spacing="None", size="Small"),
        _facts(alert),
    ]
    if alert.failing:
        body.append(_heading(alert.failing_heading))
        rows = []
        for rule in alert.failing[:shown]:
            url = rule_doc_url(rule.rule_id, docs_base)
            name = f"[{md(rule.rule_id)}]({url})" if url else f"**{md(rule.rule_id)}**"
            rows.append(_text(f"{name} ({md(rule.severity)}): {md(_cut(rule.message, chars))}", spacing="Small"))
        if len(alert.failing) > shown:
            rows.append(_text(f"… and {len(alert.failing) - shown} more", isSubtle=True, spacing="Small"))
        body.append({"type": "Container", "items": rows})
    body += [_heading("What the responder did"), _text(md(_cut(alert.done, chars * 2)))]
    body += [_heading("What you need to do"), _text(md(_cut(alert.todo, chars * 2)))]
    actions = [_open_url("Open in portal", alert.portal_url)]
    for rule in alert.failing[:RULE_ACTIONS]:
        url = rule_doc_url(rule.rule_id, docs_base)
        if url:
            actions.append(_open_url(_rule_button(rule.rule_id), url))
    return envelope(_card(body, actions))


def _digest(alerts: Sequence[Alert], docs_base: str, shown: int, chars: int, note: str = "",
            folded: Sequence[str] = ()) -> dict[str, Any]:
    listed, summed = summary.split(alerts, folded)
    body: list[dict[str, Any]] = [
        _text(f"ACR DLP: {summary.title(alerts)}", size="Medium", weight="Bolder",
              color="Attention" if any(a.severity == "attention" for a in alerts) else "Default"),
        _text(md(_cut(note, chars * 2)) if note else
              "One digest for the whole sweep, so a sweep that finds many changes sends one message.",
              isSubtle=True, spacing="None", size="Small"),
    ]
    for alert in listed[:shown]:
        rules = ", ".join(r.rule_id for r in alert.failing[:3]) + (" …" if len(alert.failing) > 3 else "")
        items = [
            _text(f"**[{md(alert.registry_name)}]({alert.portal_url})**: {md(alert.headline)} "
                  f"({md(alert.previous)} → {md(alert.label)})", color=_COLOURS.get(alert.severity, "Default")),
            _text(md(f"{alert.resource_group} · {alert.subscription_id} · by {alert.who}"
                     + (f" from {alert.caller_ip}" if alert.caller_ip else "")), isSubtle=True, spacing="None",
                  size="Small"),
        ]
        if rules:
            items.append(_text(f"Failing: {md(rules)}", spacing="None", size="Small"))
        if alert.exposure:
            items.append(_text(md(_cut(alert.exposure, chars)), spacing="None", size="Small"))
        if alert.pulls:
            items.append(_text(md(_cut("Pulls while open: " + alert.pulls, chars)), spacing="None", size="Small"))
        items.append(_text(md(_cut(alert.done, chars)), spacing="None", size="Small"))
        items.append(_text(md(_cut(alert.todo, chars)), spacing="None", size="Small"))
        body.append({"type": "Container", "separator": True, "spacing": "Medium", "items": items})
    if len(listed) > shown:
        body.append(_text(f"… and {len(listed) - shown} more: see the AcrDlpFindings table in Log Analytics "
                          "(the email lists every registry).", isSubtle=True))
    lines = summary.folded_lines(summed)
    if lines:
        rows = [_text(md(_cut(line, chars)), spacing="Small", size="Small") for line in lines[:shown]]
        if len(lines) > shown:
            rows.append(_text(f"… and {len(lines) - shown} more", isSubtle=True, spacing="Small", size="Small"))
        body += [_heading("Beyond the alert caps"), {"type": "Container", "items": rows}]
    rule_ids = list(dict.fromkeys(r.rule_id for a in alerts for r in a.failing))
    actions = [_open_url(_rule_button(rule_id), url) for rule_id in rule_ids[:RULE_ACTIONS]
               if (url := rule_doc_url(rule_id, docs_base))]
    return envelope(_card(body, actions))


def message(alerts: Sequence[Alert], *, digest: bool = False, docs_base: str = "", note: str = "",
            folded: Sequence[str] = ()) -> dict[str, Any]:
    """The Workflows message for one alert, or a digest card listing several; always under the size limit."""
    if not alerts:
        raise ValueError("no alerts to render")
    use_digest = digest or len(alerts) > 1
    for shown, chars in _LIMITS:
        candidate = (_digest(alerts, docs_base, shown, chars, note, folded) if use_digest
                     else _single(alerts[0], docs_base, shown, chars))
        if len(encode(candidate)) <= MAX_MESSAGE_BYTES:
            return candidate
    raise ValueError("the card does not fit the size limit even at its shortest")  # pragma: no cover - defensive
