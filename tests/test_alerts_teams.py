"""Teams alerts: the Adaptive Card 1.4 inside the Workflows envelope, delivery to the HTTPS
Workflows emulator through the real azure-core pipeline, 429 + Retry-After within the budget,
the outbox when delivery fails (and a later retry), and the webhook URL never in a log line."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

import function_app
from dlp import runtime
from dlp.azure.budget import Budget
from dlp.domain.model import Context
from dlp.emulator import LocalAzure
from dlp.emulator.teams import card_problems
from dlp.outputs.alerting import AlertNotifier
from dlp.outputs.alerts import card
from dlp.outputs.alerts.alert import Alert, FailingRule, build_alert
from dlp.outputs.alerts.batch import MemoryOutbox
from dlp.outputs.alerts.channel import DeliveryError
from dlp.outputs.alerts.redact import scrub, secret_parts
from dlp.outputs.alerts.states import STATES, observe
from dlp.outputs.alerts.store import MemoryAlertStore
from dlp.outputs.alerts.teams import TeamsChannel
from tests.alerts_support import SUB, evaluation, notifier, registry_id, tables, unique_name

# --- the card -------------------------------------------------------------------------------------------------

ELEMENTS = {"TextBlock", "FactSet", "Container"}          # what the builder may emit (all in Adaptive Cards 1.0+)
ENUMS = {
    "size": {"Small", "Default", "Medium", "Large", "ExtraLarge"},
    "weight": {"Lighter", "Default", "Bolder"},
    "color": {"Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"},
    "spacing": {"None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"},
}
PROPERTIES = {
    "TextBlock": {"type", "text", "wrap", "size", "weight", "color", "spacing", "isSubtle", "separator"},
    "FactSet": {"type", "facts", "spacing", "separator"},
    "Container": {"type", "items", "spacing", "separator", "style"},
}


def adaptive_card_problems(message: dict) -> list[str]:
    """Structural check of an Adaptive Card 1.4 in a Workflows message (stricter than Teams itself)."""
    problems = list(card_problems(message))
    attachments = message.get("attachments", [])
    if len(attachments) != 1 or set(attachments[0]) != {"contentType", "contentUrl", "content"}:
        problems.append("exactly one attachment with contentType, contentUrl, content")
    content = attachments[0]["content"]
    if content.get("version") != "1.4" or content.get("type") != "AdaptiveCard":
        problems.append("not an AdaptiveCard 1.4")
    if content.get("$schema") != "http://adaptivecards.io/schemas/adaptive-card.json":
        problems.append("$schema")

    def walk(element: dict, where: str) -> None:
        kind = element.get("type")
        if kind not in ELEMENTS:
            problems.append(f"{where}: element type {kind!r}")
            return
        for key in set(element) - PROPERTIES[kind]:
            problems.append(f"{where}: {kind} has no property {key!r}")
        for key, allowed in ENUMS.items():
            if key in element and element[key] not in allowed:
                problems.append(f"{where}: {key}={element[key]!r}")
        if kind == "TextBlock" and not (isinstance(element.get("text"), str) and element["text"]):
            problems.append(f"{where}: TextBlock without text")
        if kind == "FactSet":
            for fact in element.get("facts", []):
                if set(fact) != {"title", "value"} or not all(isinstance(v, str) for v in fact.values()):
                    problems.append(f"{where}: fact {fact!r}")
        for i, item in enumerate(element.get("items", [])):
            walk(item, f"{where}.items[{i}]")

    for i, element in enumerate(content.get("body", [])):
        walk(element, f"body[{i}]")
    for action in content.get("actions", []):
        if set(action) != {"type", "title", "url"} or action["type"] != "Action.OpenUrl":
            problems.append(f"action {action!r}")
        elif not action["url"].startswith("https://"):
            problems.append(f"action url {action['url']!r}")
    if len(card.encode(message)) >= 20_000:
        problems.append("20 KB or more")
    return problems


def texts(message: dict) -> str:
    """Every string the card shows, joined (for 'the card says X' assertions)."""
    out: list[str] = []

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key not in ("type", "$schema"):
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            out.append(value)

    walk(message["attachments"][0]["content"])
    return "\n".join(out)


def alert_for(kind: str, name: str = "acrprod", **context) -> Alert:
    ev = evaluation(registry_id(name, "rg-prod"), kind, context=Context(**{
        "trigger": "event", "caller": "mallory@contoso.com", "caller_ip": "203.0.113.7",
        "correlation_id": "corr-1", **context}))
    return build_alert(ev, None, observe(ev).state, alert_id="0d5e2f7a-1111-4222-8333-944445555666",
                       at="2026-03-01T10:00:02+00:00")


@pytest.mark.parametrize("kind", ["non-compliant", "remediated", "blocked", "pipelines", "breaker", "failed", "error",
                                  "tag-exempt", "exempt", "compliant", "gone"])
def test_card_is_adaptive_card_1_4_with_everything_a_person_needs(kind):
    alert = alert_for(kind)
    message = card.message([alert])
    assert adaptive_card_problems(message) == []
    shown = texts(message)
    rid = registry_id("acrprod", "rg-prod")
    assert alert.title == message["attachments"][0]["content"]["body"][0]["text"]
    assert "→" in alert.title and "acrprod" in alert.title
    for value in ("acrprod", "rg-prod", SUB, "mallory@contoso.com", "203.0.113.7", "What the responder did",
                  "What you need to do"):
        assert value in shown, value
    for rule in alert.failing:
        assert rule.rule_id in shown and rule.message.split(";")[0] in shown
    actions = message["attachments"][0]["content"]["actions"]
    assert actions[0] == {"type": "Action.OpenUrl", "title": "Open in portal",
                          "url": "https://portal.azure.com/#@/resource" + rid}
    if alert.failing:
        assert actions[1]["title"] == alert.failing[0].rule_id.removeprefix("DLP.ACR.") + " rule"
    if kind in ("blocked", "pipelines", "breaker"):
        assert alert.detail.split(":")[0].lower() in shown.lower()  # the guard's sentence: what a human must do


def test_the_failing_rules_and_what_was_done_are_specific():
    remediated = texts(card.message([alert_for("remediated")]))
    assert "DLP.ACR.ExportPolicy" in remediated and "exportPolicy.status is enabled" in remediated
    assert "Reverted publicNetworkAccess Enabled → Disabled, policies.exportPolicy.status enabled → disabled." in remediated
    pipelines = texts(card.message([alert_for("pipelines")]))
    assert "Delete export pipeline(s) nightly, then re-check" in pipelines
    assert "blocked by the export-pipelines guard" in pipelines
    breaker = texts(card.message([alert_for("breaker")]))
    assert "Revert-war breaker tripped" in breaker and "Callers who changed it back: mallory@contoso.com" in breaker
    audit = texts(card.message([alert_for("non-compliant")]))
    assert "Revert the change by mallory@contoso.com" in audit and "Nothing written (audit mode)" in audit
    error = texts(card.message([alert_for("error")]))
    assert "Grant the responder's identity the role it lacks" in error


def test_a_partial_write_says_what_was_closed_and_what_was_not():
    """Issue 11 item 3: export pipelines block only the export write; the alert names both parts."""
    from dlp.domain.model import Change

    closed = (Change("publicNetworkAccess", "Enabled", "Disabled"),)
    ev = evaluation(registry_id("acrprod", "rg-prod"), "pipelines", applied=closed,
                    detail="reverted publicNetworkAccess Enabled -> Disabled; not written: delete export pipeline(s) "
                           "nightly, then re-check")
    alert = build_alert(ev, None, observe(ev).state, alert_id="0d5e2f7a-1111-4222-8333-944445555667",
                        at="2026-03-01T10:00:02+00:00")
    assert Alert.from_json(json.loads(json.dumps(alert.to_json()))) == alert        # survives the outbox
    shown = texts(card.message([alert]))
    assert "Reverted publicNetworkAccess Enabled → Disabled." in shown
    assert "Not written (blocked by the export-pipelines guard): policies.exportPolicy.status enabled → disabled." in shown
    assert "Nothing written" not in shown and "delete export pipeline(s) nightly" in shown.lower()


def test_rule_links_follow_dlp_rule_docs_url():
    message = card.message([alert_for("non-compliant")], docs_base="https://github.com/org/repo/blob/main/docs/rules/")
    urls = [a["url"] for a in message["attachments"][0]["content"]["actions"]]
    assert "https://github.com/org/repo/blob/main/docs/rules/DLP.ACR.ExportPolicy.md" in urls
    assert "](https://github.com/org/repo/blob/main/docs/rules/DLP.ACR.PublicNetworkAccess.md)" in texts(message)


def test_markdown_in_caller_names_and_messages_stays_literal():
    alert = alert_for("non-compliant", caller="[click](https://evil.example) *x*")
    shown = texts(card.message([alert]))
    assert "[click](https://evil.example)" not in shown and "\\[click\\]" in shown


def test_huge_lists_are_cut_to_stay_under_20_kb_and_say_how_many_more():
    base = alert_for("non-compliant")
    many_rules = tuple(FailingRule(f"DLP.ACR.Rule{i:03}", "high", "x" * 2000) for i in range(300))
    big = Alert(**{**base.__dict__, "failing": many_rules, "caller": "c" * 5000})
    message = card.message([big])
    assert adaptive_card_problems(message) == [] and len(card.encode(message)) < 20_000
    assert "… and " in texts(message) and " more" in texts(message)
    digest = card.message([Alert(**{**base.__dict__, "registry_name": f"acr{i:04}", "failing": many_rules[:5]})
                           for i in range(800)], digest=True)
    assert adaptive_card_problems(digest) == [] and len(card.encode(digest)) < 20_000
    assert "800 registries changed state" in texts(digest) and "more: see the AcrDlpFindings table" in texts(digest)


def test_digest_card_lists_each_registry_with_its_change():
    alerts = [alert_for(kind, name=f"acr{kind.replace('-', '')}") for kind in ("non-compliant", "blocked", "compliant")]
    message = card.message(alerts, digest=True)
    assert adaptive_card_problems(message) == []
    shown = texts(message)
    assert "3 registries changed state" in shown
    for alert in alerts:
        assert alert.registry_name in shown and alert.portal_url in shown


def test_every_state_has_a_headline_and_colour():
    from dlp.outputs.alerts.alert import HEADLINES, SEVERITY
    from dlp.outputs.alerts.states import NOTICES

    assert set(HEADLINES) == set(STATES) | set(NOTICES) == set(SEVERITY)     # + the alerts about the responder itself


# --- delivery to the Workflows emulator -------------------------------------------------------------------------


def test_alert_is_posted_to_the_workflows_webhook(azurite_env: str, local_azure: LocalAzure):
    alerting, _outbox = notifier(tables(azurite_env), teams_url=local_azure.teams.webhook_url())
    rid = registry_id(unique_name())
    with Budget.of(10).active():
        alerting.notify([evaluation(rid, "non-compliant")])
    [message] = local_azure.teams.messages
    assert adaptive_card_problems(message) == []
    post = local_azure.teams.log.last(method="POST")
    assert post.status == 202 and post.headers["content-type"].startswith("application/json")
    assert json.loads(post.body) == message and len(alerting.kept()) == 0


@pytest.mark.parametrize("status", [200, 201, 204])
def test_any_2xx_is_success(azure_env: LocalAzure, status):
    azure_env.teams.faults.add(method="POST", status=status)
    TeamsChannel(azure_env.teams.webhook_url()).send([alert_for("non-compliant")])


def test_429_retry_after_is_honoured_within_the_budget(azure_env: LocalAzure):
    azure_env.teams.faults.add(method="POST", status=429, headers={"Retry-After": "1"})
    channel = TeamsChannel(azure_env.teams.webhook_url())
    started = time.monotonic()
    with Budget.of(10).active():
        channel.send([alert_for("non-compliant")])
    waited = time.monotonic() - started
    posts = azure_env.teams.log.filter(method="POST")
    assert [p.status for p in posts] == [429, 202] and len(azure_env.teams.messages) == 1
    assert 1.0 <= posts[1].time - posts[0].time and waited < 5


def test_429_retry_after_beyond_the_budget_goes_to_the_outbox_at_once(azurite_env: str, local_azure: LocalAzure):
    local_azure.teams.faults.add(method="POST", status=429, headers={"Retry-After": "120"})
    alerting, _outbox = notifier(tables(azurite_env), teams_url=local_azure.teams.webhook_url())
    rid = registry_id(unique_name())
    started = time.monotonic()
    with Budget.of(5).active():
        alerting.notify([evaluation(rid, "breaker")])
    assert time.monotonic() - started < 3                   # did not sit out a 120 s Retry-After
    [kept] = alerting.kept()
    assert "429" in kept.last_error and kept.payload["alerts"][0]["state"] == "breaker-tripped"
    assert local_azure.teams.messages == []
    with Budget.of(10).active():
        assert alerting.drain() == 1                        # the outbox timer, once Teams takes it again
    assert len(local_azure.teams.messages) == 1 and len(alerting.kept()) == 0


def test_a_failing_webhook_never_raises_and_the_alert_goes_out_at_the_next_notify(azurite_env: str,
                                                                                 local_azure: LocalAzure):
    local_azure.teams.faults.add(method="POST", status=500, times=None)
    alerting, _outbox = notifier(tables(azurite_env), teams_url=local_azure.teams.webhook_url())
    first, second = registry_id(unique_name()), registry_id(unique_name())
    with Budget.of(5).active():
        alerting.notify([evaluation(first, "blocked")])                 # 500, retried, then kept
    assert len(alerting.kept()) == 1 and local_azure.teams.messages == []
    local_azure.teams.faults.clear()
    with Budget.of(10).active():
        alerting.notify([evaluation(second, "non-compliant")])          # sends its own, then the kept one
    names = [m["attachments"][0]["content"]["body"][0]["text"] for m in local_azure.teams.messages]
    assert len(names) == 2 and first.rsplit("/", 1)[1] in names[1] and second.rsplit("/", 1)[1] in names[0]
    assert len(alerting.kept()) == 0


def test_an_unreachable_webhook_is_retried_by_drain_until_it_is_back(azure_env: LocalAzure):
    outbox = MemoryOutbox()
    alerting = AlertNotifier(MemoryAlertStore(), [TeamsChannel(azure_env.teams.webhook_url())], outbox)
    azure_env.teams.stop()
    with Budget.of(5).active():
        alerting.notify([evaluation(registry_id("acr1"), "failed")])
        assert alerting.drain() == 0
    [kept] = alerting.kept()
    assert kept.attempts == 2 and "ServiceRequestError" in kept.last_error     # the first send, then the drain
    azure_env.teams.start()
    assert alerting.drain() == 1 and len(azure_env.teams.messages) == 1 and alerting.kept() == []


# --- through the Functions handler: the remediation is not held up by a failing webhook -----------------------

handle_event = function_app.on_registry_event.build().get_user_function()


def _event(rid: str) -> func.EventGridEvent:
    data = {"claims": {"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "mallory@contoso.com"},
            "correlationId": "corr-7", "httpRequest": {"clientIpAddress": "203.0.113.9", "method": "PATCH"},
            "operationName": "Microsoft.ContainerRegistry/registries/write", "resourceUri": rid, "status": "Succeeded",
            "subscriptionId": SUB}
    return func.EventGridEvent(id="ev-" + unique_name(), data=data, topic=f"/subscriptions/{SUB}", subject=rid,
                               event_type="Microsoft.Resources.ResourceWriteSuccess",
                               event_time=dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.timezone.utc), data_version="2")


@pytest.fixture
def app_instance(azurite_env, monkeypatch):
    monkeypatch.setenv("DLP_MODE", "enforce")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "6")
    for name in ("DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO", "DLP_LOGS_ENDPOINT", "DLP_LOGS_RULE_ID"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    yield
    runtime.reset()


def _cards_about(azure: LocalAzure, name: str) -> list[str]:
    titles = [m["attachments"][0]["content"]["body"][0]["text"] for m in azure.teams.messages]
    return [t for t in titles if f": {name} (" in t]


def test_a_down_webhook_does_not_stop_the_remediation_and_the_alert_is_delivered_later(app_instance, azurite_env,
                                                                                      local_azure: LocalAzure):
    name = unique_name()
    rid = local_azure.arm.create(SUB, "rg-alerts", name)["id"]
    local_azure.teams.stop()
    handle_event(_event(rid))                                      # no exception
    props = local_azure.arm.get(rid)["properties"]
    assert (props["policies"]["exportPolicy"]["status"], props["publicNetworkAccess"]) == ("disabled", "Disabled")
    kept = runtime.services().notifier.kept([rid])         # kept with the state change, in its partition
    assert len(kept) == 1 and kept[0].payload["alerts"][0]["state"] == "remediated"
    local_azure.teams.start()
    runtime.services().notifier.drain()
    assert _cards_about(local_azure, name) == [f"Drift remediated: {name} (compliant → drift remediated)"]
    handle_event(_event(rid))                                      # the own write's event: compliant, quiet
    runtime.services().notifier.drain()
    assert len(_cards_about(local_azure, name)) == 1


# --- secrets --------------------------------------------------------------------------------------------------


def test_no_log_line_or_outbox_error_contains_the_webhook_url(azurite_env: str, local_azure: LocalAzure, caplog):
    url = local_azure.teams.webhook_url()
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    caplog.set_level(logging.DEBUG)                                 # everything, urllib3 and azure-core included
    alerting, _outbox = notifier(tables(azurite_env), teams_url=url)
    with Budget.of(6).active():
        alerting.notify([evaluation(registry_id(unique_name()), "non-compliant")])        # 202
        local_azure.teams.faults.add(method="POST", status=500, times=None)
        alerting.notify([evaluation(registry_id(unique_name()), "blocked")])              # 500s
        local_azure.teams.faults.clear()
        local_azure.teams.faults.add(method="POST", status=429, headers={"Retry-After": "300"})
        alerting.notify([evaluation(registry_id(unique_name()), "error")])                # 429 beyond budget
        local_azure.teams.faults.add(method="POST", status=401, body={"error": {"code": "Bad", "message": url}})
        alerting.notify([evaluation(registry_id(unique_name()), "failed")])               # 401 echoing the URL
    local_azure.teams.stop()
    with Budget.of(4).active():
        alerting.notify([evaluation(registry_id(unique_name()), "breaker")])              # connection refused
        alerting.drain()
    local_azure.teams.start()
    assert any(r.name.startswith("urllib3") and "POST" in r.getMessage() for r in caplog.records), \
        "urllib3's request lines must be captured for this test to mean anything"
    logged = [r.getMessage() + (caplog.handler.format(r) if r.exc_info else "") for r in caplog.records]
    errors = [item.last_error for item in alerting.kept()]
    assert len(errors) >= 3
    split = urlsplit(url)
    for text in logged + errors:
        for secret in (url, sig, split.query, f"{split.path}?{split.query}"):
            assert secret not in text, text


def test_scrub_hides_every_form_of_the_secret():
    url = "https://prod-01.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5"
    text = f"HTTPSConnectionPool: Max retries exceeded with url: {urlsplit(url).path}?{urlsplit(url).query} and {url}"
    clean = scrub(text, secret_parts(url))
    assert "Zm9vYmFy" not in clean and url not in clean
    assert scrub("?a=1&sig=abc%2Fdef&b=2") == "?a=1&sig=***&b=2"


def test_the_channel_hides_the_url_in_its_repr_and_errors(azure_env: LocalAzure):
    url = azure_env.teams.webhook_url()
    channel = TeamsChannel(url)
    assert url not in repr(channel)
    azure_env.teams.stop()
    with pytest.raises(DeliveryError) as failure, Budget.of(2).active():
        channel.send([alert_for("non-compliant")])
    azure_env.teams.start()
    assert url not in str(failure.value) and parse_qs(urlsplit(url).query)["sig"][0] not in str(failure.value)
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_an_alert_survives_the_outbox_round_trip_unchanged():
    for kind in ("remediated", "breaker", "error", "tag-exempt"):
        alert = alert_for(kind)
        assert Alert.from_json(json.loads(json.dumps(alert.to_json()))) == alert


def test_a_sweep_digest_too_large_for_one_outbox_entity_is_kept_in_parts(azurite_env: str, local_azure: LocalAzure):
    """The outbox holds at most 512 KiB compressed per item: a huge undelivered digest is split, not lost."""
    base = alert_for("non-compliant")
    alerts = [Alert(**{**base.__dict__, "alert_id": f"a{i:05}", "registry_name": f"acr{i:05}",
                       "failing": (FailingRule("DLP.ACR.ExportPolicy", "high", os.urandom(300).hex()),)})
              for i in range(2500)]
    local_azure.teams.faults.add(method="POST", status=503, times=None)
    alerting, _outbox = notifier(tables(azurite_env), teams_url=local_azure.teams.webhook_url())
    with Budget.of(10).active():
        alerting.deliver(alerts, digest=True)
    kept = alerting.kept()
    assert len(kept) >= 2 and sum(len(i.payload["alerts"]) for i in kept) == 2500
    local_azure.teams.faults.clear()
    with Budget.of(20).active():
        assert alerting.drain() == len(kept)
    assert len(local_azure.teams.messages) == len(kept) and len(alerting.kept()) == 0
