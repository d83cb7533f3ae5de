"""The Table-storage outbox (dlp/outputs/outbox.py) against the real Azurite, through the real azure-data-tables client."""

from __future__ import annotations

import base64
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from azure.data.tables import TableServiceClient

from dlp.azure.state import table_service
from dlp.emulator.azurite import ACCOUNT
from dlp.outputs.outbox import MAX_PAYLOAD_BYTES, Outbox, OutboxError, PayloadTooLarge
from dlp.settings import load


def tables_for(connection_string: str) -> TableServiceClient:
    """The composition root's own factory, so the outbox is tested with the production client options."""
    return table_service(load({"AzureWebJobsStorage": connection_string}), None)


@pytest.fixture
def tables(azurite: str) -> TableServiceClient:
    return tables_for(azurite)


@pytest.fixture
def outbox(tables: TableServiceClient) -> Outbox:
    return Outbox(tables, table="outbox" + uuid.uuid4().hex[:10])


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_items_come_back_oldest_first_per_kind(tables: TableServiceClient):
    clock = Clock()
    box = Outbox(tables, table="outbox" + uuid.uuid4().hex[:10], clock=clock)
    first = box.put("findings", "eval-1", [{"EvaluationId": "eval-1", "RuleId": "A"}])
    box.put("alerts", "alert-1", {"channel": "teams", "card": {"type": "AdaptiveCard"}})
    second = box.put("findings", "eval-2", [{"EvaluationId": "eval-2", "RuleId": "B"}], error="HTTP 503 ServiceUnavailable")

    found = box.pending("findings")
    assert [i.key for i in found] == ["eval-1", "eval-2"]
    assert found[0].payload == [{"EvaluationId": "eval-1", "RuleId": "A"}]
    assert found[1].last_error == "HTTP 503 ServiceUnavailable"
    assert found[0].row_key == first.row_key and found[1].row_key == second.row_key
    assert [i.payload for i in box.pending("alerts")] == [{"channel": "teams", "card": {"type": "AdaptiveCard"}}]
    assert box.pending("findings", limit=1)[0].key == "eval-1"
    assert box.count("findings") == 2 and box.count("alerts") == 1 and box.count("nothing-here") == 0


def test_a_second_instance_sees_and_removes_the_same_items(tables: TableServiceClient, azurite: str):
    name = "outbox" + uuid.uuid4().hex[:10]
    one, other = Outbox(tables, table=name), Outbox(tables_for(azurite), table=name)
    one.put("findings", "eval-1", [{"n": 1}])
    (item,) = other.pending("findings")
    other.remove(item)
    assert one.pending("findings") == []
    one.remove(item)                                   # already gone: another instance sent it first, fine


def test_keys_with_characters_tables_refuse_are_kept_readable(outbox: Outbox):
    key = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr1#x?y\\z"
    outbox.put("alerts", key, {"ok": True})
    (item,) = outbox.pending("alerts")
    assert item.key == key
    assert "/" not in item.row_key and "#" not in item.row_key and "?" not in item.row_key


def test_a_payload_larger_than_one_property_is_cut_into_parts_and_joined_again(outbox: Outbox, tables):
    rows = [{"EvaluationId": f"e{i}", "Message": base64.b64encode(os.urandom(600)).decode()} for i in range(400)]
    outbox.put("findings", "big", rows)                # ~330 KB of poorly compressible JSON
    raw = next(iter(tables.get_table_client(outbox.table_name).list_entities()))
    assert raw["Parts"] > 1
    assert all(len(raw[f"P{i}"]) <= 64 * 1024 for i in range(raw["Parts"]))
    (item,) = outbox.pending("findings")
    assert item.payload == rows


def test_a_payload_that_cannot_fit_one_entity_is_refused_before_writing(outbox: Outbox):
    noise = base64.b64encode(os.urandom(MAX_PAYLOAD_BYTES)).decode()
    with pytest.raises(PayloadTooLarge):
        outbox.put("findings", "huge", [noise])
    assert outbox.count("findings") == 0


def test_retry_later_counts_attempts_and_keeps_the_reason(outbox: Outbox):
    item = outbox.put("findings", "eval-1", [{"n": 1}])
    outbox.retry_later(item, "HTTP 503 ServiceUnavailable: try later")
    again = outbox.retry_later(outbox.pending("findings")[0], "HTTP 500 InternalServerError: boom")
    (stored,) = outbox.pending("findings")
    assert stored.attempts == 2 == again.attempts
    assert stored.last_error == "HTTP 500 InternalServerError: boom"
    assert stored.payload == [{"n": 1}]


def test_move_sets_an_item_aside_under_another_kind(outbox: Outbox):
    item = outbox.put("findings", "eval-1", [{"n": 1}])
    outbox.move(item, "findings-rejected", "HTTP 400 InvalidContent: bad row")
    assert outbox.pending("findings") == []
    (moved,) = outbox.pending("findings-rejected")
    assert moved.key == "eval-1" and moved.payload == [{"n": 1}]
    assert moved.last_error == "HTTP 400 InvalidContent: bad row" and moved.attempts == 1


def test_an_entity_that_cannot_be_decoded_is_reported_and_left_in_place(outbox: Outbox, tables, caplog):
    outbox.put("findings", "good", [{"n": 1}])
    table = tables.get_table_client(outbox.table_name)
    table.create_entity({"PartitionKey": "findings", "RowKey": "00000000T000000000000Z|bad|x", "Key": "bad",
                         "Parts": 1, "P0": b"not gzip"})
    assert [i.key for i in outbox.pending("findings")] == ["good"]
    assert "cannot be decoded" in caplog.text
    assert outbox.count("findings") == 2


@pytest.mark.parametrize("broken", ["wrong account key", "nothing listening"])
def test_storage_failures_surface_as_outbox_errors(azurite: str, broken: str):
    if broken == "wrong account key":
        wrong = base64.b64encode(b"not the azurite key" * 3).decode()
        connection = azurite.replace(azurite.split("AccountKey=")[1].split(";", maxsplit=1)[0], wrong)
    else:
        connection = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={base64.b64encode(b'k').decode()};"
                      f"TableEndpoint=http://127.0.0.1:{closed_port()}/{ACCOUNT};")
    box = Outbox(tables_for(connection), table="outbox" + uuid.uuid4().hex[:10])
    with pytest.raises(OutboxError) as caught:
        box.put("findings", "eval-1", [{"n": 1}])
    assert "AccountKey" not in str(caught.value)
    with pytest.raises(OutboxError):
        box.pending("findings")


def test_kinds_are_validated(outbox: Outbox):
    for bad in ("", "has space", "slash/kind", "-leading"):
        with pytest.raises(ValueError):
            outbox.put(bad, "k", {})
