"""Fuzzing the event intake, pure and through the real Event Grid handler.

Whatever Event Grid (or anyone able to reach the endpoint) delivers, the outcome is a target, an ignored
event or a malformed event acknowledged: never an exception (Event Grid would retry it for 24 hours) and
never an ARM call unless the event names a registry. Subjects are drawn in three kinds, so the test knows
the answer without asking the code: valid registry IDs (and their children), near misses (one mutation that
makes the ID invalid: a short name, a hyphen, a Kelvin sign, a broken GUID, a misspelt provider, ...) and
arbitrary text.

Through the handler, events are decoded by the Functions library's own converter from JSON text, as the
worker does; a payload that converter refuses never reaches user code, so it is counted, not handled.
"""

from __future__ import annotations

import datetime as dt
import json
import string

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import function_app
from dlp import runtime
from dlp.ids import registry_of
from dlp.inputs import event_files
from dlp.inputs.events import Intake

pytestmark = pytest.mark.slow  # fuzzing: CI runs it; `pytest -m "not slow"` skips it locally

handle_event = function_app.on_registry_event.build().get_user_function()

WRITE = "Microsoft.Resources.ResourceWriteSuccess"
DELETE = "Microsoft.Resources.ResourceDeleteSuccess"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
CHILD_TYPES = ["exportPipelines", "privateEndpointConnections", "replications", "webhooks", "scopeMaps", "tokens"]
ALNUM = string.ascii_letters + string.digits

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c,
                                                                                            max_size=4), max_leaves=20)


def casing(text: str) -> st.SearchStrategy[str]:
    """The same word in random casing: ARM IDs are case-insensitive."""
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flips: "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True)))


@st.composite
def registry_ids(draw) -> tuple[str, str]:
    """(the ID as the event carries it, possibly a child's; the registry's own ID)."""
    sub = str(draw(st.uuids()))
    sub = sub.upper() if draw(st.booleans()) else sub
    group = draw(st.text(alphabet=ALNUM + "-_.()", min_size=1, max_size=90).filter(lambda g: not g.endswith(".")))
    name = draw(st.text(alphabet=ALNUM, min_size=5, max_size=50))
    registry = (f"/{draw(casing('subscriptions'))}/{sub}/{draw(casing('resourceGroups'))}/{group}/"
                f"{draw(casing('providers'))}/{draw(casing('Microsoft.ContainerRegistry'))}/"
                f"{draw(casing('registries'))}/{name}")
    subject = registry
    if draw(st.booleans()):
        child = draw(st.text(alphabet=st.characters(whitelist_categories=("L", "N", "Pd", "Pc", "Po"),
                                                    blacklist_characters="/"), min_size=1, max_size=40))
        subject = f"{registry}/{draw(st.sampled_from(CHILD_TYPES))}/{child}"
    return subject, registry


# One mutation each of /subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.ContainerRegistry/registries/{name}
# that makes it something other than a registry ID (or one of its children).
SUBSCRIPTION, GROUP, PROVIDER = "/subscriptions/{sub}", "/resourceGroups/{group}", "/providers/Microsoft.ContainerRegistry"
REGISTRY = SUBSCRIPTION + GROUP + PROVIDER + "/registries/"
NEAR_MISSES = [
    REGISTRY + "{short}",                                   # names are 5-50 letters and digits
    REGISTRY + "{name}" + "x" * 51,
    REGISTRY + "{name}-dev",
    REGISTRY + "{name}_x",
    REGISTRY + "{name}\u212a",                              # Kelvin sign: folds to k under re.IGNORECASE
    REGISTRY + "{name}\u017f",                              # long s: folds to s
    REGISTRY + "{name}\u0131",                              # dotless i: folds to i
    REGISTRY + "{name}é",
    REGISTRY + "\uff21{name}",                              # fullwidth A
    REGISTRY.replace("{sub}", "{sub_short}") + "{name}",
    REGISTRY.replace("{sub}", "{sub_nodash}") + "{name}",
    REGISTRY.replace("{sub}", "g{sub_tail}") + "{name}",
    REGISTRY.replace("subscriptions", "\u017fubscriptions") + "{name}",
    REGISTRY.replace("ContainerRegistry", "ContainerRegistries") + "{name}",
    REGISTRY.replace("registries/", "registry/") + "{name}",
    REGISTRY.replace("ContainerRegistry", "ContainerInstance") + "{name}",
    REGISTRY.replace("/providers", "") + "{name}",
    REGISTRY.replace(GROUP, "") + "{name}",
    REGISTRY.replace("{group}", "r" * 91) + "{name}",
    REGISTRY.replace("{group}", ".") + "{name}",           # a dot segment: the HTTP layer would fold it away
    REGISTRY.replace("{group}", "..") + "{name}",
    REGISTRY.replace("{group}", "{group}.") + "{name}",     # ARM refuses a group name ending in a period
    REGISTRY + "{name}?api-version=1",
    REGISTRY + "{name}#x",
    REGISTRY + "{name}//x",
    REGISTRY + "{name}/exportPipelines/",
    REGISTRY + "{name}/../../x",
    REGISTRY + "{name}/export-pipelines/x",
    "/" + REGISTRY + "{name}",
    "https://management.azure.com" + REGISTRY + "{name}",
    REGISTRY + "{head}\n{tail}",
    REGISTRY + "{name}" + "/replications/westus" * 60,      # longer than the 1024 characters a subject may have
]


@st.composite
def near_misses(draw) -> str:
    sub = str(draw(st.uuids()))
    group = draw(st.text(alphabet=ALNUM, min_size=1, max_size=20))
    name = draw(st.text(alphabet=ALNUM, min_size=5, max_size=20))
    template = draw(st.sampled_from(NEAR_MISSES))
    return template.format(sub=sub, group=group, name=name, short=name[:4], sub_short=sub[:-1],
                           sub_nodash=sub.replace("-", ""), sub_tail=sub[1:], head=name[:2], tail=name[2:])


# (kind, value): "valid" carries the expected registry ID
subjects = st.one_of(
    registry_ids().map(lambda ids: ("valid", ids)),
    near_misses().map(lambda text: ("invalid", text)),
    st.text(max_size=300).map(lambda text: ("invalid", text)),
    json_values.filter(lambda v: not isinstance(v, str)).map(lambda v: ("absent", v)),
    st.just(("absent", "")),
)
event_types = st.sampled_from([WRITE, DELETE, WRITE.lower(), DELETE.upper(), "Microsoft.Resources.ResourceActionSuccess",
                               "Microsoft.Resources.ResourceWriteFailure", "Microsoft.Storage.BlobCreated", ""]) \
    | st.text(max_size=60) | json_values
operations = st.sampled_from([
    "Microsoft.ContainerRegistry/registries/write", "Microsoft.ContainerRegistry/registries/delete",
    "microsoft.containerregistry/registries/exportpipelines/write", "Microsoft.ContainerRegistry/registries/scheduleRun/action",
    "Microsoft.ContainerRegistry/registries/listCredentials/action", "Microsoft.Storage/storageAccounts/write", "",
]) | st.text(max_size=80) | json_values
claims = st.dictionaries(st.sampled_from([UPN, "name", "appid", "azp", "oid", "ipaddr", "upn"]) | st.text(max_size=20),
                         json_values, max_size=6) | json_values


REGISTRY_OPERATIONS = ["Microsoft.ContainerRegistry/registries/write", "Microsoft.ContainerRegistry/registries/delete",
                       "microsoft.containerregistry/registries/exportpipelines/write"]


@st.composite
def event_data(draw, plausible: bool):
    """The `data` object of a resource event, each field drawn (wrong types included), or any JSON value."""
    if not plausible and draw(st.integers(0, 4)) == 0:
        return draw(json_values), None, None
    data = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3))
    operation = draw(st.sampled_from(REGISTRY_OPERATIONS) if plausible else operations)
    if plausible or draw(st.booleans()):
        data["operationName"] = operation
    resource_kind, resource = draw(subjects)
    if draw(st.booleans()):
        data["resourceUri"] = resource[0] if resource_kind == "valid" else resource
    http_request = json_values | st.fixed_dictionaries({"clientIpAddress": json_values})
    for key, strategy in (("claims", claims), ("correlationId", json_values), ("httpRequest", http_request)):
        if draw(st.booleans()):
            data[key] = draw(strategy)
    return data, (resource_kind, resource) if "resourceUri" in data else None, data.get("operationName")


@st.composite
def raw_events(draw) -> tuple[dict, dict]:
    """A raw Event Grid or CloudEvents JSON object, and what the test knows about it. Half are plausible
    resource events (relevant type and operation, parseable time), so the subject decides; the rest are
    anything at all."""
    plausible = draw(st.booleans())
    schema = draw(st.sampled_from(["eventgrid", "cloudevents"]))
    subject_kind, subject = draw(subjects)
    data, resource, operation = draw(event_data(plausible))
    event_type = draw(st.sampled_from([WRITE, DELETE, WRITE.lower(), DELETE.upper()]) if plausible else event_types)
    event_id = draw(st.text(max_size=200) | json_values)
    times = st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00.1234567+00:00", None])
    when = draw(times if plausible else times | st.text(max_size=30) | json_values)
    subject_value = subject[0] if subject_kind == "valid" else subject
    if schema == "cloudevents":
        body = {"specversion": draw(st.just("1.0") | json_values), "id": event_id, "type": event_type,
                "source": draw(st.text(max_size=50) | json_values), "time": when, "data": data}
    else:
        body = {"id": event_id, "eventType": event_type, "topic": draw(st.text(max_size=50) | json_values),
                "eventTime": when, "data": data, "dataVersion": draw(st.text(max_size=5) | json_values)}
    if subject_kind != "absent" or draw(st.booleans()):
        body["subject"] = subject_value
    if not plausible:
        for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2, unique=True)):
            del body[key]                                  # fields missing altogether
    cloud = "specversion" in body                         # what decides the schema, for the converter too
    known = {"subject": (subject_kind, subject) if "subject" in body else ("absent", None), "resource": resource,
             "operation": operation, "data": body.get("data"), "type": body.get("type" if cloud else "eventType")}
    return body, known


def expected_registry(body: dict, known: dict) -> str | None:
    """The registry an event must be evaluated for, from what the test generated; None: no target allowed."""
    kind, value = known["subject"]
    given = value[0] if kind == "valid" else value
    if isinstance(given, str) and given:                   # a subject is used when it is a non-empty string
        if kind != "valid":
            return None
    else:                                                  # else data.resourceUri
        resource = known["resource"]
        if resource is None or resource[0] != "valid":
            return None
        value = resource[1]
    event_type = known["type"]
    if not isinstance(event_type, str) or event_type.lower() not in (WRITE.lower(), DELETE.lower()):
        return None
    data, operation = known["data"], known["operation"]
    if not isinstance(data, dict):
        return None
    if operation is not None and not isinstance(operation, str):
        return None
    if operation and (not operation.lower().startswith("microsoft.containerregistry/registries")
                      or operation.lower().endswith("/action")):
        return None
    return value[1]


def check_intake(intake: Intake, body: dict, known: dict) -> None:
    assert isinstance(intake, Intake)
    assert sum(map(bool, (intake.targets, intake.ignored, intake.malformed))) == 1, intake
    assert isinstance(intake.event_id, str) and 0 < len(intake.event_id) <= 128
    expected = expected_registry(body, known)
    if expected is None:
        assert intake.targets == (), (body, intake)
        return
    (target,) = intake.targets
    assert target.registry_id.lower() == expected.lower()
    context = target.context
    for value, limit in ((context.caller, 256), (context.caller_ip, 64), (context.correlation_id, 128),
                         (context.operation_name, 256), (context.event_type, 128), (context.event_time, 64)):
        assert isinstance(value, str) and len(value) <= limit


# --- pure intake ---------------------------------------------------------------------------------------

@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=raw_events())
@example(event=({"id": "k", "eventType": WRITE, "subject": "/subscriptions/11111111-2222-3333-4444-555555555555/"
                 "resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr\u212atest", "data": {}},
                {"subject": ("invalid", "kelvin"), "resource": None, "operation": None, "data": {}, "type": WRITE}))
def test_any_event_json_is_a_target_an_ignored_or_a_malformed_event(event):
    body, known = event
    check_intake(event_files.from_json(body), body, known)


@settings(max_examples=200, deadline=None)
@given(body=json_values | st.lists(json_values) | st.dictionaries(st.sampled_from(
    ["id", "eventType", "type", "specversion", "subject", "data", "eventTime", "time"]), json_values))
def test_arbitrary_json_never_raises_and_never_targets_without_a_registry_subject(body):
    intake = event_files.from_json(body)
    assert sum(map(bool, (intake.targets, intake.ignored, intake.malformed))) == 1
    assert intake.targets == () or all(registry_of(t.registry_id) for t in intake.targets)


def deep(levels: int):
    value: object = "bottom"
    for _ in range(levels):
        value = {"claims": value, "x": [value] if levels < 50 else None}
    return value


def test_huge_and_deeply_nested_payloads():
    registry = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/"
                "Microsoft.ContainerRegistry/registries/acrhuge01")
    huge = "\u00e9" * 2_000_000
    cases = [
        {"id": huge, "eventType": WRITE, "subject": registry, "data": {"claims": {UPN: huge, "ipaddr": huge},
                                                                         "correlationId": huge, "blob": [huge] * 5}},
        {"id": "deep", "eventType": WRITE, "subject": registry, "data": deep(100_000)},
        {"id": "deep-claims", "eventType": WRITE, "subject": registry, "data": {"claims": deep(100_000)}},
        {"id": "long-subject", "eventType": WRITE, "subject": registry + "/exportPipelines/" + "p" * 1_000_000,
         "data": {}},
        {"specversion": "1.0", "id": "ce", "type": WRITE, "subject": huge, "data": deep(100_000)},
    ]
    intakes = [event_files.from_json(case) for case in cases]
    assert [bool(i.targets) for i in intakes] == [True, True, True, False, False]
    assert intakes[0].targets[0].context.caller == huge[:256]
    assert intakes[3].malformed and len(intakes[3].malformed) < 400       # message quotes a bounded prefix


# --- through the Functions handler ------------------------------------------------------------------------

def decode(body: dict):
    """What the Python worker hands the function: the library's converter over the JSON text."""
    return EventGridEventInConverter.decode(meta.Datum(json.dumps(body), "json"), trigger_metadata={})


@pytest.fixture
def app(azurite_env):
    runtime.reset()
    yield azurite_env
    runtime.reset()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(event=raw_events())
def test_the_handler_acknowledges_any_event_and_reads_arm_only_for_a_registry(app, local_azure, event):
    body, known = event
    try:
        delivered = decode(body)
    except Exception:          # the worker's converter refused it: the function is never called
        return
    local_azure.arm.log.reset()
    handle_event(delivered)                                  # must not raise
    expected = expected_registry(body, known)
    arm = local_azure.arm.log.filter()
    if expected is None:
        assert arm == [], (body, [r.path for r in arm])
    else:
        assert [(r.method, r.path.lower()) for r in arm] == [("GET", expected.lower())]


@pytest.mark.parametrize("event", [
    func.EventGridEvent(id=None, data=None, topic=None, subject=None, event_type=None, event_time=None,
                        data_version=None),
    func.EventGridEvent(id=["x"], data={"claims": deep(100_000)}, topic={}, subject=7, event_type=WRITE,
                        event_time=None, data_version=1),
    func.CloudEvent(id={"a": 1}, source=None, type=[WRITE], specversion=2, time=None, subject=b"bytes",
                    datacontenttype=None, dataschema=None, data=[1, 2]),
    func.CloudEvent(id="ce", source="s", type=WRITE, specversion="1.0", time=dt.datetime(2026, 1, 1), subject=None,
                    datacontenttype=None, dataschema=None, data={"resourceUri": {"not": "a string"}}),
    object(),
    None,
], ids=["all none", "wrong types", "cloud event wrong types", "resourceUri object", "not an event", "None"])
def test_the_handler_acknowledges_objects_of_any_shape(app, local_azure, event):
    assert handle_event(event) is None
    assert local_azure.arm.log.filter() == []
