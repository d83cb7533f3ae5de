"""Email alerts through the real azure-communication-email client, managed identity and all, to
the HTTPS ACS emulator: 202 + Operation-Location then polling, a short polling interval bounded
by the budget, an operation id derived from the alert (a retried send mails once), one digest
mail for a sweep, HTML and plain text with the same content."""

from __future__ import annotations

import html
import itertools
import re
import time

import pytest
from azure.identity import ManagedIdentityCredential

from dlp.azure.budget import Budget
from dlp.domain.model import Context
from dlp.emulator import LocalAzure
from dlp.emulator.local import RECIPIENTS, SENDER
from dlp.outputs.alerting import AlertNotifier
from dlp.outputs.alerts import bodies
from dlp.outputs.alerts.acs import POLL_INTERVAL_S, EmailChannel, operation_id
from dlp.outputs.alerts.alert import Alert, build_alert
from dlp.outputs.alerts.batch import MemoryOutbox
from dlp.outputs.alerts.channel import DeliveryError
from dlp.outputs.alerts.states import observe
from dlp.outputs.alerts.store import MemoryAlertStore
from tests.alerts_support import SUB, evaluation, notifier, registry_id, tables, unique_name


def alert_for(kind: str, name: str = "acrprod", caller: str = "mallory@contoso.com") -> Alert:
    ev = evaluation(registry_id(name, "rg-prod"), kind,
                    context=Context(trigger="event", caller=caller, caller_ip="203.0.113.7", correlation_id="corr-1"))
    return build_alert(ev, None, observe(ev).state, alert_id=f"alert-{name}-{kind}", at="2026-03-01T10:00:02+00:00")


def channel(azure: LocalAzure, **kwargs) -> EmailChannel:
    """The channel as build_channels makes it: the Function App's managed identity (here the emulated one)."""
    return EmailChannel(azure.email.url, ManagedIdentityCredential(), SENDER, [RECIPIENTS], **kwargs)


def visible_text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


# --- bodies ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["non-compliant", "remediated", "pipelines", "breaker", "failed", "error",
                                  "tag-exempt", "compliant", "gone"])
def test_html_and_plain_text_carry_the_same_content_as_the_card(kind):
    alert = alert_for(kind)
    mail = bodies.render([alert])
    assert mail.subject == f"[ACR DLP] {alert.title}"
    shown = visible_text(mail.html)
    for value in (alert.title, "acrprod", "rg-prod", SUB, "mallory@contoso.com", "203.0.113.7", alert.done,
                  alert.todo, alert.portal_url, *(r.message for r in alert.failing), *(r.rule_id for r in alert.failing)):
        assert value in mail.plain, value
        assert value in shown or html.escape(value) in mail.html, value


def test_html_body_escapes_what_callers_control():
    mail = bodies.render([alert_for("non-compliant", caller='<script>alert("x")</script>')])
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert '<script>alert("x")</script>' in mail.plain


def test_a_digest_mail_lists_every_change():
    alerts = [alert_for(kind, name=f"acr{i}") for i, kind in enumerate(["non-compliant", "blocked", "compliant"])]
    mail = bodies.render(alerts, digest_=True)
    assert mail.subject == "[ACR DLP] 3 registries changed state"
    for alert in alerts:
        assert alert.title in mail.plain and html.escape(alert.title) in mail.html


# --- through the ACS emulator ---------------------------------------------------------------------------------


def test_alert_mail_goes_through_acs_with_managed_identity_and_short_polling(azure_env: LocalAzure):
    azure_env.email.polls = 2                                 # Running, Running, Succeeded
    alert = alert_for("remediated")
    started = time.monotonic()
    with Budget.of(10).active():
        channel(azure_env).send([alert])
    elapsed = time.monotonic() - started
    [sent] = azure_env.email.sent
    assert sent["operationId"] == operation_id([alert])
    assert sent["senderAddress"] == SENDER and sent["recipients"] == {"to": [{"address": RECIPIENTS}]}
    assert sent["content"]["subject"] == f"[ACR DLP] {alert.title}"
    assert sent["content"]["plainText"] and sent["content"]["html"].startswith("<!DOCTYPE html>")
    log = azure_env.email.log
    assert log.count(service="email", method="POST") == 1 and log.count(service="email-op") == 3
    polls = [r.time for r in log.filter(service="email-op")]
    assert all(0.8 * POLL_INTERVAL_S <= later - earlier < 5 for earlier, later in itertools.pairwise(polls))
    assert elapsed < 10                                        # not the SDK's 30 s per poll
    assert azure_env.identity.log.last().query["resource"] == "https://communication.azure.com/"


def test_the_operation_id_is_derived_from_the_alerts():
    one, two = alert_for("blocked", name="acr1"), alert_for("blocked", name="acr2")
    assert operation_id([one]) == operation_id([one]) != operation_id([two])
    assert operation_id([one, two]) == operation_id([two, one])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", operation_id([one]))


def test_a_send_that_outlives_the_budget_is_kept_and_retried_with_the_same_operation_id(azure_env: LocalAzure):
    """ACS took the mail but had not finished within the invocation's budget: the retry must not mail twice."""
    azure_env.email.polls = 10_000
    outbox = MemoryOutbox()
    alerting = AlertNotifier(MemoryAlertStore(), [channel(azure_env, polling_interval=0.2)], outbox)
    started = time.monotonic()
    with Budget.of(2.5).active():
        alerting.notify([evaluation(registry_id("acr1"), "breaker")])
    assert time.monotonic() - started < 3.5                   # bounded by the budget, no exception
    [kept] = alerting.kept()
    assert "same operation id" in kept.last_error
    time.sleep(0.5)                                           # a poll in flight at the deadline may finish
    polls = azure_env.email.log.count(method="GET")
    time.sleep(1.0)                                           # five polling intervals: the poller stopped
    assert azure_env.email.log.count(method="GET") == polls
    [operation] = azure_env.email.operations.values()
    operation.polls_needed = 0                                 # the service gets round to it
    with Budget.of(10).active():
        assert alerting.drain() == 1
    posts = azure_env.email.log.filter(service="email", method="POST")
    assert len(posts) == 2 and posts[0].headers["operation-id"] == posts[1].headers["operation-id"] == operation.id
    assert len(azure_env.email.sent) == 1 and alerting.kept() == []


def test_a_failed_operation_is_kept_and_never_raises(azure_env: LocalAzure):
    azure_env.email.outcome = "Failed"
    outbox = MemoryOutbox()
    alerting = AlertNotifier(MemoryAlertStore(), [channel(azure_env, polling_interval=0.1)], outbox)
    with Budget.of(5).active():
        alerting.notify([evaluation(registry_id("acr1"), "error")])
    [kept] = alerting.kept()
    assert "DeliveryFailed" in kept.last_error or "Failed" in kept.last_error


def test_429_on_send_with_a_retry_after_beyond_the_budget_is_kept(azure_env: LocalAzure):
    azure_env.email.faults.add(method="POST", status=429, headers={"Retry-After": "60"})
    with pytest.raises(DeliveryError) as failure, Budget.of(3).active():
        channel(azure_env).send([alert_for("error")])
    assert "429" in str(failure.value) and azure_env.email.sent == []


def test_a_sweep_sends_one_digest_mail_and_one_digest_card(azurite_env: str, azure_env: LocalAzure):
    """Azure-managed domains allow 5 mails a minute: 8 changes found by a sweep make one mail."""
    alerting, _outbox = notifier(tables(azurite_env), teams_url=azure_env.teams.webhook_url(),
                                email=(azure_env.email.url, SENDER, [RECIPIENTS]), credential=ManagedIdentityCredential())
    names = [unique_name() for _ in range(8)]
    sweep = Context(trigger="sweep")
    with Budget.of(20).active():
        alerting.notify([evaluation(registry_id(n), "non-compliant", context=sweep, mode="audit") for n in names],
                        digest=True)
    [mail] = azure_env.email.sent
    assert mail["content"]["subject"] == "[ACR DLP] 8 registries changed state"
    for name in names:
        assert name in mail["content"]["plainText"] and name in mail["content"]["html"]
    assert "unknown (found by the scheduled sweep)" in mail["content"]["plainText"]
    assert len(azure_env.teams.messages) == 1 and len(alerting.kept()) == 0
    with Budget.of(20).active():                                # the next sweep finds the same: silence
        alerting.notify([evaluation(registry_id(n), "non-compliant", context=sweep, mode="audit") for n in names],
                        digest=True)
    assert len(azure_env.email.sent) == 1 and len(azure_env.teams.messages) == 1


def test_several_changes_in_one_event_call_make_one_mail(azure_env: LocalAzure):
    alerting = AlertNotifier(MemoryAlertStore(), [channel(azure_env, polling_interval=0.1)], MemoryOutbox())
    with Budget.of(10).active():
        alerting.notify([evaluation(registry_id(f"acr{i}"), "blocked") for i in range(3)])
    [mail] = azure_env.email.sent
    assert mail["content"]["subject"] == "[ACR DLP] 3 registries changed state"
