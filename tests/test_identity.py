"""dlp.azure.identity on its own: who the responder is, learnt only from values nobody else can set.

Whether an event or a change is the responder's own is provenance's (tests/test_provenance.py); the end-to-end
cases (0 ARM requests for an own write, display names that try to pass as the responder, the identity used by
someone else) run through the handler in tests/test_responder.py and tests/test_provenance_flow.py.
"""

from __future__ import annotations

import base64
import json

from dlp.azure.identity import Identity, LearningCredential
from dlp.domain.model import Context
from dlp.emulator.tokens import SYSTEM_CLIENT_ID, TENANT_ID, EmulatorCredential, TokenStore, object_id_of

CLIENT = "5a5a5a5a-1b1b-4c4c-8d8d-9e9e9e9e9e9e"


def jwt(claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(b'{}')}.{b64(json.dumps(claims).encode())}.sig"


def event_context(**claims: str) -> Context:
    return Context(trigger="event", event_id="ev", caller_app_id=claims.get("app", ""),
                   caller_object_id=claims.get("oid", ""), caller_tenant_id=claims.get("tid", ""),
                   caller_verified=True)


def test_a_user_assigned_identity_is_known_from_the_setting_alone():
    responder = Identity(CLIENT.upper()).responder()
    assert responder.signed(event_context(app=CLIENT))
    assert not responder.signed(event_context(app="0badc0de-0000-4000-8000-000000000001"))


def test_tokens_teach_app_object_and_tenant_ids_and_garbage_teaches_nothing():
    identity = Identity()
    for token in ("not-a-jwt", "a.b.c", "x.W10.y", ""):      # not JWTs, a payload that is a list: never raises
        identity.learn(token)
    assert not identity.responder().known
    identity.learn(jwt({"azp": CLIENT, "oid": object_id_of(CLIENT), "tid": TENANT_ID}))   # a v2 token: azp
    responder = identity.responder()
    assert responder.signed(event_context(app=CLIENT))
    assert responder.signed(event_context(oid=object_id_of(CLIENT).upper()))
    assert not responder.signed(event_context(oid=object_id_of(CLIENT), tid="0badc0de-0000-4000-8000-00000000beef"))


def test_only_exact_guids_name_the_responder():
    responder = Identity(CLIENT).responder()
    for value in (f"app:{CLIENT}", f"{CLIENT}0", f" {CLIENT} x", CLIENT.replace("-", ""), ""):
        assert not responder.signed(event_context(app=value)), value
        assert not responder.named(value), value
    assert responder.named(CLIENT.upper()) and responder.named(f" {CLIENT} ")


def test_the_learning_credential_hands_out_the_inner_tokens_unchanged():
    store = TokenStore()
    identity = Identity()
    credential = LearningCredential(EmulatorCredential(store), identity)
    info = credential.get_token_info("https://management.azure.com/.default")
    token = credential.get_token("https://management.azure.com/.default")
    assert store.get(info.token) is not None and store.get(token.token) is not None
    responder = identity.responder()
    assert SYSTEM_CLIENT_ID in responder.app_ids and object_id_of(SYSTEM_CLIENT_ID) in responder.object_ids
