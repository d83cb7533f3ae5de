"""dlp.responder.own_writes on its own: who the responder is, learnt only from values nobody else can set.

The end-to-end cases (0 ARM requests for an own write, display names that try to pass as the responder, the
identity used by someone else) run through the handler in tests/test_responder.py.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

from dlp.azure.state import MemoryState, Remediation
from dlp.domain.model import Context
from dlp.emulator.tokens import SYSTEM_CLIENT_ID, TENANT_ID, TokenStore, object_id_of
from dlp.responder.own_writes import OWN_WRITE_WINDOW, Identity, LearningCredential, is_own_write

REG = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/"
       "Microsoft.ContainerRegistry/registries/acr1")
CLIENT = "5a5a5a5a-1b1b-4c4c-8d8d-9e9e9e9e9e9e"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def jwt(claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(b'{}')}.{b64(json.dumps(claims).encode())}.sig"


def event_context(**claims: str) -> Context:
    return Context(trigger="event", event_id="ev", caller_app_id=claims.get("app", ""),
                   caller_object_id=claims.get("oid", ""), caller_tenant_id=claims.get("tid", ""),
                   correlation_id=claims.get("correlation", ""))


def test_a_user_assigned_identity_is_known_from_the_setting_alone():
    identity = Identity(CLIENT.upper())
    assert identity.owns(event_context(app=CLIENT))
    assert not identity.owns(event_context(app="0badc0de-0000-4000-8000-000000000001"))


def test_tokens_teach_app_object_and_tenant_ids_and_garbage_teaches_nothing():
    identity = Identity()
    for token in ("not-a-jwt", "a.b.c", "x.W10.y", ""):      # not JWTs, a payload that is a list: never raises
        identity.learn(token)
    assert not (identity.app_ids or identity.object_ids or identity.tenant_ids)
    identity.learn(jwt({"azp": CLIENT, "oid": object_id_of(CLIENT), "tid": TENANT_ID}))   # a v2 token: azp
    assert identity.owns(event_context(app=CLIENT))
    assert identity.owns(event_context(oid=object_id_of(CLIENT).upper()))
    assert not identity.owns(event_context(oid=object_id_of(CLIENT), tid="0badc0de-0000-4000-8000-00000000beef"))


def test_only_exact_guids_name_the_responder():
    identity = Identity(CLIENT)
    for value in (f"app:{CLIENT}", f"{CLIENT}0", f" {CLIENT} x", CLIENT.replace("-", ""), ""):
        assert not identity.owns(event_context(app=value)), value


def test_the_learning_credential_hands_out_the_inner_tokens_unchanged():
    store = TokenStore()
    from dlp.emulator.tokens import EmulatorCredential

    identity = Identity()
    credential = LearningCredential(EmulatorCredential(store), identity)
    info = credential.get_token_info("https://management.azure.com/.default")
    token = credential.get_token("https://management.azure.com/.default")
    assert store.get(info.token) is not None and store.get(token.token) is not None
    assert SYSTEM_CLIENT_ID in identity.app_ids and object_id_of(SYSTEM_CLIENT_ID) in identity.object_ids


def test_an_own_write_needs_our_breaker_row_within_the_window():
    identity, state = Identity(CLIENT), MemoryState()
    ours = event_context(app=CLIENT, correlation="2")       # the correlation ID our PATCH sent: the intent's id
    assert not is_own_write(ours, REG, identity, state, NOW)                        # we never wrote it
    state.record_remediation(REG, Remediation((NOW - OWN_WRITE_WINDOW - timedelta(seconds=1)).isoformat(), "", "2"))
    assert not is_own_write(ours, REG, identity, state, NOW)                        # too long ago
    state.record_remediation(REG, Remediation((NOW - timedelta(seconds=5)).isoformat(), "", "2"))
    assert is_own_write(ours, REG, identity, state, NOW)
    # our identity, our recent row, but another write's correlation ID (someone borrowing the identity): not ours
    assert not is_own_write(event_context(app=CLIENT, correlation="3"), REG, identity, state, NOW)
    assert not is_own_write(event_context(app=CLIENT), REG, identity, state, NOW)
    assert not is_own_write(event_context(app="0badc0de-0000-4000-8000-000000000001"), REG, identity, state, NOW)
    assert not is_own_write(Context(trigger="http", caller_app_id=CLIENT), REG, identity, state, NOW)
    assert not is_own_write(ours, REG, None, state, NOW)
