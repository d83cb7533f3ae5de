"""`LocalAzure`: every emulator started together, with the app settings that point the app at them.

    with LocalAzure() as azure, azure.environ():
        azure.arm.create(SUB, "rg", "acr1", export="enabled")
        ...  # the app, unchanged, now talks to the emulators

How the real SDK clients end up here without code changes:

* `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` make `ManagedIdentityCredential` and the managed
  identity step of `DefaultAzureCredential` use the App Service protocol against the
  identity emulator (plain http, as App Service does); no IMDS probe happens then.
  The variables in `UNSET_ENV` must be absent: with AZURE_TENANT_ID + AZURE_CLIENT_SECRET /
  certificate / username set, `EnvironmentCredential` wins and calls Entra ID; with
  AZURE_FEDERATED_TOKEN_FILE, workload identity; IDENTITY_SERVER_THUMBPRINT turns App Service
  into Service Fabric; AZURE_TOKEN_CREDENTIALS=dev drops managed identity from the chain.
  AZURE_CLIENT_ID is removed too unless `env(client_id=...)` asks for a user-assigned identity
  (then msal sends `client_id=` and the emulator accepts it).
* `REQUESTS_CA_BUNDLE` makes azure-core's requests transport trust the emulator CA
  (`SSL_CERT_FILE` would not). `NO_PROXY` keeps a proxy set in the environment away.
* Tokens survive `reset()`: an app that caches its credential keeps working across tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from dlp.emulator.acs_email import EmailEmulator
from dlp.emulator.arm import ArmEmulator
from dlp.emulator.base import Emulator
from dlp.emulator.certs import get_certs
from dlp.emulator.identity import IdentityEmulator
from dlp.emulator.logs import LogsEmulator
from dlp.emulator.logs_query import LogsQueryEmulator
from dlp.emulator.teams import TeamsEmulator
from dlp.emulator.tokens import EmulatorCredential, TokenStore

UNSET_ENV = (
    "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST", "AZURE_TOKEN_CREDENTIALS", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)
SENDER = "DoNotReply@dlp-emulator.azurecomm.net"
RECIPIENTS = "secops@example.com"
STREAM = "Custom-AcrDlpFindings"


UNGROUPED_ALERTS = {"DLP_ALERT_GROUP_WINDOW_S": "0", "DLP_ALERT_CAP_PER_REGISTRY": "1000",
                    "DLP_ALERT_CAP_PER_CALLER": "10000"}


class LocalAzure:
    """Identity, ARM (+ Resource Graph), Logs Ingestion, the Log Analytics query API (registry logs), Teams Workflows
    and ACS Email on loopback."""

    def __init__(self) -> None:
        self.tokens = TokenStore()
        self.identity = IdentityEmulator(self.tokens)
        self.arm = ArmEmulator(self.tokens)
        self.logs = LogsEmulator(self.tokens)
        self.logs_query = LogsQueryEmulator(self.tokens)     # the registries' resource logs (a workspace)
        self.workspace_id = str(uuid.uuid4())
        self.teams = TeamsEmulator()
        self.email = EmailEmulator(self.tokens)
        self.rule_id = "dcr-" + uuid.uuid4().hex
        self.stream = STREAM
        self.logs.known_rules = {self.rule_id}

    @property
    def emulators(self) -> tuple[Emulator, ...]:
        return (self.identity, self.arm, self.logs, self.logs_query, self.teams, self.email)

    @property
    def ca_path(self) -> str:
        return get_certs().ca_path

    def start(self) -> LocalAzure:
        for emulator in self.emulators:
            emulator.start()
        return self

    def stop(self) -> None:
        for emulator in self.emulators:
            emulator.stop()

    close = stop

    def __enter__(self) -> LocalAzure:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to an empty world: no registries, logs, mails, faults, latency; stopped servers restarted."""
        for emulator in self.emulators:
            emulator.reset()
            emulator.start()
        self.identity.client_ids = None
        self.logs.known_rules = {self.rule_id}

    def set_latency(self, seconds: float) -> None:
        """Same added latency on every service (identity included)."""
        for emulator in self.emulators:
            emulator.latency = seconds

    def errors(self) -> list[str]:
        """Tracebacks of emulator bugs (each was answered 500)."""
        return [e for emulator in self.emulators for e in emulator.errors]

    def credential(self) -> EmulatorCredential:
        """A TokenCredential that mints directly (no HTTP round trip): for benchmarks and unit tests."""
        return EmulatorCredential(self.tokens)

    def registry_logs_env(self) -> dict[str, str]:
        """The settings that turn on the pull look-ups of exposure windows (not in `env()`: tests opt in)."""
        return {"DLP_REGISTRY_LOGS_WORKSPACE": self.workspace_id, "DLP_LOGS_QUERY_ENDPOINT": self.logs_query.endpoint}

    def env(self, client_id: str | None = None) -> dict[str, str]:
        """App settings and SDK variables pointing at the emulators (see UNSET_ENV for what to remove)."""
        env = {
            "DLP_ARM_ENDPOINT": self.arm.url,
            "IDENTITY_ENDPOINT": self.identity.endpoint,
            "IDENTITY_HEADER": self.identity.header_secret,
            "REQUESTS_CA_BUNDLE": self.ca_path,
            "DLP_LOGS_ENDPOINT": self.logs.url,
            "DLP_LOGS_RULE_ID": self.rule_id,
            "DLP_LOGS_STREAM": self.stream,
            "DLP_LOGS_QUERY_ENDPOINT": self.logs_query.endpoint,
            "DLP_TEAMS_WEBHOOK_URL": self.teams.webhook_url(),
            "DLP_EMAIL_ENDPOINT": self.email.url,
            "DLP_EMAIL_SENDER": SENDER,
            "DLP_EMAIL_TO": RECIPIENTS,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            # Every alert at once, no caps: the tests of other features and the demo count one message per state
            # change. The grouping tests (tests/test_alert_grouping.py) and bench_storm set the production values.
            **UNGROUPED_ALERTS,
        }
        if client_id:
            env["AZURE_CLIENT_ID"] = client_id
        return env

    def unset_env(self, client_id: str | None = None) -> tuple[str, ...]:
        return tuple(name for name in UNSET_ENV if not (client_id and name == "AZURE_CLIENT_ID"))

    @contextmanager
    def environ(self, client_id: str | None = None, environ: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
        """Apply `env()` to os.environ (removing UNSET_ENV) for the block, then restore (for demos/benchmarks)."""
        target = os.environ if environ is None else environ
        values = self.env(client_id)
        names = (*values, *self.unset_env(client_id))
        saved = {name: target.get(name) for name in names}
        try:
            for name in self.unset_env(client_id):
                target.pop(name, None)  # type: ignore[attr-defined]
            target.update(values)       # type: ignore[attr-defined]
            yield values
        finally:
            for name, value in saved.items():
                if value is None:
                    target.pop(name, None)  # type: ignore[attr-defined]
                else:
                    target[name] = value    # type: ignore[index]
