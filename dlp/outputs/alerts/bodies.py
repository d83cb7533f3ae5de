"""Email subject, HTML and plain-text bodies with the same content as the card. Pure.

Both bodies are built from one list of sections so they cannot drift apart; every value is
HTML-escaped in the HTML body (a caller name or message is data, never markup).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from dlp.outputs.alerts import summary
from dlp.outputs.alerts.alert import Alert, rule_doc_url

MAX_DETAILED = 25             # changes shown in full in a digest mail; every registry is named in one line after them
# ACS takes 10 MB per send request (service limits, docs/operations.md): the HTML and plain-text bodies together stay
# well under it, whatever the digest holds
MAX_MAIL_BYTES = 4 * 1024 * 1024
_BANNER = {"good": "#107c10", "warning": "#c19c00", "attention": "#c50f1f", "info": "#0f6cbd"}


@dataclass(frozen=True)
class Mail:
    subject: str
    plain: str
    html: str


@dataclass(frozen=True)
class _Link:
    text: str
    url: str


# A section is a heading plus lines; a line is text, a (label, value) fact, or a link list.
_Line = str | tuple[str, str] | tuple[_Link, str]


def _sections(alert: Alert, docs_base: str) -> list[tuple[str, list[_Line]]]:
    facts: list[_Line] = list(alert.facts)
    sections: list[tuple[str, list[_Line]]] = [("", facts)]
    if alert.failing:
        rules: list[_Line] = [(_Link(r.rule_id, rule_doc_url(r.rule_id, docs_base)), f"({r.severity}): {r.message}")
                              for r in alert.failing]
        sections.append((alert.failing_heading, rules))
    sections.append(("What the responder did", [alert.done]))
    sections.append(("What you need to do", [alert.todo]))
    sections.append(("Links", [(_Link("Open in Azure portal", alert.portal_url), "")]))
    return sections


def _plain_line(line: _Line) -> str:
    if isinstance(line, str):
        return line
    first, second = line
    if isinstance(first, _Link):
        return f"- {first.text} {second}".rstrip() + (f"\n  {first.url}" if first.url else "")
    return f"{first}: {second}"


def _html_line(line: _Line) -> str:
    if isinstance(line, str):
        return f"<p>{html.escape(line)}</p>"
    first, second = line
    if isinstance(first, _Link):
        name = (f'<a href="{html.escape(first.url, quote=True)}">{html.escape(first.text)}</a>' if first.url
                else html.escape(first.text))
        return f"<li>{name} {html.escape(second)}</li>"
    return (f'<tr><th align="left" style="padding-right:12px">{html.escape(first)}</th>'
            f"<td>{html.escape(second)}</td></tr>")


def _html_section(heading: str, lines: list[_Line]) -> str:
    parts = [f"<h3>{html.escape(heading)}</h3>"] if heading else []
    facts = [line for line in lines if isinstance(line, tuple) and not isinstance(line[0], _Link)]
    links = [line for line in lines if isinstance(line, tuple) and isinstance(line[0], _Link)]
    texts = [line for line in lines if isinstance(line, str)]
    if facts:
        parts.append("<table>" + "".join(_html_line(f) for f in facts) + "</table>")
    if links:
        parts.append("<ul>" + "".join(_html_line(link) for link in links) + "</ul>")
    parts += [_html_line(t) for t in texts]
    return "\n".join(parts)


def _banner(alert_title: str, severity: str) -> str:
    colour = _BANNER.get(severity, "#c50f1f")
    return (f'<h2 style="color:{colour};font-family:Segoe UI,Arial,sans-serif">{html.escape(alert_title)}</h2>')


def _wrap(inner: str) -> str:
    return ('<!DOCTYPE html><html><body style="font-family:Segoe UI,Arial,sans-serif;font-size:14px">'
            f"{inner}<hr><p style=\"color:#666;font-size:12px\">Sent by the ACR DLP drift responder.</p>"
            "</body></html>")


def single(alert: Alert, docs_base: str = "") -> Mail:
    sections = _sections(alert, docs_base)
    plain = [alert.title, "=" * min(len(alert.title), 78), ""]
    for heading, lines in sections:
        if heading:
            plain += [heading, "-" * len(heading)]
        plain += [_plain_line(line) for line in lines] + [""]
    body = _banner(alert.title, alert.severity) + "".join(_html_section(h, lines) for h, lines in sections)
    return Mail(f"[ACR DLP] {alert.title}", "\n".join(plain).rstrip() + "\n\nSent by the ACR DLP drift responder.\n",
                _wrap(body))


def digest(alerts: Sequence[Alert], docs_base: str = "", note: str = "", folded: Sequence[str] = ()) -> Mail:
    """One mail for many changes (Azure-managed sender domains allow 5 mails a minute and 10 an hour). The first
    MAX_DETAILED changes are shown in full; then every registry of the mail is named in one line each, and the
    changes beyond the alert caps are summed up, so the mail always names everything it is about."""
    listed, summed = summary.split(alerts, folded)
    title = summary.title(alerts)
    for detailed in (MAX_DETAILED, 10, 3, 0):
        mail = _digest_mail(title, alerts, listed, summed, docs_base, note, detailed)
        if len(mail.html.encode("utf-8")) + len(mail.plain.encode("utf-8")) <= MAX_MAIL_BYTES:
            return mail
    return mail


def _digest_mail(title: str, alerts: Sequence[Alert], listed: Sequence[Alert], summed: Sequence[Alert],
                 docs_base: str, note: str, detailed: int) -> Mail:
    plain = [title, "=" * len(title), ""]
    parts = [_banner(title, "attention" if any(a.severity == "attention" for a in alerts) else "good")]
    if note:
        plain += [note, ""]
        parts.append(f"<p>{html.escape(note)}</p>")
    for alert in listed[:detailed]:
        plain += [alert.title, "-" * min(len(alert.title), 78)]
        parts.append(f"<h3>{html.escape(alert.title)}</h3>")
        for heading, lines in _sections(alert, docs_base):
            if heading:
                plain.append(f"{heading}:")
            plain += [_plain_line(line) for line in lines]
            parts.append(_html_section(heading, lines).replace("<h3>", "<h4>").replace("</h3>", "</h4>"))
        plain.append("")
        parts.append("<hr>")
    if len(listed) > detailed:
        heading = (f"Every registry in this mail ({len(listed)}; the first {detailed} in full above)" if detailed
                   else f"Every registry in this mail ({len(listed)})")
        briefs = _capped([summary.brief(alert) for alert in listed])
        plain += [heading, "-" * min(len(heading), 78), *(f"- {line}" for line in briefs), ""]
        parts.append(f"<h3>{html.escape(heading)}</h3><ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in briefs) + "</ul>")
    lines = summary.folded_lines(summed)
    if lines:
        heading = "Beyond the alert caps (summed up; each change is in the AcrDlpFindings table)"
        plain += [heading, "-" * min(len(heading), 78), *(f"- {line}" for line in _capped(lines)), ""]
        parts.append(f"<h3>{html.escape(heading)}</h3><ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in _capped(lines)) + "</ul>")
    return Mail(f"[ACR DLP] {title}", "\n".join(plain).rstrip() + "\n\nSent by the ACR DLP drift responder.\n",
                _wrap("".join(parts)))


def _capped(lines: list[str]) -> list[str]:
    """Every line, unless they alone would pass the mail's size limit (tens of thousands of registries)."""
    total, kept = 0, []
    for index, line in enumerate(lines):
        total += 2 * len(line.encode("utf-8")) + 20
        if total > MAX_MAIL_BYTES:
            return [*kept, f"... and {len(lines) - index} more: see the AcrDlpFindings table in Log Analytics."]
        kept.append(line)
    return kept


def render(alerts: Sequence[Alert], *, digest_: bool = False, docs_base: str = "", note: str = "",
           folded: Sequence[str] = ()) -> Mail:
    if not alerts:
        raise ValueError("no alerts to render")
    if digest_ or len(alerts) > 1:
        return digest(alerts, docs_base, note, folded)
    return single(alerts[0], docs_base)
