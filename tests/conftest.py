"""Shared pytest fixtures. Keep them grouped by what they provide; add new groups below.

Emulated Azure (dlp/emulator):
    azure_session  session   LocalAzure started once per test run (all servers on loopback)
    local_azure    function  the same LocalAzure, reset before each test (no registries, logs,
                             mails, faults, latency); fails the test if an emulator bug answered 500
    azure_env      function  local_azure plus os.environ pointed at it (monkeypatch): DLP_* settings,
                             IDENTITY_ENDPOINT/HEADER, REQUESTS_CA_BUNDLE; UNSET_ENV removed

Real Azurite (npm) for Table / Queue / Blob storage:
    azurite        session   connection string of an in-memory Azurite on free ports; FAILS (never
                             skips) when Azurite cannot start: install it with
                             `npm install --prefix .ci/node azurite@3`
    azurite_env    function  azure_env plus AzureWebJobsStorage=<azurite connection string>, and no sweep
                             memory (the `inventory` rows: the emulators start each test with no registries)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dlp.emulator import LocalAzure
from dlp.emulator.azurite import Azurite, AzuriteError

# --- emulated Azure -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azure_session() -> Iterator[LocalAzure]:
    with LocalAzure() as azure:
        yield azure


@pytest.fixture
def local_azure(azure_session: LocalAzure) -> Iterator[LocalAzure]:
    azure_session.reset()
    yield azure_session
    errors = azure_session.errors()
    if errors:
        pytest.fail("emulator bug(s) answered 500:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def azure_env(local_azure: LocalAzure, monkeypatch: pytest.MonkeyPatch) -> LocalAzure:
    for name in local_azure.unset_env():
        monkeypatch.delenv(name, raising=False)
    for name, value in local_azure.env().items():
        monkeypatch.setenv(name, value)
    return local_azure


# --- real Azurite ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    server = Azurite()
    problem = ""
    try:
        server.start()
    except AzuriteError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(f"Azurite could not be started (storage tests must not be skipped): {problem}", pytrace=False)
    try:
        yield server.connection_string
    finally:
        server.stop()


@pytest.fixture
def azurite_env(azure_env: LocalAzure, azurite: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    forget_sweeps(azurite)
    return azurite


def forget_sweeps(azurite: str) -> None:
    """What earlier tests' sweeps listed (dlp/azure/inventory.py): registries the reset emulators no longer have."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables import TableServiceClient

    from dlp.azure.inventory import PARTITION
    from dlp.settings import STATE_TABLE

    table = TableServiceClient.from_connection_string(azurite).get_table_client(STATE_TABLE)
    try:
        for row in list(table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION},
                                             select=["PartitionKey", "RowKey"])):
            table.delete_entity(PARTITION, row["RowKey"])
    except ResourceNotFoundError:
        pass
