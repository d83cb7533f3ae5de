"""A throwaway certificate authority for the HTTPS emulators.

The Azure SDK's bearer-token policy refuses plain http://, so every emulator that
checks tokens speaks TLS. One CA per process (key generation is the slow part);
clients trust it through `REQUESTS_CA_BUNDLE=<ca_path>` (azure-core's requests
transport reads it; `SSL_CERT_FILE` is ignored by requests).
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Certs:
    ca_path: str          # PEM of the CA alone: point REQUESTS_CA_BUNDLE / connection_verify here
    cert_path: str        # server certificate chain (PEM)
    key_path: str         # server private key (PEM)

    def server_context(self) -> ssl.SSLContext:
        """A fresh server-side context (cheap: loads two small PEM files)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only the emulator CA (for raw sockets / urllib in tests)."""
        return ssl.create_default_context(cafile=self.ca_path)


_lock = threading.Lock()
_certs: Certs | None = None


def get_certs() -> Certs:
    """The process-wide CA and server certificate for 127.0.0.1 and localhost, made on first use."""
    global _certs
    with _lock:
        if _certs is None:
            folder = Path(tempfile.mkdtemp(prefix="dlp-emulator-ca-"))
            atexit.register(shutil.rmtree, folder, True)
            ca = trustme.CA(organization_name="DLP emulator CA")
            leaf = ca.issue_cert(*HOSTS)
            ca.cert_pem.write_to_path(str(folder / "ca.pem"))
            leaf.private_key_pem.write_to_path(str(folder / "server.key"))
            chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
            (folder / "server.pem").write_bytes(chain)
            _certs = Certs(str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "server.key"))
        return _certs
