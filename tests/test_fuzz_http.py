"""Fuzzing the re-check's body, IDs, query and headers (hypothesis): no input gives a 500 or a traceback.

Three layers: the pure intake (thousands of inputs), the real Functions handler against the HTTPS
emulator (valid-looking IDs reach ARM / Resource Graph), and health over arbitrary settings.
"""

from __future__ import annotations

import json
import re

import azure.functions as func
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import function_app
from dlp import runtime
from dlp.settings import SETTINGS
from dlp.triggers.http_api import MAX_BODY_BYTES, ApiError, health_report, parse_body, parse_remediate

pytestmark = pytest.mark.slow  # fuzzing: CI runs it; `pytest -m "not slow"` skips it locally

SUB = "11111111-2222-3333-4444-555555555555"
PROVIDER = "/providers/Microsoft.ContainerRegistry/registries/"
ALLOWED = {200, 400, 403, 404, 502}
ALERT_SETTINGS = ("DLP_TEAMS_WEBHOOK_URL", "DLP_EMAIL_ENDPOINT", "DLP_EMAIL_SENDER", "DLP_EMAIL_TO")

# --- strategies -------------------------------------------------------------------------------------

guids = st.one_of(st.just(SUB), st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()))
group_names = st.from_regex(r"[-\w\.\(\)]{0,89}[-\w\(\)]", fullmatch=True)     # ARM: no period at the end
registry_names = st.from_regex(r"[a-zA-Z0-9]{5,50}", fullmatch=True)
registry_ids = st.builds(lambda s, g, n: f"/subscriptions/{s}/resourceGroups/{g}{PROVIDER}{n}", guids, group_names,
                         registry_names)
scopes = st.one_of(guids.map(lambda s: f"/subscriptions/{s}"),
                   st.builds(lambda s, g: f"/subscriptions/{s}/resourceGroups/{g}", guids, group_names))
nasty_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ["", " ", "\n", "\x00", "/", "//", "..", "%2F", "\u202e", "\ud7ff", "' or 1=1", "`rm -rf`", "${jndi:x}", "a" * 600])


@st.composite
def mutated(draw, base):
    """A valid ID with one edit: insert, replace or delete a character, change the case, or add text around it."""
    value = draw(base)
    edit = draw(st.sampled_from(["insert", "replace", "delete", "case", "prefix", "suffix", "none"]))
    if edit == "none" or not value:
        return value
    index = draw(st.integers(0, len(value) - 1))
    text = draw(nasty_text)
    if edit == "insert":
        return value[:index] + text + value[index:]
    if edit == "replace":
        return value[:index] + text + value[index + 1:]
    if edit == "delete":
        return value[:index] + value[index + 1:]
    if edit == "case":
        return value.swapcase()
    return text + value if edit == "prefix" else value + text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | nasty_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=12)
id_values = st.one_of(mutated(registry_ids), mutated(scopes), registry_ids, scopes, json_values)
keys = st.sampled_from(["registryId", "scope", "registryID", "RegistryId", "scope ", "id", ""]) | nasty_text
documents = st.one_of(
    st.dictionaries(keys, id_values, max_size=3),
    st.builds(lambda v: {"registryId": v}, id_values),
    st.builds(lambda v: {"scope": v}, id_values),
    json_values)
bodies = st.one_of(
    documents.map(lambda d: json.dumps(d).encode()),
    documents.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=600),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(MAX_BODY_BYTES - 20, MAX_BODY_BYTES + 20).map(lambda n: b'{"registryId": "' + b"a" * n + b'"}'))


# --- the pure intake ----------------------------------------------------------------------------------

REFERENCE_REGISTRY = re.compile(
    r"/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"/resourceGroups/[-\w\.\(\)]{0,89}[-\w\(\)]/providers/Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50}",
    re.IGNORECASE)
REFERENCE_SCOPE = re.compile(
    r"/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(/resourceGroups/[-\w\.\(\)]{0,89}[-\w\(\)])?", re.IGNORECASE)


@settings(max_examples=3000, deadline=None)
@given(bodies)
@example(b'{"registryId": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg'
         b'/providers/Microsoft.ContainerRegistry/registries/acrprod01\\n"}')
@example(b'{"scope": "/subscriptions/11111111-2222-3333-4444-555555555555\\n"}')
@example(b"\xef\xbb\xbf{}")
def test_the_intake_accepts_exactly_the_strict_ids_and_answers_400_otherwise(body):
    try:
        kind, value = parse_body(body)
    except ApiError as error:
        assert error.status == 400 and error.code and error.message
        assert "Traceback" not in error.message and len(error.message) < 600
        return
    reference = REFERENCE_REGISTRY if kind == "registryId" else REFERENCE_SCOPE
    assert reference.fullmatch(value), value
    assert len(body) <= MAX_BODY_BYTES


@settings(max_examples=500, deadline=None)
@given(registry_ids)
def test_every_well_formed_registry_id_is_accepted_as_is(value):
    assert parse_body(json.dumps({"registryId": value}).encode()) == ("registryId", value)


@settings(max_examples=500, deadline=None)
@given(scopes)
def test_every_well_formed_scope_is_accepted_as_is(value):
    assert parse_body(json.dumps({"scope": value}).encode()) == ("scope", value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(nasty_text, st.sampled_from(["true", "TRUE", " true ", "false", "", "1", "yes"])))
def test_remediate_is_true_false_or_400(value):
    try:
        assert parse_remediate({"remediate": value}) == (value.strip().lower() == "true")
    except ApiError as error:
        assert error.status == 400 and error.code == "InvalidParameter"


# --- the real handler --------------------------------------------------------------------------------

@pytest.fixture
def app(azure_env, monkeypatch):
    for name in ALERT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DLP_SCOPES", f"/subscriptions/{SUB}")
    monkeypatch.setenv("DLP_TIME_BUDGET_S", "5")
    azure_env.arm.create(SUB, "rg-app", "acrprod01", export="enabled", public="Enabled")
    runtime.reset()
    yield azure_env
    runtime.reset()


def call(body: bytes, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    request = func.HttpRequest(method="POST", url="https://app.azurewebsites.net/api/recheck", params=params,
                               headers=headers, body=body)
    response = function_app.recheck.build().get_user_function()(request)
    return response.status_code, response.get_body().decode("utf-8")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=bodies, remediate=st.one_of(st.none(), nasty_text, st.just("true")), caller=nasty_text)
def test_no_input_gives_a_500_or_a_traceback(app, body, remediate, caller):
    params = {} if remediate is None else {"remediate": remediate}
    status, text = call(body, params, {"X-MS-CLIENT-PRINCIPAL-NAME": caller})
    assert status in ALLOWED, text
    answer = json.loads(text)
    assert ("evaluations" in answer) if status == 200 else (set(answer["error"]) == {"code", "message"})
    assert "Traceback" not in text and 'File "' not in text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(value=st.one_of(registry_ids, scopes))
def test_well_formed_ids_reach_azure_and_get_an_answer(app, value):
    kind = "registryId" if PROVIDER.lower() in value.lower() else "scope"
    status, text = call(json.dumps({kind: value}).encode(), {}, {})
    inside = value.lower().startswith(f"/subscriptions/{SUB}")
    expected = {403} if not inside else ({200, 404} if kind == "registryId" else {200})
    assert status in expected, text
    assert "Traceback" not in text


# --- health over arbitrary settings --------------------------------------------------------------------

setting_names = st.sampled_from([s.name for s in SETTINGS])


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(setting_names, nasty_text, max_size=6))
def test_health_reports_any_settings_without_raising(environ):
    status, body = health_report(environ)
    assert status in (200, 503)
    json.dumps(body)
    if status == 503:
        assert body["configurationError"]["problems"]
        assert all(p["setting"] in {s.name for s in SETTINGS} for p in body["configurationError"]["problems"])
